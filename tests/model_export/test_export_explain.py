"""grad-cam and hires-cam parity: the service's gradient, replayed in numpy from the exported
ONNX head, against PyTorch autograd on the same activations, and the maps built from it
against Grad-CAM and HiResCAM computed with PyTorch, for the nets the export stage trains.

The torch reference runs the architecture with the artifact's own weights (loaded by
initializer name) and the tapped layer's output replaced by the ONNX model's activations
for the image, so everything after the layer is PyTorch's and the gradient is autograd's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image

from artifact import InputRecipe, parse_metadata
from model_export.architectures import get_arch
from model_export.layers import prepare
from service.explain import Explainer, ExplainRequest, Method, describe
from service.inference.preprocessing import InputSpec, preprocess
from tests.support.export_cli import run_cli
from tests.support.exported import ExportedModel

TOLERANCE = 1e-4


def torch_net(metadata: dict, model: onnx.ModelProto) -> torch.nn.Module:
    """The artifact's architecture with every weight the ONNX file keeps by name (the head's
    always; convs before a folded batch norm may differ, and never matter past the layer)."""
    inp = metadata["input"]
    net = prepare(get_arch(metadata["arch"]).builder(inp["channels"], tuple(inp["size"]), len(metadata["labels"])))
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    state = net.state_dict()
    net.load_state_dict({k: weights.get(k, v) if weights.get(k, v).shape == v.shape else v for k, v in state.items()})
    return net.eval()


def autograd_reference(net: torch.nn.Module, layer: str, acts: np.ndarray, target: int,
                       input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(logits, d logits[target] / d layer) with the layer's output set to ``acts``."""
    tensor = torch.from_numpy(acts.copy()).requires_grad_(True)
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda _m, _a, _o: tensor)
    try:
        logits = net(torch.zeros(1, *input_shape))
    finally:
        handle.remove()
    logits[0, target].backward()
    assert tensor.grad is not None
    return logits.detach().numpy(), tensor.grad.numpy()


def torch_map(acts: torch.Tensor, grad: torch.Tensor, size: Sequence[int], per_position: bool) -> np.ndarray:
    """Grad-CAM as pytorch-grad-cam computes it (ReLU, bilinear upsampling, / max), with
    channel weights (classic) or position weights (HiResCAM)."""
    weighted = grad * acts if per_position else grad.mean(dim=(2, 3), keepdim=True) * acts
    cam = F.relu(weighted.sum(dim=1, keepdim=True))
    up = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    peak = float(up.max())
    return (up / peak).numpy() if peak > 0 else up.numpy() * 0


def check_parity(path: Path, metadata: dict, images: np.ndarray) -> list[str]:
    model = onnx.load(str(path / "model.onnx"))
    described = describe("model", parse_metadata(metadata), model)
    net = torch_net(metadata, model)
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = InputSpec.from_recipe(InputRecipe.model_validate(metadata["input"]))
    explainer = Explainer(described, max_passes=100)
    exact = list(described.layers_for(Method.GRAD_CAM))
    assert exact == list(described.layers_for(Method.HIRES_CAM))
    assert exact, "grad-cam should be exact at the deepest layers of every trained architecture"

    async def forward(batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        return list(session.run(list(outputs), {"input": batch}))

    for raw in images:
        x = preprocess(Image.fromarray(raw), spec)[None]
        for layer in exact:
            logits, acts = session.run(["logits", layer], {"input": x})
            for target in (int(logits.argmax()), int(logits.argmin())):
                torch_logits, reference = autograd_reference(net, layer, acts, target, described.input_shape)
                np.testing.assert_allclose(torch_logits, logits, atol=TOLERANCE * max(1.0, np.abs(logits).max()))
                head = described.grad_head(layer)
                assert head is not None
                _, gradient = head.gradient(acts, target)
                scale = max(float(np.abs(reference).max()), 1e-12)
                assert float(np.abs(gradient - reference).max()) <= TOLERANCE * scale, layer
                # Each served map = PyTorch's (autograd's gradient): grad-cam is classic
                # Grad-CAM (channel weights), hires-cam weighs each position.
                size = described.input_shape[1:]
                a = torch.from_numpy(acts)
                for method, per_position in (("grad-cam", False), ("hires-cam", True)):
                    plan = explainer.plan(ExplainRequest(method=method, layer=layer, target=target,
                                                         faithfulness=False))
                    result = asyncio.run(explainer.run(plan, x, forward))
                    expected = torch_map(a, torch.from_numpy(reference), size, per_position)
                    np.testing.assert_allclose(result.map, expected, atol=TOLERANCE, err_msg=f"{method} {layer}")
    return exact


def test_grad_cam_matches_autograd_on_the_trained_tinyvgg(digits_artifact: ExportedModel) -> None:
    layers = check_parity(digits_artifact.path, digits_artifact.metadata, digits_artifact.images[:4])
    assert layers == ["features.8", "features.9"]


@pytest.mark.slow
@pytest.mark.parametrize("arch, size, layers", [
    ("lenet", 32, ["features.4", "features.5"]),
    ("alexnet-small", 32, ["features.11", "features.12"]),
    ("resnet18", 64, ["layer4"]),  # layer4 is 2 x 2 at 64 px (1 x 1, no map, at 32)
])
def test_grad_cam_matches_autograd_on_other_architectures(tmp_path: Path, digits_artifact: ExportedModel,
                                                          arch: str, size: int, layers: list[str]) -> None:
    result = run_cli(["--arch", arch, "--epochs", "0", "--size", size, size, "--out", tmp_path,
                      "--max-train-samples", "32", "--max-val-samples", "8", "--parity-images", "2", "--quiet"])
    assert result.rc == 0, result.stderr
    metadata = json.loads((result.written / "metadata.json").read_text())
    assert check_parity(result.written, metadata, digits_artifact.images[:2]) == layers
