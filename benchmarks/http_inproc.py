"""The engine's own CPU per HTTP request, without sockets: a fake granian exchange in, the reply out.

    python benchmarks/http_inproc.py              # best of 7 rounds of 5000 requests
    python benchmarks/http_inproc.py --profile    # cProfile's own-time top of those requests

Drives ``HttpModule``'s request path (route match, body, payload, channel refs,
the invocation and its wait, the reply) with an exchange that hands over the
``POST /echo`` body of the http section at once, and a worker connection
answered in-process with ``{"ok": true, "echo": <body>}``. What it leaves out
is what a run over sockets adds: granian's threads, the WebSocket to the
worker, the event loop's waits. Compare two checkouts with
``PYTHONPATH=<other checkout>/src``; ``run.py --only http`` for what a client sees.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

# This directory holds profile.py, which would shadow the stdlib module cProfile imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import cProfile  # noqa: E402
import pstats  # noqa: E402

import msgspec  # noqa: E402

from pyiii.engine import builtins  # noqa: E402
from pyiii.engine.connection import Connection  # noqa: E402
from pyiii.engine.engine import Engine  # noqa: E402
from pyiii.httpserver import Exchange  # noqa: E402
from pyiii.modules.http.config import HttpConfig  # noqa: E402
from pyiii.modules.http.module import HttpModule  # noqa: E402

BODY = b'{"name":"ada","count":3,"tags":["a","b"]}'  # wrk.BODY
HEADERS = [
    ("host", "127.0.0.1:8080"),
    ("content-length", str(len(BODY))),
    ("content-type", "application/json"),
]


class _Headers:
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._map = dict(items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def get(self, name: str, default: Any = None) -> Any:
        return self._map.get(name, default)


class _Scope:
    method = "POST"
    path = "/echo"
    query_string = ""
    client = "127.0.0.1:5555"
    headers = _Headers(HEADERS)


class _Proto:
    """granian's RSGI protocol object, as much of it as the module uses."""

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self) -> bytes:
        return BODY

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status

    def client_disconnect(self) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


async def measure(n: int, profile: bool) -> None:
    engine = Engine()
    builtins.install(engine)
    module = HttpModule(HttpConfig())
    module.engine = engine  # start() would also bind granian's listener; not needed here
    engine.register_trigger_type("http", "HTTP route", module, worker_name="iii-http")
    sent: list[bytes] = []
    conn = Connection(sent.append, lambda code, reason: None)
    engine.connect(conn)
    encode, decode = msgspec.json.encode, msgspec.json.decode
    engine.handle(conn, encode({"type": "registerfunction", "id": "echo"}))
    config = {"api_path": "/echo", "http_method": "POST"}
    trigger = {"type": "registertrigger", "id": "t1", "trigger_type": "http", "function_id": "echo"}
    engine.handle(conn, encode({**trigger, "config": config}))
    del sent[:]

    def answer() -> None:
        while sent:
            frame = decode(sent.pop())
            if frame.get("type") != "invokefunction":
                continue
            result = {"status_code": 200, "body": {"ok": True, "echo": frame["data"]["body"]}}
            reply = {"type": "invocationresult", "invocation_id": frame["invocation_id"], "result": result}
            engine.handle(conn, encode(reply))

    async def one() -> None:
        proto = _Proto()
        task = asyncio.ensure_future(module._serve(Exchange(_Scope(), proto)))
        for _ in range(20):
            await asyncio.sleep(0)
            answer()
            if task.done():
                break
        await task
        assert proto.status == 200, proto.status

    for _ in range(500):
        await one()
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await one()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    best = float("inf")
    for _ in range(7):
        start = time.process_time()
        for _ in range(n):
            await one()
        best = min(best, (time.process_time() - start) / n)
    print(f"POST /echo, engine side in-process: {best * 1e6:.2f} µs CPU per request (best of 7 x {n})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import uvloop

    uvloop.run(measure(args.requests, args.profile))


if __name__ == "__main__":
    main()
