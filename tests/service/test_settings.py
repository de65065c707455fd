from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.app import create_app
from service.inference.batching import BatchingOptions
from service.options import ServiceOptions
from service.settings import Settings
from tests.support.artifacts import write_artifact


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_MODEL_REPOSITORY", "/srv/models")
    monkeypatch.setenv("CONVSCOPE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("CONVSCOPE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("CONVSCOPE_MODEL_OVERRIDES", '{"big": {"max_batch_size": 2}}')
    settings = Settings()
    assert settings.model_repository == Path("/srv/models")
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    batching = ServiceOptions.from_settings(settings.model_copy(update={"providers": None})).batching
    assert batching.for_model("big") == BatchingOptions(2, 0.0, 256, 15.0)
    assert batching.for_model("other") == BatchingOptions(8, 0.0, 256, 15.0)


@pytest.mark.parametrize("field, value", [
    ("port", 70000), ("workers", 0), ("max_batch_size", 0), ("log_level", "loud"),
    ("model_overrides", {"m": {"max_batch": 3}}),
    ("max_request_decode_bytes", 2 * 1024**3),  # over the decode budget: could never be decoded
    ("header_timeout_s", 0), ("max_header_bytes", 100),
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


def test_log_level_and_byte_sizes_are_read_as_people_write_them() -> None:
    settings = Settings(log_level="INFO", max_body_bytes="8 MiB", max_feature_map_bytes="512KiB")  # type: ignore[arg-type]
    assert settings.log_level == "info"
    assert (settings.max_body_bytes, settings.max_feature_map_bytes) == (8 * 2**20, 512 * 2**10)
    with pytest.raises(ValidationError, match="byte unit"):
        Settings(max_body_bytes="8 parsecs")  # type: ignore[arg-type]


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True,
                          timeout=60, env=environment)


def test_every_setting_is_a_flag_with_its_docstring() -> None:
    result = serve("--help")
    assert result.returncode == 0
    for name, field in Settings.model_fields.items():
        assert f"--{name.replace('_', '-')} VALUE" in result.stdout
        assert f"CONVSCOPE_{name.upper()}" in result.stdout.replace("\n", "").replace(" ", "")
        assert field.description, f"setting {name} has no docstring"


def test_bad_json_in_a_setting_exits_2_without_a_traceback(tmp_path: Path) -> None:
    result = serve(env={"CONVSCOPE_MODEL_OVERRIDES": "not json"})
    assert result.returncode == 2
    assert "model_overrides" in result.stderr and "Traceback" not in result.stderr


def test_unknown_default_model_fails_at_start_naming_the_models(tmp_path: Path) -> None:
    write_artifact(tmp_path, "digits", 1)
    result = serve("--model-repository", str(tmp_path), "--default-model", "nope")
    assert result.returncode == 2
    assert "'nope' is not in the model repository" in result.stderr and "models there: digits" in result.stderr


def test_model_name_is_read_and_must_be_a_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_MODEL_NAME", "my-isvc")
    assert Settings().model_name == "my-isvc"
    with pytest.raises(ValidationError, match="model_name"):
        Settings(model_name="not a name/")
