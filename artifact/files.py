"""One version's directory: its file names, their checksums, and metadata.json read and
checked. The export stage writes through these names; the service reads through
``read_version``, which refuses a version with the reason, never half-loads one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from artifact.metadata import SCHEMA_VERSION, FileRecord, Metadata

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
INITIAL_WEIGHTS_FILE = "initial_weights.npz"
CHANNEL_VIEW_FILE = "channel_view.npz"
SAMPLES_FILE = "samples.npz"


class ArtifactError(Exception):
    """A version on disk that cannot be served; the message says why."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(directory: Path) -> dict[str, FileRecord]:
    """Every file of a version being written, but metadata.json itself."""
    return {
        p.name: FileRecord(sha256=sha256(p), bytes=p.stat().st_size)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != METADATA_FILE
    }


def parse_metadata(document: Any) -> Metadata:
    """metadata.json's parsed JSON as the contract, or ArtifactError naming each problem
    by its place in the document (``input.channels: ...``)."""
    if not isinstance(document, dict):
        raise ArtifactError("metadata.json must hold a JSON object")
    schema = document.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ArtifactError(f"schema_version {schema!r} is not supported (supported: [{SCHEMA_VERSION}])")
    try:
        return Metadata.model_validate(document)
    except ValidationError as exc:
        raise ArtifactError("metadata.json: " + "; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "missing":
        message = "is missing"
    elif message.startswith("Value error, "):
        return message.removeprefix("Value error, ") + (f" ({where})" if where else "")
    return f"{where} {message}" if where else message


def read_metadata(directory: Path) -> Metadata:
    path = directory / METADATA_FILE
    if not path.is_file():
        raise ArtifactError("metadata.json is missing (incomplete export?)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"metadata.json is not valid JSON: {exc}") from exc
    return parse_metadata(document)


def verify_files(directory: Path, metadata: Metadata, *, checksums: bool = True) -> None:
    """Every listed file exists and, with ``checksums``, matches its sha256."""
    for filename, record in metadata.files.items():
        path = directory / filename
        if not path.is_file():
            raise ArtifactError(f"{filename} is listed in metadata.json but missing")
        if checksums:
            actual = sha256(path)
            if actual != record.sha256:
                raise ArtifactError(
                    f"{filename} does not match its sha256 (expected {record.sha256[:12]}..., "
                    f"found {actual[:12]}...): the file was changed or corrupted"
                )


def write_metadata(directory: Path, metadata: Metadata) -> Path:
    """metadata.json, written under a temporary name, synced, then renamed: a reader sees
    the whole document or none."""
    import os

    part = directory / (METADATA_FILE + ".part")
    with part.open("w", encoding="utf-8") as fh:
        json.dump(metadata.to_json(), fh, indent=2, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    final = directory / METADATA_FILE
    os.replace(part, final)
    return final
