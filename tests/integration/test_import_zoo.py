"""The zoo (benchmarks/zoo.py): real torchvision CNNs, exported by both torch.onnx exporters
at two opsets and as users' variants (a Softmax appended, a fixed batch of 1, an NHWC
input, float16), imported and served by ONE server for the session.

For each entry: the import succeeds and says what it found; the probabilities served over
HTTP equal onnxruntime's on the original file; every spatial layer has a receptive field;
grad-cam is offered on the last spatial layer and its gradient equals PyTorch autograd.
The quick part (`zoo.QUICK`: two architectures, each variant once) runs by default; the
rest is the slow tier. Trained weights and exported files are cached in pytest's cache
(`.pytest_cache/d/convscope-zoo`, or $CONVSCOPE_ZOO_CACHE), so a warm run only imports.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks import zoo
from benchmarks.zoo_table import (
    Imported,
    ZooServer,
    grad_cam_offered,
    gradient_error,
    gradient_tolerance,
    import_entry,
    served_max_diff,
    served_tolerance,
    spatial_layers,
)
from service.testing import ServerProcess

ENTRIES = [pytest.param(e, id=e.name) for e in zoo.QUICK] + [
    pytest.param(e, id=e.name, marks=pytest.mark.slow) for e in zoo.ENTRIES if e not in zoo.QUICK]


class Zoo:
    """The session's zoo: each entry built, imported once into one repository, served by one server."""

    def __init__(self, cache: Path, repository: Path, start: Callable[..., ServerProcess]) -> None:
        self.cache = cache
        self.server = ZooServer(repository, start)
        self._imported: dict[zoo.Entry, Imported] = {}

    def imported(self, entry: zoo.Entry) -> Imported:
        if entry not in self._imported:
            self._imported[entry] = import_entry(entry, self.cache, self.server.repository)
        found = self._imported[entry]
        assert found.error is None, f"import of {entry.name} refused: {found.error}"
        return found

    def url(self, entry: zoo.Entry) -> str:
        self.imported(entry)
        return self.server.url_for(entry.name)


@pytest.fixture(scope="session")
def the_zoo(zoo_cache: Path, tmp_path_factory: pytest.TempPathFactory,
            start_server: Callable[..., ServerProcess]) -> Iterator[Zoo]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        yield Zoo(zoo_cache, tmp_path_factory.mktemp("zoo-models"), start_server)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("entry", ENTRIES)
def test_zoo_import_says_what_it_found(the_zoo: Zoo, entry: zoo.Entry) -> None:
    meta = the_zoo.imported(entry).metadata
    output, source = meta["output"], meta["source"]
    assert output["kind"] == entry.kind
    assert output["logits"] == ("logits" if entry.kind != "logits" else None)
    assert (source["layout"], source["dtype"]) == ("NHWC" if entry.nhwc else "NCHW",
                                                    "float16" if entry.float16 else "float32")
    assert source["batch"] == (1 if entry.variant == "batch1" else None)
    assert meta["input"]["fixed_batch"] is None and meta["input"]["shape"] == [-1, 3, zoo.SIZE, zoo.SIZE]
    assert source["exporter"] == ("torch.onnx (dynamo)" if entry.exporter == "dynamo" else "torch.onnx (TorchScript)")
    # Named from the exporter's scopes: every layer is one of the net's modules (or a block).
    net = zoo.trained(entry.arch, the_zoo.cache)
    modules = set(dict(net.named_modules()))
    unnamed = [layer["name"] for layer in meta["layers"]
               if layer["name"].rsplit("_", 1)[0] not in modules and layer["name"] not in modules]
    assert len(unnamed) <= 2, f"layers not named after a module: {unnamed}"  # top-level F.relu etc.
    assert all(layer["group"] for layer in meta["layers"][1:]), "every layer after the stem belongs to a block"
    kinds = {layer["kind"] for layer in meta["layers"]}
    assert {"conv", "merge"} <= kinds


@pytest.mark.parametrize("entry", ENTRIES)
def test_zoo_served_probabilities_equal_onnxruntime_on_the_original(the_zoo: Zoo, entry: zoo.Entry) -> None:
    diff = served_max_diff(the_zoo.imported(entry), the_zoo.url(entry), the_zoo.cache)
    assert diff <= served_tolerance(entry)  # 1e-5; float16: the rounding of its output


@pytest.mark.parametrize("entry", ENTRIES)
def test_zoo_every_spatial_layer_has_a_receptive_field(the_zoo: Zoo, entry: zoo.Entry) -> None:
    spatial = spatial_layers(the_zoo.imported(entry).metadata)
    missing = [(layer["name"], layer["geometry_note"]) for layer in spatial if layer["receptive_field"] is None]
    assert not missing, f"{len(missing)} of {len(spatial)} spatial layers without a field, e.g. {missing[:3]}"


@pytest.mark.parametrize("entry", ENTRIES)
def test_zoo_grad_cam_is_offered_on_the_last_spatial_layer(the_zoo: Zoo, entry: zoo.Entry) -> None:
    assert grad_cam_offered(the_zoo.url(entry), the_zoo.imported(entry))


@pytest.mark.parametrize("entry", ENTRIES)
def test_zoo_grad_cam_gradient_equals_autograd(the_zoo: Zoo, entry: zoo.Entry) -> None:
    error = gradient_error(the_zoo.imported(entry), the_zoo.cache)
    assert error is not None, "no exact gradient head at the last spatial layer"
    assert error <= gradient_tolerance(entry)
