"""Model lifecycle figures (issue 10): reload under load, memory over load/unload cycles, drain.

    .venv/bin/python -m benchmarks.lifecycle                 # all three; AlexNet exported once
    .venv/bin/python -m benchmarks.lifecycle --cycles 20 --only memory

1. **reload under load**: the service polls its repository every 0.25 s while clients send
   predictions back to back; a new version is published the way the export stage writes one
   (complete in a hidden directory, then one rename). Reported: requests, non-2xx answers,
   seconds from the rename to the first answer from the new version.
2. **memory over cycles**: AlexNet at 224 (untrained, ``--epochs 0``) unloaded and loaded
   through the repository API ``--cycles`` times, one prediction per cycle; the server's
   RSS (``/proc/<pid>/status`` VmRSS) after each. Reported: RSS with the model loaded at
   the start and after each cycle, the growth from cycle 1 to the last.
3. **drain**: clients sending predictions, one upload left half-sent (in flight for sure),
   then SIGTERM. Reported: requests in flight at the signal (the server's log says), client
   requests lost (a reset or a timeout), answers after the signal, seconds to exit, exit code.

Timings depend on the machine and on what else runs on it: they are figures, not tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.images import write_body
from service.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-0123456789abcdef"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def export(out: Path, arch: str, name: str, *extra: str) -> Path:
    """``out/<name>/<version>``, exported once (reused while it is there)."""
    existing = sorted((out / name).glob("*/metadata.json"))
    if existing:
        return existing[-1].parent
    subprocess.run([sys.executable, "-m", "model_export", "--arch", arch, "--out", str(out), "--name", name,
                    "--quiet", *extra], check=True, cwd=ROOT)
    return sorted((out / name).glob("*/metadata.json"))[-1].parent


def serve(repository: Path, logs: Path, **settings: Any) -> ServerProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env.update({f"CONVSCOPE_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "service", "--port", str(port), "--model-repository", str(repository)]
    return ServerProcess(command, port=port, env=env, log=logs, timeout=300)


def predict(client: httpx.Client, model: str, body: bytes, content_type: str) -> httpx.Response:
    return client.post(f"/v1/models/{model}/predict", content=body, headers={"content-type": content_type})


def reload_under_load(work: Path, clients: int, seconds: float) -> dict[str, Any]:
    repository = work / "reload"
    shutil.rmtree(repository, ignore_errors=True)
    first = export(work / "export", "tinyvgg", "digits-tinyvgg")
    (repository / "digits-tinyvgg").mkdir(parents=True)
    shutil.copytree(first, repository / "digits-tinyvgg" / "1")
    body_path, content_type = write_body(work / "bodies", "digits", 1, (28, 28))
    body = body_path.read_bytes()
    results: list[tuple[float, int, int | None]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = predict(client, "digits-tinyvgg", body, content_type)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                results.append((time.monotonic(), r.status_code, r.json().get("version") if r.is_success else None))

    with serve(repository, work / "logs" / "reload.log", repository_poll_seconds=0.25) as server:
        threads = [threading.Thread(target=client_loop) for _ in range(clients)]
        for t in threads:
            t.start()
        time.sleep(seconds / 2)
        staging = repository / ".staging-2"
        shutil.copytree(first, staging)
        published = time.monotonic()
        os.rename(staging, repository / "digits-tinyvgg" / "2")
        time.sleep(seconds / 2)
        stop.set()
        for t in threads:
            t.join()
    switched = min((at for at, _, v in results if v == 2), default=None)
    return {
        "clients": clients, "requests": len(results), "errors": len(errors),
        "non_2xx": sum(1 for _, s, _ in results if not 200 <= s < 300),
        "answers_from_v1_after_publish": sum(1 for at, _, v in results if v == 1 and at > published),
        "seconds_to_switch": None if switched is None else round(switched - published, 3),
    }


def alexnet_repository(work: Path, name: str) -> tuple[Path, bytes, str]:
    """A fresh repository ``work/name`` holding AlexNet at 224 as version 1 (exported once),
    and a 224 px body for it with its content type."""
    repository = work / name
    shutil.rmtree(repository, ignore_errors=True)
    exported = export(work / "export", "alexnet", "alexnet224", "--epochs", "0")
    (repository / "alexnet224").mkdir(parents=True)
    shutil.copytree(exported, repository / "alexnet224" / "1")
    body_path, content_type = write_body(work / "bodies", "alexnet", 3, (224, 224))
    return repository, body_path.read_bytes(), content_type


def memory_over_cycles(work: Path, cycles: int) -> dict[str, Any]:
    repository, body, content_type = alexnet_repository(work, "memory")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with serve(repository, work / "logs" / "memory.log", api_keys=f"{ADMIN_KEY}:admin") as server:
        with httpx.Client(base_url=server.url, timeout=120, headers=admin) as client:
            predict(client, "alexnet224", body, content_type).raise_for_status()
            start = rss_kib(server.pid)
            after: list[int] = []
            unloaded: list[int] = []
            for _ in range(cycles):
                client.post("/v2/repository/models/alexnet224/unload").raise_for_status()
                unloaded.append(rss_kib(server.pid))
                client.post("/v2/repository/models/alexnet224/load").raise_for_status()
                predict(client, "alexnet224", body, content_type).raise_for_status()
                after.append(rss_kib(server.pid))
    return {
        "cycles": cycles, "rss_mib_loaded_at_start": round(start / 1024, 1),
        "rss_mib_after_each_cycle": [round(k / 1024, 1) for k in after],
        "rss_mib_unloaded_each_cycle": [round(k / 1024, 1) for k in unloaded],
        "growth_mib_cycle1_to_last": round((after[-1] - after[0]) / 1024, 1),
        "growth_mib_start_to_last": round((after[-1] - start) / 1024, 1),
        "max_mib": round(max(after) / 1024, 1),
    }


def drain(work: Path, clients: int) -> dict[str, Any]:
    repository, body, content_type = alexnet_repository(work, "drain")
    answers: list[tuple[float, int]] = []
    lost: list[str] = []
    log = work / "logs" / "drain.log"
    server = serve(repository, log, drain_seconds=20)
    port = int(server.url.rsplit(":", 1)[1])

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while True:
                try:
                    r = predict(client, "alexnet224", body, content_type)
                except httpx.HTTPError as exc:
                    lost.append(repr(exc))
                    return
                answers.append((time.monotonic(), r.status_code))
                if r.status_code != 200:
                    return

    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(f"POST /v1/models/alexnet224/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    slow.sendall(body[100:])
    response = http.client.HTTPResponse(slow)
    response.begin()
    slow_status = response.status
    slow.close()
    for t in threads:
        t.join()
    code = server.process.wait(60)
    exited = time.monotonic() - signalled
    in_flight = re.search(r"draining: readiness is 503; (\d+) request\(s\) in flight", server.logs())
    after = [s for at, s in answers if at > signalled]
    return {
        "clients": clients, "in_flight_at_signal": int(in_flight.group(1)) if in_flight else None,
        "client_requests": len(answers) + len(lost), "lost": len(lost),
        "answered_200_after_signal": after.count(200), "refused_503_after_signal": after.count(503),
        "half_sent_upload_status": slow_status, "seconds_to_exit": round(exited, 2), "exit_code": code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "lifecycle")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--only", choices=["reload", "memory", "drain"])
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    if args.only in (None, "reload"):
        figures["reload_under_load"] = reload_under_load(args.work, args.clients, seconds=6.0)
        print(json.dumps({"reload_under_load": figures["reload_under_load"]}), flush=True)
    if args.only in (None, "memory"):
        figures["memory_over_cycles"] = memory_over_cycles(args.work, args.cycles)
        print(json.dumps({"memory_over_cycles": figures["memory_over_cycles"]}), flush=True)
    if args.only in (None, "drain"):
        figures["drain"] = drain(args.work, args.clients)
        print(json.dumps({"drain": figures["drain"]}), flush=True)
    (args.work / "figures.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
