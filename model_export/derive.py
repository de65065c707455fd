"""`python -m model_export channel-view MODEL_DIR --data-dir DIR`: an existing model given a
channel view, samples and measured explanations from a folder of images.

A published version never changes (the service may be serving it, and clients cache its
answers as immutable): this writes the model's NEXT version, with the same model.onnx and
other files (copied), the same metadata, and what DIR adds; `derived_from` records which
version it came from, the folder, and what was added. The folder is an ImageFolder (true
labels) or a flat folder of images (the model captions each with its top-1).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from artifact import ArtifactError, DerivedFrom, FileRecord, Metadata, read_metadata, verify_files

from . import channel_view, explanations
from .datasets import load_images
from .errors import ExportError
from .preprocessing import InputSpec
from .staging import Staging, complete_versions, utc_now


@dataclass
class DeriveOptions:
    model_dir: str  # models/<name>
    data_dir: str
    version: int | None = None  # the version to start from; None: the newest complete one
    channel_images: int | None = None  # None: channel_view.default_images(size); 0: none
    channel_top_k: int = channel_view.DEFAULT_TOP_K
    explain_images: int = explanations.MeasureOptions.images
    explain_seconds: float = explanations.MeasureOptions.seconds
    progress: bool = True
    seed: int = 0


def add_views(opts: DeriveOptions) -> Path:
    """Write the next version of the model in ``opts.model_dir``; returns its directory."""
    model_dir = Path(opts.model_dir)
    channel_view.check_options(opts.channel_images, opts.channel_top_k)
    explanations.check_options(opts.explain_images, opts.explain_seconds)
    source, metadata = _source(model_dir, opts.version)
    images = load_images(opts.data_dir)
    inp = metadata.input
    spec = InputSpec(inp.channels, (inp.height, inp.width), tuple(inp.mean), tuple(inp.std), inp.scale)
    with Staging(model_dir.parent, model_dir.name, None) as staging:
        assert staging.path is not None
        for name in metadata.files:  # a view computed below replaces its copy
            shutil.copy2(source / name, staging.path / name)
        model_path = staging.path / metadata.model_file
        options = channel_view.ViewOptions(opts.channel_images, opts.channel_top_k, opts.progress, opts.seed)
        captions = None if images.labelled else channel_view.Predictions(
            metadata.output.name, metadata.output.kind, list(metadata.labels))
        views = channel_view.write_views(staging.path, model_path, metadata.layers, spec, images.val,
                                         images.classes, options, captions)
        measuring = explanations.MeasureOptions(opts.explain_images, opts.explain_seconds, opts.progress, opts.seed)
        measured = explanations.measure(model_path, metadata, images.val, spec, measuring)
        added = [what for what, value in (("channel_view", views.channel_view), ("samples", views.samples),
                                          ("explanations", measured)) if value is not None]
        if not added:
            raise ExportError(f"{opts.data_dir} adds nothing to {model_dir.name} (no images, and "
                              "--channel-images 0 --explain-images 0?)")
        derived = DerivedFrom(version=int(source.name), data_dir=Path(opts.data_dir).name, added=added)

        # What DIR did not give (--channel-images 0, --explain-images 0) stays as it was.
        update = {"channel_view": views.channel_view, "samples": views.samples, "explanations": measured}
        kept = {key: value for key, value in update.items() if value is not None}

        def make(version: int, files: dict[str, FileRecord]) -> Metadata:
            return metadata.model_copy(update={**kept, "version": version, "created": utc_now(),
                                               "derived_from": derived, "files": files})

        return staging.commit(make)


def _source(model_dir: Path, version: int | None) -> tuple[Path, Metadata]:
    """The version to start from, checked (every file present and matching its sha256)."""
    if not model_dir.is_dir():
        raise ExportError(f"model directory {model_dir} does not exist (give models/<name>)")
    versions = complete_versions(model_dir)
    if not versions:
        raise ExportError(f"{model_dir} holds no complete version (models/<name>/<version>/metadata.json)")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise ExportError(f"{model_dir.name} has no version {chosen}; versions: {', '.join(map(str, versions))}")
    path = model_dir / str(chosen)
    try:
        metadata = read_metadata(path)
        verify_files(path, metadata)
    except ArtifactError as exc:
        raise ExportError(f"{path} cannot be read: {exc}") from None
    return path, metadata
