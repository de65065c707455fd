"""``python -m service`` / ``convscope-serve``: run the server with uvicorn.

Every setting is an environment variable (``CONVSCOPE_*``) and a flag (``--max-batch-size``
for ``CONVSCOPE_MAX_BATCH_SIZE``); a flag wins. Settings are validated here, before any
worker starts, so a bad value fails at once with a clear message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ByteSize, ValidationError
from pydantic_settings import SettingsError

from service.settings import Settings

ENV_PREFIX = "CONVSCOPE_"


def parser() -> argparse.ArgumentParser:
    """One flag per setting, documented by the setting's own docstring."""
    out = argparse.ArgumentParser(prog="convscope-serve", description=(__doc__ or "").splitlines()[0],
                                  allow_abbrev=False)
    for name, field in Settings.model_fields.items():
        env = ENV_PREFIX + name.upper()
        help_text = " ".join((field.description or "").split()).replace("``", "").replace("%", "%%")
        out.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="VALUE",
                         help=f"{help_text} [{env}; default: {_shown(field.get_default(call_default_factory=True))}]")
    return out


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, ByteSize):
        return default.human_readable(decimal=False)
    return str(default)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for key, value in vars(args).items():
        if value is not None:
            # Through the environment, so every uvicorn worker process sees the same settings.
            os.environ[ENV_PREFIX + key.upper()] = value
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2

    from service.app import check_startup
    from service.http.server import serve

    try:
        options = check_startup(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve(options)


if __name__ == "__main__":
    sys.exit(main())
