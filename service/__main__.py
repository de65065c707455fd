"""``python -m service`` / ``convscope-serve``: run the server with uvicorn.

Every setting is an environment variable (``CONVSCOPE_*``) and a flag (``--max-batch-size``
for ``CONVSCOPE_MAX_BATCH_SIZE``); a flag wins. Settings are validated here, before any
worker starts, so a bad value fails at once with a clear message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

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

    import uvicorn

    from service.app import check_startup, create_app
    from service.http_limits import uvicorn_options, worker_uvicorn_options

    try:
        check_startup(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.workers == 1:
        # Not uvicorn.run: service.drain handles SIGTERM (readiness 503, requests answered, exit 0).
        from service import drain

        app = create_app(settings)
        drain.serve(app, uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                                        access_log=False, timeout_graceful_shutdown=10,
                                        **uvicorn_options(settings)))
    else:
        # Workers are separate processes: Prometheus values must be pooled on disk.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="convscope-metrics-"))
        uvicorn.run("service.app:create_app_from_env", factory=True, workers=settings.workers,
                    host=settings.host, port=settings.port, log_level=settings.log_level,
                    access_log=False, timeout_graceful_shutdown=10, **worker_uvicorn_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
