"""int8 versions of the zoo's quick entries (benchmarks/zoo.py `QUICK`: real torchvision
CNNs as users bring them: both torch.onnx exporters, a Softmax appended, a fixed batch of 1,
an NHWC input at opset 11, float16). Each imported model is quantized by the CLI on a few
held-out Fashion-MNIST images, with the gate off (the mechanics, not the figures:
`benchmarks.quantize --zoo` measures those), then served beside its float version by one
server: the int8 graph loads, predicts the float version's class on a held-out image, and
answers grad-cam at its default layer.

Bounded: 40 held-out images a model (a third calibrates), three explained per method within
10 s; about 15 s a model on two cores.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import onnx
import pytest

from artifact import Precision, read_metadata
from benchmarks import zoo
from benchmarks.zoo_table import import_entry
from service.testing import ServerProcess

ENTRIES = [pytest.param(e, id=e.name) for e in zoo.QUICK]


class QuantizedZoo:
    """The quick entries imported into one repository and quantized, served by one server."""

    def __init__(self, cache: Path, repository: Path) -> None:
        self.held_out = zoo.heldout(cache, per_class=4)
        self.repository = repository
        self.written: dict[str, Path] = {}
        self.errors: dict[str, str] = {}
        for entry in zoo.QUICK:
            imported = import_entry(entry, cache, repository)
            assert imported.path is not None, f"import of {entry.name} refused: {imported.error}"
            self._quantize(entry.name)

    def _quantize(self, name: str) -> None:
        from model_export.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["quantize", str(self.repository / name), "--data-dir", str(self.held_out),
                       "--min-agreement", "0", "--explain-images", "3", "--explain-seconds", "10", "--quiet"])
        if rc == 0:
            self.written[name] = Path(out.getvalue().strip().splitlines()[-1])
        else:
            self.errors[name] = err.getvalue().strip()[-2000:]

    def version(self, name: str) -> Path:
        assert name in self.written, f"quantize {name} failed: {self.errors.get(name)}"
        return self.written[name]


@pytest.fixture(scope="module")
def quantized(zoo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> QuantizedZoo:
    return QuantizedZoo(zoo_cache, tmp_path_factory.mktemp("zoo-int8"))


@pytest.fixture(scope="module")
def server(quantized: QuantizedZoo, start_server: Callable[..., ServerProcess]) -> ServerProcess:
    # Which version serves a request that names none is not what this tests: each is named.
    return start_server(quantized.repository, default_precision="newest")


def _images(quantized: QuantizedZoo) -> list[bytes]:
    """One held-out image of each class."""
    return [sorted(folder.glob("*.png"))[0].read_bytes() for folder in sorted(quantized.held_out.iterdir())]


@pytest.mark.parametrize("entry", ENTRIES)
def test_zoo_int8_version_is_written_at_opset_13_or_newer_in_float32(quantized: QuantizedZoo,
                                                                     entry: zoo.Entry) -> None:
    written = quantized.version(entry.name)
    metadata = read_metadata(written)
    assert metadata.precision is Precision.INT8 and metadata.quantization is not None
    graph = onnx.load(str(written / "model.onnx"), load_external_data=False)
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13
    assert all(t.data_type != onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert not [p.name for p in written.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("entry", ENTRIES)
def test_zoo_int8_version_serves_the_float_versions_class_and_grad_cam(quantized: QuantizedZoo, server: ServerProcess,
                                                                       entry: zoo.Entry) -> None:
    version = int(quantized.version(entry.name).name)
    base = f"{server.url}/v1/models/{entry.name}/versions"
    images = _images(quantized)
    png = {"content-type": "image/png"}
    with httpx.Client(timeout=120) as client:
        top: list[list[int]] = []
        for v in (version - 1, version):
            answers = [client.post(f"{base}/{v}/predict", content=image, headers=png) for image in images]
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
            top.append([a.json()["predictions"][0]["index"] for a in answers])
        explained = client.post(f"{base}/{version}/explain?method=grad-cam", content=images[0], headers=png)
    assert explained.status_code == 200, explained.text
    agree = sum(a == b for a, b in zip(*top, strict=True))
    assert agree >= len(images) - 2, f"int8 agrees with float on {agree} of {len(images)}: {top}"
