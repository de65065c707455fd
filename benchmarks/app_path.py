"""The event loop's CPU per request inside the app, without sockets (issue 23).

Drives the ASGI app that ``python -m service`` serves (same settings, models loaded, heap
frozen as a serving process does), in-process: ``--clients`` tasks on one uvloop loop each
send the same request over and over through the app's whole stack (middleware, routing,
parameters, the route, the handler, the batcher, the answer), with an ASGI receive/send that
stand in for uvicorn and the service's protocol (service/http/limits.py: what it puts in the
scope). No HTTP parsing, no socket, no load generator: what is left is the
Python path a change to the app moves, timed as the loop thread's own CPU (``thread_time``),
which a busy machine inflates far less than it moves requests per second.

    python -m benchmarks.app_path --repository MODELS --model digits-tinyvgg --body input.png

Prints CPU microseconds per request of the loop thread (the median of ``--repeats`` runs of
``--requests`` requests, after one warm-up run) and of the whole process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from typing import Any

import uvloop

from benchmarks import served
from service.app import create_app
from service.settings import Settings

try:  # what the service's HTTP protocol puts in every request's scope (older checkouts: nothing)
    from service.http.hangup import HANGUP, Hangup
except ImportError:
    HANGUP, Hangup = "", None  # type: ignore[assignment,misc]


def scope_for(path: str, query: str, content_type: str, size: int, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query.encode(), "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", content_type.encode()),
                    (b"content-length", str(size).encode()), (b"user-agent", b"app_path")],
        "state": state.copy(), "extensions": {}, **({HANGUP: Hangup()} if Hangup is not None else {}),
    }


async def one_request(app: Any, path: str, query: str, content_type: str, body: bytes,
                      state: dict[str, Any]) -> int:
    sent: list[dict[str, Any]] = []
    delivered = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # as uvicorn: nothing more until the client goes away
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope_for(path, query, content_type, len(body), state), receive, send)
    return int(sent[0]["status"])


async def drive(app: Any, args: argparse.Namespace, body: bytes, state: dict[str, Any], requests: int) -> float:
    """Loop-thread CPU seconds for ``requests`` requests from ``args.clients`` clients."""
    path = f"/v1/models/{args.model}/predict"
    left = requests
    statuses: list[int] = []

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            statuses.append(await one_request(app, path, args.query, args.content_type, body, state))

    started = time.thread_time()
    await asyncio.gather(*(client() for _ in range(args.clients)))
    spent = time.thread_time() - started
    if set(statuses) != {200}:
        raise SystemExit(f"answers other than 200: {sorted(set(statuses))}")
    return spent


async def main_async(args: argparse.Namespace) -> int:
    os.environ.setdefault("CONVSCOPE_LOG_LEVEL", "warning")
    app = create_app(Settings(model_repository=args.repository, max_batch_size=args.max_batch),
                     load_before_serving=True)
    body = args.body.read_bytes()
    async with app.router.lifespan_context(app) as state:
        gc.collect()
        gc.freeze()  # as service/__main__.py does once the app is up
        await drive(app, args, body, dict(state or {}), args.requests)  # warm-up
        loop_cpu, process_cpu = [], []
        for _ in range(args.repeats):
            p0 = time.process_time()
            loop_cpu.append(await drive(app, args, body, dict(state or {}), args.requests) / args.requests)
            process_cpu.append((time.process_time() - p0) / args.requests)
    print(f"{args.model} {args.clients} clients, {args.requests} requests x {args.repeats}: loop thread "
          f"{statistics.median(loop_cpu) * 1e6:.1f} us/request (min {min(loop_cpu) * 1e6:.1f}), process "
          f"{statistics.median(process_cpu) * 1e6:.1f} us/request; load average {os.getloadavg()[0]:.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    served.add_arguments(ap, expect=False)
    ap.add_argument("--query", default="", help="query string of every request, e.g. top_k=3")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-batch", type=int, default=16)
    args = ap.parse_args(argv)
    uvloop.install()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
