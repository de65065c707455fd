"""Settings are read once, into one options object per subsystem, and every setting reaches
the code it is for."""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import service
from service.inference.preprocessing import InputSpec, decode, preprocess
from service.models.repository import load_artifact, scan
from service.models.scores import softmax
from service.options import ServiceOptions
from service.settings import Settings
from tests.support.artifacts import write_artifact
from tests.support.services import serving

KEY = "0123456789abcdef-key"
# One value unlike the default for every setting (ValueError: the setting is judged, and
# refused, where it is read).
CHANGED: dict[str, Any] = {
    "model_repository": Path("/elsewhere"), "host": "0.0.0.0", "port": 9000, "workers": 2, "log_level": "debug",
    "default_model": "m", "default_precision": "float32", "providers": ["NoSuchExecutionProvider"], "intra_op_threads": 3, "inter_op_threads": 3,
    "ort_allow_spinning": False, "max_batch_size": 7, "max_queue_delay_ms": 3.0, "batch_arrival_wait_ms": 1.0,
    "max_queue_size": 9, "max_body_bytes": 4096, "max_image_pixels": 77, "max_images_per_request": 5,
    "max_feature_map_bytes": 8192, "preprocess_threads": 2, "decode_budget_bytes": 600_000_000,
    "decode_budget_wait_s": 1.0, "max_request_decode_bytes": 5_000_000, "max_connections": 10,
    "max_header_bytes": 2048, "header_timeout_s": 1.0, "body_timeout_s": 1.0, "keep_alive_timeout_s": 9,
    "model_overrides": {"m": {"max_batch_size": 2}}, "repository_poll_seconds": 2.0,
    "api_keys_file": Path("/no/such/keys"), "api_keys": f"{KEY}:infer", "drain_seconds": 1.0,
    "model_name": "single", "max_explain_passes": 99, "full_resolution_decode": True, "metrics_require_key": True,
}


def test_the_table_covers_every_setting() -> None:
    assert sorted(CHANGED) == sorted(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_reaches_an_options_object(name: str) -> None:
    """Changing any one setting changes what some subsystem is given, or is refused with a
    message naming it: none is read and then dropped (CONVSCOPE_FULL_RESOLUTION_DECODE was)."""
    base = ServiceOptions.from_settings(Settings())
    extra = {"api_keys": f"{KEY}:admin"} if name == "metrics_require_key" else {}
    changed = Settings(**{name: CHANGED[name]}, **extra)
    try:
        options = ServiceOptions.from_settings(changed)
    except ValueError as exc:
        assert name.split("_")[-1].upper() in str(exc).upper() or "provider" in str(exc)
        return
    assert options != base


def test_metrics_require_key_reaches_the_access_policy() -> None:
    with_keys = ServiceOptions.from_settings(Settings(api_keys=f"{KEY}:admin"))
    required = ServiceOptions.from_settings(Settings(api_keys=f"{KEY}:admin", metrics_require_key=True))
    assert not with_keys.access.metrics_require_key and required.access.metrics_require_key


def test_only_the_options_read_the_settings() -> None:
    """Settings reach the service through ServiceOptions alone: no other module reads one
    (the CLI builds them, the app factory hands them on)."""
    readers = []
    for path in sorted(Path(service.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                      and isinstance(n.value, ast.Name) and n.value.id == "settings"}
        if "Settings" in names or attributes:
            readers.append((path.relative_to(Path(service.__file__).parent).as_posix(), sorted(attributes)))
    assert readers == [
        ("__main__.py", []),  # parses flags and the environment into Settings
        ("app.py", []),  # create_app(settings) -> ServiceOptions.from_settings
        ("options.py", sorted(Settings.model_fields)),
        ("settings.py", []),
    ]


def _jpeg(size: int) -> bytes:
    """A photo-sized image with detail at every scale, so decoding it reduced shows."""
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (size // 64, size // 64), dtype=np.uint8)
    pixels = np.kron(coarse, np.ones((64, 64), np.uint8)) ^ rng.integers(0, 60, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _exact_probabilities(directory: Path, image: bytes) -> np.ndarray:
    """The export stage's reference: the whole image decoded, one resample, the model run."""
    artifact = load_artifact(scan(directory)[0])
    spec = InputSpec.from_recipe(artifact.metadata.input, reducing_gap=None)
    tensor = preprocess(decode(image, max_pixels=10**8, spec=spec), spec)[None]
    session = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": tensor})
    return softmax(logits)[0]


def _served(repository: Path, image: bytes, **settings: Any) -> np.ndarray:
    with serving(model_repository=repository, **settings) as client:
        response = client.post("/predict?top_k=10", content=image, headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
    scores = np.zeros(3)
    for item in response.json()["predictions"]:
        scores[item["index"]] = item["probability"]
    return scores


def test_full_resolution_decode_takes_effect(tmp_path: Path) -> None:
    """CONVSCOPE_FULL_RESOLUTION_DECODE=true serves what the exact path computes; without
    it a 2048 px photo is decoded reduced, and the probabilities move."""
    write_artifact(tmp_path, "synthetic", 1, size=8, classes=3)
    image = _jpeg(2048)
    exact = _exact_probabilities(tmp_path, image)
    assert np.abs(_served(tmp_path, image, full_resolution_decode=True) - exact).max() < 1e-6
    assert np.abs(_served(tmp_path, image) - exact).max() > 1e-4
