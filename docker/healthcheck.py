"""Container health check: exit 0 when the service answers /readyz with 2xx, else 1.

Standard library only (the slim image has no curl). Reads the port the service listens
on from CONVSCOPE_PORT, like the service itself.
"""
import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("CONVSCOPE_PORT", "8000")
url = f"http://127.0.0.1:{port}/readyz"
try:
    with urllib.request.urlopen(url, timeout=float(os.environ.get("CONVSCOPE_HEALTHCHECK_TIMEOUT", "4"))) as resp:
        sys.exit(0 if 200 <= resp.status < 300 else 1)
except (urllib.error.URLError, OSError, ValueError) as exc:
    print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
