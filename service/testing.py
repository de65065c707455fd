"""A server in a subprocess on a free loopback port, for integration tests and benchmarks.

``ServerProcess`` starts a command, waits until a URL on it answers 200 (or the process
dies, or time runs out, each with the end of its log in the error), and stops it by pid:
SIGTERM, then SIGKILL if it will not go. Standard library only, so any test suite can use
it against ``python -m service``.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``command`` running with its output in ``log``, ready once ``url + ready_path`` is 200."""

    def __init__(self, command: Sequence[str], *, port: int, log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, ready_path: str = "/readyz", timeout: float = 60.0) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = subprocess.Popen(list(command), env=dict(env) if env is not None else None, cwd=cwd,
                                            stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(ready_path, timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_ready(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            if self._answers(path):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the server was not ready within {timeout:.0f} s:\n{self.logs()[-3000:]}")

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20.0) -> int:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
