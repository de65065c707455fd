"""``python -m service`` / ``convscope-serve``: run the server with uvicorn.

Command-line flags override the environment (``CONVSCOPE_*``); settings are validated
here, before any worker starts, so a bad value fails at once with a clear message.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convscope-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="interface to listen on (CONVSCOPE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (CONVSCOPE_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (CONVSCOPE_WORKERS, default 1)")
    parser.add_argument("--model-repository", help="model repository (CONVSCOPE_MODEL_REPOSITORY, default ./models)")
    parser.add_argument("--log-level", help="critical|error|warning|info|debug (CONVSCOPE_LOG_LEVEL)")
    args = parser.parse_args(argv)
    for key, value in vars(args).items():
        if value is not None:
            # Through the environment, so every uvicorn worker process sees the same settings.
            os.environ[f"CONVSCOPE_{key.upper()}"] = str(value)

    from service.server import serve
    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
