"""The artifact contract: docs/artifact.md and artifact.Metadata say the same thing, old
artifacts keep loading, and a broken document is refused naming the place."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import artifact
from artifact import ArtifactError, Metadata, OutputKind, parse_metadata

DOC = Path(__file__).resolve().parents[2] / "docs" / "artifact.md"


def documented_example() -> dict[str, Any]:
    """The ```jsonc block of docs/artifact.md as JSON: comments and "..." elisions dropped."""
    block = re.search(r"## metadata.json\n```jsonc\n(.*?)\n```", DOC.read_text(), re.S)
    assert block is not None, "docs/artifact.md lost its metadata.json example"
    text = re.sub(r"//[^\n]*", "", block.group(1))
    text = text.replace('"..."', '"x"')
    return json.loads(text)


def fields_of(model: type[BaseModel], value: Any, where: str) -> set[str]:
    """Every dotted field path of ``model`` that ``value`` (the documented example) shows,
    recursing into nested records and lists of records."""
    paths = set()
    for name, info in model.model_fields.items():
        path = f"{where}{name}"
        paths.add(path)
        inner = value.get(name) if isinstance(value, dict) else None
        record = _record_type(info.annotation)
        if record is None or inner is None:
            continue
        items = inner if isinstance(inner, list) else inner.values() if _is_mapping(info.annotation) else [inner]
        for item in items:
            paths |= fields_of(record, item, path + ".")
    return paths


def _record_type(annotation: Any) -> type[BaseModel] | None:
    for arg in [annotation, *getattr(annotation, "__args__", ())]:
        for inner in [arg, *getattr(arg, "__args__", ())]:
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _is_mapping(annotation: Any) -> bool:
    return "dict[" in str(annotation)


def keys_of(value: Any, where: str = "") -> set[str]:
    """Every dotted key path in the documented example (lists: their items' keys)."""
    paths = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in _FREE_FORM_MAPS.get(where.rstrip("."), ()):  # a map's keys are data, not fields
                continue
            paths.add(where + key)
            paths |= keys_of(inner, where + key + ".")
    elif isinstance(value, list):
        for item in value:
            paths |= keys_of(item, where)
    return paths


# Mappings whose keys are names from the model, not contract fields.
_FREE_FORM_MAPS = {"parity.max_abs_diff": ("logits", "features.1"), "files": ("model.onnx",),
                   "channel_view.pictures": ("whole", "crop")}


def test_every_documented_key_is_a_contract_field_and_every_field_is_documented() -> None:
    example = documented_example()
    documented = keys_of(example)
    typed = fields_of(Metadata, example, "")
    # files' records: their fields are documented through the one example entry.
    typed |= {f"files.{n}" for n in artifact.FileRecord.model_fields}
    documented |= {f"files.{n}" for n in example["files"]["model.onnx"]}
    assert sorted(documented - typed) == [], "documented in docs/artifact.md but not in artifact.Metadata"
    assert sorted(typed - documented) == [], "in artifact.Metadata but not documented in docs/artifact.md"


def documented_int8() -> dict[str, Any]:
    """The ```jsonc block of docs/artifact.md's "int8 versions" as JSON."""
    block = re.search(r"## int8 versions\n.*?```jsonc\n(.*?)\n```", DOC.read_text(), re.S)
    assert block is not None, "docs/artifact.md lost its int8 versions example"
    text = re.sub(r"//[^\n]*", "", block.group(1))
    return json.loads(text.replace('"..."', '"x"'))


def test_every_documented_quantization_key_is_a_field_and_every_field_is_documented() -> None:
    record = documented_int8()["quantization"]
    documented = keys_of(record)
    typed = fields_of(artifact.QuantizationRecord, record, "")
    assert sorted(documented - typed) == [], "documented in docs/artifact.md but not in artifact.QuantizationRecord"
    assert sorted(typed - documented) == [], "in artifact.QuantizationRecord but not documented in docs/artifact.md"


def test_the_documented_int8_version_is_a_valid_document() -> None:
    document = {**documented_example(), **documented_int8()}
    metadata = parse_metadata(document)
    assert metadata.precision is artifact.Precision.INT8 and metadata.quantization is not None
    assert metadata.quantization.method is artifact.CalibrationMethod.MINMAX
    assert metadata.quantization.layers[0].name == "features.1"


@pytest.mark.parametrize("change", [
    lambda d: d.update(precision="int8"),  # int8 without its record
    lambda d: d.update(quantization=documented_int8()["quantization"]),  # a record on a float32 version
    lambda d: d.update(precision="int4"),
])
def test_precision_and_the_quantization_record_go_together(change: Any) -> None:
    document = minimal_version_1()
    change(document)
    with pytest.raises(ArtifactError, match="precision"):
        parse_metadata(document)


def test_the_documented_example_is_a_valid_document() -> None:
    metadata = parse_metadata(documented_example())
    assert metadata.output.kind is OutputKind.LOGITS
    assert metadata.input.size == (28, 28) and metadata.layers[0].map_shape == (10, 28, 28)


def minimal_version_1() -> dict[str, Any]:
    """What the first export stage wrote: none of the fields added since."""
    return {
        "schema_version": 1, "name": "old", "version": 3, "arch": "tinyvgg", "model_file": "model.onnx",
        "labels": ["a", "b"],
        "input": {"name": "input", "shape": [-1, 1, 8, 8], "channels": 1, "size": [8, 8], "scale": 1 / 255,
                  "mean": [0.5], "std": [0.25]},
        "output": {"name": "logits"},
        "layers": [{"name": "features.1", "output_shape": [-1, 4, 8, 8]}],
        "files": {"model.onnx": {"sha256": "0" * 64}},
    }


def test_an_old_document_loads_with_the_defaults_of_later_fields() -> None:
    metadata = parse_metadata(minimal_version_1())
    assert metadata.output.kind is OutputKind.LOGITS and metadata.output.logits is None
    assert metadata.input.fixed_batch is None and metadata.input.resize == "bilinear"
    layer = metadata.layer("features.1")
    assert layer.receptive_field_offset is None and layer.group is None and layer.kind == "other"
    assert metadata.channel_view is None and metadata.samples is None
    assert metadata.precision is artifact.Precision.FLOAT32 and metadata.quantization is None


def test_unknown_keys_are_kept_through_a_read_and_a_write() -> None:
    document = minimal_version_1()
    document["from_a_newer_writer"] = {"x": 1}
    document["layers"][0]["colour"] = "blue"
    written = parse_metadata(document).to_json()
    assert written["from_a_newer_writer"] == {"x": 1} and written["layers"][0]["colour"] == "blue"
    assert parse_metadata(written) == parse_metadata(document)


@pytest.mark.parametrize("change, reason", [
    (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
    (lambda d: d["input"].update(channels=2), "input.channels"),
    (lambda d: d["input"].update(mean=[0.1, 0.2]), "input.mean must list one number per channel"),
    (lambda d: d["output"].update(kind="softmax"), "output.kind"),
    (lambda d: d["layers"].append({"name": "logits", "output_shape": [-1, 2]}), "layer name 'logits' is used twice"),
    (lambda d: d["layers"][0].pop("output_shape"), "layers.0.output_shape is missing"),
    (lambda d: d.update(model_file="other.onnx"), "model_file 'other.onnx' is not listed under files"),
])
def test_a_broken_document_is_refused_naming_the_place(change: Any, reason: str) -> None:
    document = minimal_version_1()
    change(document)
    with pytest.raises(ArtifactError, match=re.escape(reason)):
        parse_metadata(document)


def test_written_metadata_reads_back_equal(tmp_path: Path) -> None:
    metadata = parse_metadata(minimal_version_1())
    artifact.write_metadata(tmp_path, metadata)
    assert artifact.read_metadata(tmp_path) == metadata
    assert not (tmp_path / "metadata.json.part").exists()
