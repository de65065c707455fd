"""The model repository on disk: ``<root>/<name>/<version>/metadata.json`` (docs/artifact.md).

The root may also be a single model, as KServe's storage initializer lays one out in
``/mnt/models``: a directory of versions (``<root>/<version>/``) or one version's own
directory (``<root>/metadata.json``); see :class:`Layout`.

This module only finds and validates artifacts; opening onnxruntime sessions is the
runtime's job. A version that fails validation is reported with its reason and never
stops the others from loading.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from artifact import INITIAL_WEIGHTS_FILE, ArtifactError, Metadata, read_metadata, verify_files

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The name a single model gets when neither the setting, its metadata nor its directory
# offers a valid one (a mount point such as "/" has no name).
FALLBACK_MODEL_NAME = "model"

log = logging.getLogger("convscope.repository")


class DefaultPrecision(str, Enum):
    """Which ready version of a model answers a request that names none (docs/deploy.md)."""

    AUTO = "auto"  # the newest, unless it is an int8 version slower here than its float version (both ready)
    NEWEST = "newest"  # the newest, whatever its precision
    FLOAT32 = "float32"  # the newest float32 version (the newest of any precision if none is ready)
    INT8 = "int8"  # the newest int8 version (the newest of any precision if none is ready)


@dataclass(frozen=True)
class RepositoryOptions:
    """Where the models are and how they are named and watched."""

    root: Path
    model_name: str | None = None  # a single model's name (KServe's /mnt/models layout)
    poll_seconds: float = 0.0  # how often the registry is brought in step with the disk; 0: never
    default_model: str | None = None  # the model of /predict and /explain
    default_precision: DefaultPrecision = DefaultPrecision.AUTO  # which version of a model serves by default

    def scan(self) -> list[ArtifactRef]:
        """The versions on disk now (blocking: call it on a thread)."""
        return scan(self.root, self.model_name)


@dataclass(frozen=True)
class ArtifactRef:
    """One version found under the root: the name it is served under, its number, its directory."""

    name: str
    version: int
    path: Path


class Named:
    """What is about one version on disk: its name and number, from its ``ref``."""

    ref: ArtifactRef

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.ref.version


@dataclass
class Artifact(Named):
    """A validated version: its metadata and where its model file lies."""

    ref: ArtifactRef
    metadata: Metadata
    model_path: Path
    initial_weights_path: Path | None = field(default=None)


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


def _readable_metadata(version_dir: Path) -> Metadata | None:
    """The version's metadata, or None when it cannot be read: load_artifact reports why."""
    try:
        return read_metadata(version_dir)
    except ArtifactError:
        return None


def _metadata_version(version_dir: Path) -> int:
    """A lone artifact's version: the one its metadata records, else 1."""
    metadata = _readable_metadata(version_dir)
    version = metadata.version if metadata is not None else None
    return version if version is not None and version > 0 else 1


def _single_model_name(root: Path, newest_first: list[Path]) -> str:
    """The first valid of: the newest readable metadata's ``name``, the root's own name."""
    for version_dir in newest_first:
        metadata = _readable_metadata(version_dir)
        name = metadata.name if metadata is not None else None
        if name is not None and NAME_PATTERN.match(name):
            return name
    dirname = root.resolve().name
    return dirname if NAME_PATTERN.match(dirname) else FALLBACK_MODEL_NAME


def load_artifact(ref: ArtifactRef, *, verify_checksums: bool = True) -> Artifact:
    """Read and validate one version; raises ArtifactError with the reason."""
    metadata = read_metadata(ref.path)
    verify_files(ref.path, metadata, checksums=verify_checksums)
    initial = ref.path / INITIAL_WEIGHTS_FILE
    return Artifact(
        ref=ref,
        metadata=metadata,
        model_path=ref.path / metadata.model_file,
        initial_weights_path=initial if INITIAL_WEIGHTS_FILE in metadata.files else None,
    )
