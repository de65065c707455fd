"""What the load benchmarks (ab.py, app_path.py, profile_load.py) serve and send: a
repository, one model in it, and the body every request carries."""

from __future__ import annotations

import argparse
from pathlib import Path

EXPECTED = '"predictions":['


def add_arguments(ap: argparse.ArgumentParser, *, expect: bool = True) -> None:
    """--repository, --model, --body, --content-type and (``expect``) --expect."""
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--body", type=Path, required=True)
    ap.add_argument("--content-type", default="image/png")
    if expect:
        ap.add_argument("--expect", default=EXPECTED, help="substring every answer must hold")
