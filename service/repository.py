"""The model repository on disk: ``<root>/<name>/<version>/metadata.json`` (docs/artifact.md).

The root may also be a single model, as KServe's storage initializer lays one out in
``/mnt/models``: a directory of versions (``<root>/<version>/``) or one version's own
directory (``<root>/metadata.json``); see :class:`Layout`.

This module only finds and validates artifacts; opening onnxruntime sessions is the
runtime's job. A version that fails validation is reported with its reason and never
stops the others from loading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

SUPPORTED_SCHEMA_VERSIONS = {1}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_INPUT_KEYS = ("name", "shape", "channels", "size", "mean", "std", "scale")
# The name a single model gets when neither the setting, its metadata nor its directory
# offers a valid one (a mount point such as "/" has no name).
FALLBACK_MODEL_NAME = "model"

log = logging.getLogger("convscope.repository")


class ArtifactError(Exception):
    """A version on disk that cannot be served; the message says why."""


@dataclass(frozen=True)
class ArtifactRef:
    """One version found under the root: the name it is served under, its number, its directory."""

    name: str
    version: int
    path: Path


@dataclass
class Artifact:
    """A validated version: its metadata and where its model file lies."""

    ref: ArtifactRef
    metadata: dict[str, Any]
    model_path: Path
    initial_weights_path: Path | None = field(default=None)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.ref.version


class Layout(Enum):
    """How the directory the service is pointed at holds its models.

    KServe's storage initializer copies whatever the InferenceService's ``storageUri``
    names into ``/mnt/models``: a whole repository, one model's directory of versions, or
    one version's directory. The service accepts all three.
    """

    REPOSITORY = "repository"  # <root>/<name>/<version>/metadata.json (the export stage's)
    MODEL = "model"  # <root>/<version>/metadata.json: one model, its versions
    ARTIFACT = "artifact"  # <root>/metadata.json: one version of one model


def detect_layout(root: Path) -> Layout:
    """Which layout ``root`` has: a ``metadata.json`` at the root makes it one artifact; a
    positive-integer directory holding a ``metadata.json`` makes it one model's versions;
    anything else is a repository (possibly empty)."""
    if (root / "metadata.json").is_file():
        return Layout.ARTIFACT
    for child in root.iterdir():
        if child.is_dir() and _is_version(child.name) and (child / "metadata.json").is_file():
            return Layout.MODEL
    return Layout.REPOSITORY


def scan(root: Path, model_name: str | None = None) -> list[ArtifactRef]:
    """Every version under ``root``, sorted by name then version, whatever its :class:`Layout`.

    In a repository each model is named after its directory. A single model (the other two
    layouts) is named ``model_name`` when given, else the ``name`` in its newest version's
    metadata.json, else after ``root`` itself. Hidden directories (the export stage's
    in-progress ``.tmp-*``) and non-integer versions are skipped: they are not versions.
    """
    if not root.is_dir():
        return []
    layout = detect_layout(root)
    if layout is Layout.ARTIFACT:
        name = model_name or _single_model_name(root, [root])
        return [ArtifactRef(name, _metadata_version(root), root)]
    if layout is Layout.MODEL:
        versions = _version_dirs(root)
        name = model_name or _single_model_name(root, versions[::-1])
        return [ArtifactRef(name, int(d.name), d) for d in versions]

    refs: list[ArtifactRef] = []
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not NAME_PATTERN.match(model_dir.name):
            continue
        refs.extend(ArtifactRef(model_dir.name, int(d.name), d) for d in _version_dirs(model_dir))
    if not refs and (root / "model.onnx").is_file():
        log.warning("%s holds model.onnx but no metadata.json: point the service at a whole artifact "
                    "directory (docs/artifact.md), not at the ONNX file alone", root)
    if model_name is not None and refs and model_name not in {r.name for r in refs}:
        log.warning("model name %r applies to a single model; %s is a repository, whose models keep "
                    "their directory names: %s", model_name, root, ", ".join(sorted({r.name for r in refs})))
    return sorted(refs, key=lambda r: (r.name, r.version))


def _is_version(dirname: str) -> bool:
    return dirname.isdigit() and int(dirname) > 0


def _version_dirs(model_dir: Path) -> list[Path]:
    """The positive-integer subdirectories of one model, oldest first."""
    found = [d for d in model_dir.iterdir() if d.is_dir() and _is_version(d.name)]
    return sorted(found, key=lambda d: int(d.name))


def _read_metadata(version_dir: Path) -> dict[str, Any]:
    """metadata.json as an object, or {} when it cannot be read: load_artifact reports why."""
    try:
        metadata = json.loads((version_dir / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _metadata_version(version_dir: Path) -> int:
    """A lone artifact's version: the one its metadata records, else 1."""
    version = _read_metadata(version_dir).get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) and version > 0 else 1


def _single_model_name(root: Path, newest_first: list[Path]) -> str:
    """The first valid of: the newest readable metadata's ``name``, the root's own name."""
    for version_dir in newest_first:
        name = _read_metadata(version_dir).get("name")
        if isinstance(name, str) and NAME_PATTERN.match(name):
            return name
    dirname = root.resolve().name
    return dirname if NAME_PATTERN.match(dirname) else FALLBACK_MODEL_NAME


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_artifact(ref: ArtifactRef, *, verify_checksums: bool = True) -> Artifact:
    """Read and validate one version; raises ArtifactError with the reason."""
    meta_path = ref.path / "metadata.json"
    if not meta_path.is_file():
        raise ArtifactError("metadata.json is missing (incomplete export?)")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"metadata.json is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ArtifactError("metadata.json must hold a JSON object")
    _validate_metadata(metadata)

    files = metadata["files"]
    for filename, info in files.items():
        path = ref.path / filename
        if not path.is_file():
            raise ArtifactError(f"{filename} is listed in metadata.json but missing")
        if verify_checksums:
            expected = info.get("sha256") if isinstance(info, dict) else None
            if not isinstance(expected, str):
                raise ArtifactError(f"files[{filename!r}] has no sha256")
            actual = sha256_of(path)
            if actual != expected:
                raise ArtifactError(
                    f"{filename} does not match its sha256 (expected {expected[:12]}..., "
                    f"found {actual[:12]}...): the file was changed or corrupted"
                )
    model_file = metadata.get("model_file", "model.onnx")
    if model_file not in files:
        raise ArtifactError(f"model_file {model_file!r} is not listed under files")
    initial = ref.path / "initial_weights.npz"
    return Artifact(
        ref=ref,
        metadata=metadata,
        model_path=ref.path / model_file,
        initial_weights_path=initial if "initial_weights.npz" in files else None,
    )


def _validate_metadata(metadata: dict[str, Any]) -> None:
    version = metadata.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ArtifactError(
            f"schema_version {version!r} is not supported (supported: "
            f"{sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    labels = metadata.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ArtifactError("labels must be a non-empty list of strings")

    inp = metadata.get("input")
    if not isinstance(inp, dict):
        raise ArtifactError("input must be an object")
    missing = [k for k in _INPUT_KEYS if k not in inp]
    if missing:
        raise ArtifactError(f"input lacks {', '.join(missing)}")
    channels = inp["channels"]
    if channels not in (1, 3):
        raise ArtifactError(f"input.channels must be 1 or 3, not {channels!r}")
    size = inp["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ArtifactError("input.size must be [height, width] in pixels")
    for key in ("mean", "std"):
        values = inp[key]
        if not (isinstance(values, list) and len(values) == channels
                and all(isinstance(v, (int, float)) for v in values)):
            raise ArtifactError(f"input.{key} must list one number per channel ({channels})")
    if any(v <= 0 for v in inp["std"]):
        raise ArtifactError("input.std values must be positive")
    if not isinstance(inp["scale"], (int, float)) or inp["scale"] <= 0:
        raise ArtifactError("input.scale must be a positive number")

    output = metadata.get("output")
    if not isinstance(output, dict) or not isinstance(output.get("name"), str):
        raise ArtifactError("output.name is missing")

    layers = metadata.get("layers")
    if not isinstance(layers, list):
        raise ArtifactError("layers must be a list")
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise ArtifactError(f"layers[{i}] has no name")
        if layer["name"] in seen or layer["name"] == output["name"]:
            raise ArtifactError(f"layer name {layer['name']!r} is used twice")
        seen.add(layer["name"])
        shape = layer.get("output_shape")
        if not (isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) for d in shape)):
            raise ArtifactError(f"layers[{i}] ({layer['name']}) has no valid output_shape")

    files = metadata.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError("files must list the artifact's files with their sha256")
