from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_MODEL_REPOSITORY", "/srv/models")
    monkeypatch.setenv("CONVSCOPE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("CONVSCOPE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("CONVSCOPE_MODEL_OVERRIDES", '{"big": {"max_batch_size": 2}}')
    settings = Settings()
    assert settings.model_repository == Path("/srv/models")
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.batching_for("big") == (2, 0.0, 256, 15.0)
    assert settings.batching_for("other") == (8, 0.0, 256, 15.0)


@pytest.mark.parametrize("field, value", [
    ("port", 70000), ("workers", 0), ("max_batch_size", 0), ("log_level", "loud"),
    ("model_overrides", {"m": {"max_batch": 3}}),
])
def test_invalid_values_fail_at_start(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_unknown_execution_provider_names_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="available: .*CPUExecutionProvider"):
        create_app(Settings(model_repository=tmp_path, providers=["NoSuchExecutionProvider"]))


def test_cli_refuses_bad_settings_with_exit_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "service", "--port", "99999"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "port" in result.stderr


def test_model_name_is_read_and_must_be_a_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_MODEL_NAME", "my-isvc")
    assert Settings().model_name == "my-isvc"
    with pytest.raises(ValidationError, match="model_name"):
        Settings(model_name="not a name/")
