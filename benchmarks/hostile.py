"""Issue 11's hostile clients, by hand: every case of the issue against a real server, with
the server's RSS and the latency of a well-behaved ``/predict`` client during each attack.

    python -m benchmarks.hostile --repository models                 # every case, ~4 minutes
    python -m benchmarks.hostile --repository models --cases headers,idle
    python -m benchmarks.hostile --repository models --code-root /tmp/old-checkout   # the old code

Each case starts a fresh ``python -m service`` (from ``--code-root``, default this checkout)
on a free loopback port with the model repository given, runs the attack, and reports what
the attackers got (statuses), the server's RSS (before, the peak sampled every 20 ms during
the attack, after) and the ``/predict`` probe's latencies during the attack (one client,
one request every 100 ms). ``--out`` writes the results as JSON. The repository must hold
one model taking grey 28 px images (``python -m model_export --out models``: digits-tinyvgg).

Timings on a shared machine are skewed by whatever else runs: compare runs made one after
the other, and read the order of magnitude.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import resource
import select
import socket
import statistics
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def log(message: str) -> None:
    print(f"[hostile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def digit_png() -> bytes:
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:16] = 255  # a "1"
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def png16(side: int) -> bytes:
    """A 16-bit greyscale PNG of side x side, almost all one value: a few KB on the wire,
    side * side * 2 bytes once decoded (and more while converted to 8 bits). Written by hand:
    zlib compresses the constant rows to nothing, whatever Pillow would choose."""
    row = b"\x00" + b"\x12\x34" * side  # filter byte 0, then big-endian samples
    raw = zlib.compress(row * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


# -- the server and what is watched while it is attacked -----------------------------------


class Server(ServerProcess):
    def __init__(self, args: argparse.Namespace, name: str, settings: dict[str, str],
                 nofile: int | None = None) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
        env.update(settings)
        env["PYTHONPATH"] = str(args.code_root)
        self.nofile = nofile
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                   "--model-repository", str(args.repository.resolve())]
        if nofile is not None:  # prlimit execs the command: the server keeps its pid
            command = ["prlimit", f"--nofile={nofile}:{nofile}", *command]
        self.host, self.port = "127.0.0.1", port
        super().__init__(command, port=port, env=env, cwd=args.code_root, timeout=120,
                         log=args.work / f"{name}.log")

    def rss_mb(self) -> float:
        return _status_kb(self.pid, "VmRSS") / 1024


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Watch:
    """RSS and /predict latency while an attack runs."""

    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    probe_ms: list[float] = field(default_factory=list)
    probe_failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ms = sorted(self.probe_ms)
        return {
            "rss_mb": [round(self.rss_before_mb), round(self.rss_peak_mb), round(self.rss_after_mb)],
            "predict_ms": {
                "n": len(ms),
                "median": round(statistics.median(ms), 1) if ms else None,
                "max": round(ms[-1], 1) if ms else None,
            },
            "predict_failures": self.probe_failures[:5] + ([f"... {len(self.probe_failures)} in all"]
                                                           if len(self.probe_failures) > 5 else []),
        }


@contextmanager
def watching(server: Server, probe: bool = True, settle_s: float = 1.0, fresh: bool = False) -> Iterator[Watch]:
    """RSS sampled and /predict probed while the block runs; ``fresh``: a new connection
    for every probe request (to see whether the server still accepts any)."""
    watch = Watch(rss_before_mb=server.rss_mb())
    stop = threading.Event()
    image = digit_png()

    def sample_rss() -> None:
        while not stop.is_set():
            watch.rss_peak_mb = max(watch.rss_peak_mb, server.rss_mb())
            stop.wait(0.02)

    def probe_predict() -> None:
        connection: http.client.HTTPConnection | None = None
        while not stop.is_set():
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
                connection.request("POST", "/predict", body=image, headers={"content-type": "image/png"})
                # (a fresh connection is opened above whenever the last one was closed)
                response = connection.getresponse()
                response.read()
                if fresh:
                    connection.close()
                    connection = None
                if response.status == 200:
                    watch.probe_ms.append((time.perf_counter() - started) * 1000)
                else:
                    watch.probe_failures.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                watch.probe_failures.append(f"{type(exc).__name__} after {time.perf_counter() - started:.1f} s")
                if connection is not None:
                    connection.close()
                connection = None
            stop.wait(0.1)
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=sample_rss, daemon=True)]
    if probe:
        threads.append(threading.Thread(target=probe_predict, daemon=True))
    for t in threads:
        t.start()
    try:
        yield watch
    finally:
        stop.set()
        for t in threads:
            t.join(65)
        time.sleep(settle_s)
        watch.rss_after_mb = server.rss_mb()


def request(server: Server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 60) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def status_of(call: Callable[[], tuple[int, bytes]]) -> str:
    try:
        return str(call()[0])
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__


def metrics_lines(server: Server, prefix: str) -> list[str]:
    _, body = request(server, "GET", "/metrics")
    return [line for line in body.decode().splitlines() if line.startswith(prefix)]


def count_status(server: Server, status: str) -> float:
    total = 0.0
    for line in metrics_lines(server, "convscope_requests_total"):
        if f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the cases -----------------------------------------------------------------------------


def case_versions(args: argparse.Namespace) -> dict[str, Any]:
    """Item 1: versions that str.isdigit() accepts and int() refuses, on both APIs."""
    model = args.model
    bad = {"superscript two": "%C2%B2", "5000 digits": "1" * 5000, "arabic-indic one": "%D9%A1",
           "zero": "0", "negative": "-1", "ten digits": "1" * 10}
    with Server(args, "versions", {}) as server:
        out: dict[str, Any] = {}
        for label, version in bad.items():
            calls = {
                "v2 metadata": ("GET", f"/v2/models/{model}/versions/{version}"),
                "v2 ready": ("GET", f"/v2/models/{model}/versions/{version}/ready"),
                "v2 infer": ("POST", f"/v2/models/{model}/versions/{version}/infer"),
                "v1 metadata": ("GET", f"/v1/models/{model}/versions/{version}"),
                "v1 predict": ("POST", f"/v1/models/{model}/versions/{version}/predict"),
                "v1 layers": ("GET", f"/v1/models/{model}/layers?version={version}"),
                "v1 filters": ("GET", f"/v1/models/{model}/layers/features.0/filters.png?version={version}"),
            }
            out[label] = {name: status_of(lambda m=m, p=p: request(server, m, p, b"{}" if m == "POST" else b"",
                                                                    {"content-type": "application/json"}))
                          for name, (m, p) in calls.items()}
        return out


def case_json_numbers(args: argparse.Namespace) -> dict[str, Any]:
    """Item 2: a JSON number of 5000 digits."""
    big = "1" * 5000
    v2 = f"/v2/models/{args.model}/infer"
    bodies = {
        "v1 image": ("/predict", f'{{"image": {big}}}'),
        "v2 id": (v2, f'{{"id": {big}, "inputs": []}}'),
        "v2 data": (v2, f'{{"inputs": [{{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", '
                        f'"data": [{big}]}}]}}'),
    }
    with Server(args, "json-numbers", {}) as server:
        return {label: status_of(lambda p=p, b=b: request(server, "POST", p, b.encode(),
                                                            {"content-type": "application/json"}))
                for label, (p, b) in bodies.items()}


def case_metrics(args: argparse.Namespace) -> dict[str, Any]:
    """Item 3: unknown-model requests and the size of /metrics."""
    n = args.metrics_requests
    with Server(args, "metrics", {}) as server:
        before = len(request(server, "GET", "/metrics")[1])
        statuses: dict[int, int] = {}
        with watching(server, probe=False) as flood:
            def worker(offset: int) -> None:
                connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
                for i in range(offset, n, 4):
                    connection.request("GET", f"/v2/models/x{i}y/ready")
                    response = connection.getresponse()
                    response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                connection.close()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(worker, range(4)))
        started = time.perf_counter()
        size = len(request(server, "GET", "/metrics")[1])
        scrape_s = time.perf_counter() - started
        with watching(server) as during:
            for _ in range(3):
                request(server, "GET", "/metrics")
        return {"requests": n, "statuses": statuses, "metrics_bytes": [before, size],
                "scrape_s": round(scrape_s, 3), "rss_mb": flood.summary()["rss_mb"][:1] + [round(server.rss_mb())],
                "during_scrapes": during.summary()}


def _send_head(server: Server, first_line: bytes, header_bytes: int, chunk: int = 64 * 1024) -> dict[str, Any]:
    """Send a request line and a header of ``header_bytes``, then the blank line, and read
    the answer; note how much was sent before the server answered or closed."""
    return _send_endless(server, first_line + b"X-Pad: ", header_bytes, b"\r\n\r\n", chunk)


def _send_endless(server: Server, start: bytes, size: int, end: bytes, chunk: int = 64 * 1024) -> dict[str, Any]:
    """Send ``start``, then ``size`` bytes of "a", then ``end``, stopping early when the
    server answers; what it answered, and after how much."""
    sock = socket.create_connection((server.host, server.port), timeout=120)
    sent = 0
    outcome = "all sent"
    try:
        sock.sendall(start)
        while sent < size:
            if select.select([sock], [], [], 0)[0]:
                outcome = f"answered after {sent // 1024} KiB"
                break
            sock.sendall(b"a" * chunk)
            sent += chunk
        else:
            sock.sendall(end)
    except OSError as exc:
        outcome = f"{type(exc).__name__} after {sent // 1024} KiB"
    try:
        answer = sock.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError as exc:
        answer = type(exc).__name__
    sock.close()
    return {"sent": outcome, "answer": answer}


def case_headers(args: argparse.Namespace) -> dict[str, Any]:
    """Item 4: 32 MB of headers on one and on four connections, and a 32 MB URL."""
    size = args.header_mb * MiB
    out: dict[str, Any] = {}
    with Server(args, "headers-1", {}) as server:
        with watching(server) as w:
            out["one connection"] = _send_head(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n", size)
        out["one connection"].update(w.summary())
    with Server(args, "headers-4", {}) as server:
        with watching(server) as w, ThreadPoolExecutor(4) as pool:
            out["four connections"] = list(pool.map(
                lambda _: _send_head(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n", size), range(4)))
        out["four"] = w.summary()
    with Server(args, "url", {}) as server:
        with watching(server) as w:
            sent = _send_endless(server, b"GET /", size, b" HTTP/1.1\r\nHost: x\r\n\r\n")
        out["url"] = {**sent, **w.summary()}
    return out


def case_idle(args: argparse.Namespace) -> dict[str, Any]:
    """Item 5: sockets that send nothing, and sockets that send a header byte a second, with
    the server's open-file limit at 1024 as in a default container."""
    out: dict[str, Any] = {}
    for label, trickle in (("silent", False), ("a byte a second", True)):
        with Server(args, f"idle-{'trickle' if trickle else 'silent'}", {}, nofile=1024) as server:
            sockets: list[socket.socket] = []
            with watching(server, fresh=True) as w:
                for _ in range(args.idle_sockets):
                    try:
                        s = socket.create_connection((server.host, server.port), timeout=5)
                        s.setblocking(False)
                        sockets.append(s)
                    except OSError:
                        break
                head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
                deadline = time.monotonic() + args.idle_hold_s
                position = 0
                while time.monotonic() < deadline:
                    if trickle and position < len(head):
                        for s in sockets:
                            try:
                                s.send(head[position:position + 1])
                            except OSError:
                                pass
                        position += 1
                    time.sleep(1.0)
            still_open = 0
            for s in sockets:
                try:
                    s.recv(1)  # b"" (closed) or an answer (408): either way the server let go
                except BlockingIOError:
                    still_open += 1  # nothing to read and not closed: the server still holds it
                except OSError:
                    pass
                s.close()
            out[label] = {"opened": len(sockets), f"still open after {args.idle_hold_s:.0f} s": still_open,
                          **w.summary()}
    return out


def _json_flood(server: Server, path: str, clients: int, body: bytes) -> dict[str, Any]:
    with watching(server) as w, ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(lambda _: status_of(lambda: request(
            server, "POST", path, body, {"content-type": "application/json"}, timeout=120)), range(clients)))
    return {"statuses": sorted(set(statuses)), **w.summary()}


def case_json_structure(args: argparse.Namespace) -> dict[str, Any]:
    """Item 6: 8 MB of [[],[],...] on v1 (1 and 4 clients) and on v2 (16 clients)."""
    body = b"[" + b",".join([b"[]"] * (8 * MiB // 3 - 1)) + b"]"
    v2 = f"/v2/models/{args.model}/infer"
    out = {}
    with Server(args, "json-v1", {}) as server:
        out["v1, 1 client"] = _json_flood(server, "/predict", 1, body)
        out["v1, 4 clients"] = _json_flood(server, "/predict", 4, body)
    with Server(args, "json-v2", {}) as server:
        out["v2, 16 clients"] = _json_flood(server, v2, 16, body)
    return out


def case_decode(args: argparse.Namespace) -> dict[str, Any]:
    """Item 7: a 16-bit PNG that decodes to hundreds of MB, alone, 16 in one request, and 32
    concurrent requests of 64."""
    image = png16(args.png_side)
    out: dict[str, Any] = {"png_bytes": len(image), "pixels": args.png_side ** 2}

    def multipart(count: int) -> tuple[bytes, dict[str, str]]:
        boundary = "hostileboundary"
        parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.png\"\r\n"
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n" for i in range(count)]
        return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
            "content-type": f"multipart/form-data; boundary={boundary}"}

    with Server(args, "decode-1", {}) as server:
        with watching(server) as w:
            started = time.perf_counter()
            status = status_of(lambda: request(server, "POST", "/predict", image, {"content-type": "image/png"}))
        out["one image"] = {"status": status, "seconds": round(time.perf_counter() - started, 2), **w.summary()}
    with Server(args, "decode-16", {}) as server:
        body, headers = multipart(16)
        with watching(server, settle_s=2) as w:
            status = status_of(lambda: request(server, "POST", "/predict", body, headers, timeout=300))
        out["16 in one request"] = {"status": status, **w.summary()}
    with Server(args, "decode-32x64", {}) as server:
        body, headers = multipart(64)
        statuses: list[str] = []
        with watching(server, settle_s=2) as w:
            started = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                futures = [pool.submit(lambda: status_of(lambda: request(
                    server, "POST", "/predict", body, headers, timeout=args.decode_wait_s))) for _ in range(32)]
                for f in futures:
                    statuses.append(f.result())
            elapsed = time.perf_counter() - started
        out["32 requests of 64"] = {"statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
                                    "seconds": round(elapsed, 1), **w.summary()}
    return out


def case_decode_budget(args: argparse.Namespace) -> dict[str, Any]:
    """Item 7, within the per-request limit: 32 concurrent requests of two 16-bit PNGs of
    side/2 (a quarter of the pixels each), which only the budget over all requests bounds."""
    image = png16(args.png_side // 2)
    boundary = "hostileboundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image + b"\r\n"
    body = part * 2 + f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with Server(args, "decode-budget", {}) as server:
        with watching(server, settle_s=2) as w:
            started = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(lambda _: status_of(lambda: request(
                    server, "POST", "/predict", body, headers, timeout=args.decode_wait_s)), range(32)))
            elapsed = time.perf_counter() - started
        return {"pixels": (args.png_side // 2) ** 2, "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
                "seconds": round(elapsed, 1), **w.summary()}


def case_disconnect(args: argparse.Namespace) -> dict[str, Any]:
    """Item 8: clients that connect, send part of a body and reset, for a while; and a
    malformed chunked body."""
    with Server(args, "disconnect", {}) as server:
        log_before = server.log.stat().st_size
        stop = threading.Event()
        storms = [0]

        def storm() -> None:
            while not stop.is_set():
                try:
                    s = socket.create_connection((server.host, server.port), timeout=5)
                    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                              b"Content-Length: 1000000\r\n\r\n" + b"\x89PNG" + b"\0" * 20000)
                    time.sleep(0.05)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
                    s.close()
                    storms[0] += 1
                except OSError:
                    pass

        with watching(server) as w:
            threads = [threading.Thread(target=storm, daemon=True) for _ in range(args.storm_clients)]
            for t in threads:
                t.start()
            time.sleep(args.storm_s)
            stop.set()
            for t in threads:
                t.join(10)
        time.sleep(1)
        out: dict[str, Any] = {
            "resets": storms[0], "log_bytes": server.log.stat().st_size - log_before,
            "tracebacks": server.logs().count("Traceback"), "counted 500": count_status(server, "500"),
            "counted 499": count_status(server, "499"), **w.summary(),
        }
        before_400 = count_status(server, "400")
        before_500 = count_status(server, "500")
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nZZZ\r\n")
        try:
            answer = sock.recv(200).split(b"\r\n", 1)[0].decode()
        except OSError as exc:
            answer = type(exc).__name__
        sock.close()
        time.sleep(0.5)
        out["malformed chunked"] = {"answer": answer, "counted 400": count_status(server, "400") - before_400,
                                    "counted 500": count_status(server, "500") - before_500}
        return out


CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "versions": case_versions,
    "json-numbers": case_json_numbers,
    "metrics": case_metrics,
    "headers": case_headers,
    "idle": case_idle,
    "json-structure": case_json_structure,
    "decode": case_decode,
    "decode-budget": case_decode_budget,
    "disconnect": case_disconnect,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True, help="model repository (one grey 28 px model)")
    parser.add_argument("--model", default="digits-tinyvgg")
    parser.add_argument("--code-root", type=Path, default=ROOT, help="checkout whose `python -m service` runs")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma separated, of: {', '.join(CASES)}")
    parser.add_argument("--work", type=Path, default=Path("/tmp/convscope-hostile"), help="server logs")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--metrics-requests", type=int, default=20_000)
    parser.add_argument("--header-mb", type=int, default=32)
    parser.add_argument("--idle-sockets", type=int, default=1100)
    parser.add_argument("--idle-hold-s", type=float, default=20.0)
    parser.add_argument("--png-side", type=int, default=6300, help="side of the 16-bit PNG (6300: 39.7 MP)")
    parser.add_argument("--decode-wait-s", type=float, default=45.0)
    parser.add_argument("--storm-clients", type=int, default=200)
    parser.add_argument("--storm-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.code_root = args.code_root.resolve()
    # The idle case needs more client sockets than the default 1024 here.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results: dict[str, Any] = {"code_root": str(args.code_root)}
    for name in args.cases.split(","):
        log(f"case {name}")
        started = time.perf_counter()
        results[name] = CASES[name](args)
        log(f"case {name} done in {time.perf_counter() - started:.0f} s: {json.dumps(results[name])}")
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
