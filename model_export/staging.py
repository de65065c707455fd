"""Writing a new version into the model repository (docs/artifact.md): its name, its
number, and an atomic commit (a hidden directory renamed into place as a whole)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from artifact import METADATA_FILE, FileRecord, Metadata, file_records, write_metadata

from .errors import ExportError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ExportError(
            f"invalid model name {name!r}: use lower-case letters, digits, '.', '_' and '-',"
            " starting with a letter or digit"
        )
    return name


def versions(model_dir: Path) -> list[int]:
    """Integer-named entries (complete or not): a new version never reuses one."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and int(p.name) > 0)


def complete_versions(model_dir: Path) -> list[int]:
    return [v for v in versions(model_dir) if (model_dir / str(v) / METADATA_FILE).is_file()]


def choose_version(model_dir: Path, requested: int | None) -> int:
    if requested is None:
        existing = versions(model_dir)
        return (existing[-1] + 1) if existing else 1
    if requested < 1:
        raise ExportError(f"--version must be a positive integer, not {requested}")
    if (model_dir / str(requested)).exists():
        raise ExportError(f"{model_dir / str(requested)} already exists; refusing to overwrite it")
    return requested


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Staging:
    """A hidden temporary directory inside `<out>/<name>/`, renamed to `<version>/`.

    Use as a context manager: write files into `.path`, then `commit(metadata)`. Any
    exception before the commit removes the temporary directory (and `<name>/` if this
    run created it), so a failed export leaves nothing behind.
    """

    def __init__(self, out: Path, name: str, version: int | None) -> None:
        self.model_dir = Path(out) / check_name(name)
        self.requested = version
        self.path: Path | None = None
        self.final: Path | None = None
        self._created_dirs: list[Path] = []

    def __enter__(self) -> Staging:
        # Create the parents ourselves so a failed run can remove what it created.
        missing = []
        for parent in [self.model_dir, *self.model_dir.parents]:
            if parent.exists():
                break
            missing.append(parent)
        try:
            for d in reversed(missing):
                d.mkdir()
                self._created_dirs.append(d)
            self.path = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.model_dir))
            # mkdtemp makes it 0700; the service often runs as another user (containers).
            self.path.chmod(0o755)
        except OSError as exc:
            self._cleanup()
            raise ExportError(f"cannot write to {self.model_dir}: {exc.strerror or exc}") from None
        return self

    def commit(self, make: Callable[[int, dict[str, FileRecord]], Metadata]) -> Path:
        """Choose the version number, record the files, write metadata.json last (``make``
        builds it from the number and the file records), then rename into place."""
        assert self.path is not None
        version = choose_version(self.model_dir, self.requested)
        write_metadata(self.path, make(version, file_records(self.path)))
        final = self.model_dir / str(version)
        try:
            # rename() of a directory fails if the target is a non-empty directory but
            # silently replaces an empty one: check first, the rename is the commit.
            if final.exists():
                raise ExportError(f"{final} already exists; refusing to overwrite it")
            os.rename(self.path, final)
        except OSError as exc:
            raise ExportError(f"cannot move the new version into {final}: {exc.strerror or exc}") from None
        self.final = final
        self.path = None
        return final

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.final is None:
            self._cleanup()

    def _cleanup(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        for d in reversed(self._created_dirs):
            try:
                d.rmdir()  # only if still empty: never remove someone else's files
            except OSError:
                pass
        self._created_dirs = []
