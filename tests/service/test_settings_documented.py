"""Every setting is in the README's table and passed through by the compose stack."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Keys never travel in the compose file's environment (docker inspect shows it): they come
# from a file mounted as a secret (docker-compose.keys.yml) through CONVSCOPE_API_KEYS_FILE.
NOT_IN_COMPOSE = {"CONVSCOPE_API_KEYS"}


def names() -> set[str]:
    return {f"CONVSCOPE_{field.upper()}" for field in Settings.model_fields}


def test_the_readme_settings_table_lists_every_setting() -> None:
    rows = "\n".join(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `CONVSCOPE_"))
    listed = set(re.findall(r"`(CONVSCOPE_[A-Z_]+)`", rows))
    assert names() - listed == set()


def test_compose_passes_every_setting_but_the_keys_themselves() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    passed = set(re.findall(r"^\s+(CONVSCOPE_[A-Z_]+):", compose, re.M))
    assert names() - passed == NOT_IN_COMPOSE
    assert "CONVSCOPE_API_KEYS_FILE: /run/secrets/" in (ROOT / "docker-compose.keys.yml").read_text()
