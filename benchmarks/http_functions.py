"""Functions served by HTTP services: which client, and what a call through the engine costs.

    python benchmarks/http_functions.py [--seconds 2]

Two tables, each measured in interleaved windows (benchmarks/common.py):

1. The client library: aiohttp and httpx POSTing a small JSON body to the
   same aiohttp.web echo service (own process), 32 in flight.
2. Through the engine (own process, iii-http-functions allow-listing
   127.0.0.1): a pyiii SDK worker calling an HTTP-served function (the
   engine POSTs to the echo service) against the same call to a function
   served by a WebSocket worker (own process). 32 in flight.

Everything stays on 127.0.0.1. The figures behind the choice of aiohttp are
in docs/decisions.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Target, engine, free_port, measure_interleaved, print_rows, process, with_ratio

BODY = b'{"sku":"A-1","qty":3,"_caller_worker_id":"0b4f7a1e-0000-4000-8000-000000000000"}'
INFLIGHT = 32
ECHO_SERVICE = """
import sys, asyncio, uvloop
from aiohttp import web
async def echo(request):
    return web.Response(body=await request.read(), content_type="application/json")
app = web.Application()
app.router.add_post("/echo", echo)
print("echo service ready", flush=True)
uvloop.run(web._run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None))
"""
WS_WORKER = """
import sys
from pyiii import register_worker
iii = register_worker(sys.argv[1], name="bench-ws")
iii.register_function("bench::ws", lambda payload: payload, inline=True)
print("ws worker ready", flush=True)
iii.run()
"""


async def clients(url: str, pids: list[int], seconds: float) -> None:
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session, httpx.AsyncClient() as client:

        async def via_aiohttp(_: int) -> None:
            async with session.post(url, data=BODY, headers=headers) as resp:
                await resp.read()

        async def via_httpx(_: int) -> None:
            (await client.post(url, content=BODY, headers=headers)).read()

        got = await measure_interleaved(
            [Target("httpx", via_httpx, pids), Target("aiohttp", via_aiohttp, pids)],
            inflight=INFLIGHT,
            seconds=seconds,
        )
    base = got["httpx"].row("httpx POST, 32 in flight", "client")
    row = with_ratio(got["aiohttp"].row("aiohttp POST, 32 in flight", "client"), base)
    print_rows("HTTP client library -> local echo service", [base, row])


async def through_engine(ws_url: str, service_url: str, pids: list[int], seconds: float) -> None:
    from pyiii import connect

    caller = await connect(ws_url, name="bench-caller")
    owner = await connect(ws_url, name="bench-owner")
    try:
        owner.register_http_function("bench::http", service_url)
        for _ in range(100):  # registration has no ack: wait until it answers
            with contextlib.suppress(Exception):
                await caller.trigger("bench::http", {})
                break
            await asyncio.sleep(0.05)

        async def http_fn(n: int) -> None:
            await caller.trigger("bench::http", {"n": n})

        async def ws_fn(n: int) -> None:
            await caller.trigger("bench::ws", {"n": n})

        got = await measure_interleaved(
            [Target("ws", ws_fn, pids), Target("http", http_fn, pids)], inflight=INFLIGHT, seconds=seconds
        )
    finally:
        await owner.shutdown()
        await caller.shutdown()
    base = got["ws"].row("call a WebSocket worker's function", "engine")
    row = with_ratio(got["http"].row("call an HTTP-served function", "engine"), base)
    print_rows("pyiii SDK -> engine -> function, 32 in flight", [base, row])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    service_port, engine_port = free_port(), free_port()
    config = (
        "workers:\n  - name: iii-http-functions\n    config:\n"
        "      security: {url_allowlist: [127.0.0.1], require_https: false}\n"
    )
    ws_url = f"ws://127.0.0.1:{engine_port}"
    service_url = f"http://127.0.0.1:{service_port}/echo"
    with (
        tempfile.TemporaryDirectory() as tmp,
        process([sys.executable, "-c", ECHO_SERVICE, str(service_port)], "echo service ready") as service,
        engine(engine_port, Path(tmp), config) as eng,
        process([sys.executable, "-c", WS_WORKER, ws_url], "ws worker ready") as worker,
    ):
        asyncio.run(clients(service_url, [service.pid], args.seconds))
        asyncio.run(through_engine(ws_url, service_url, [eng.pid, service.pid, worker.pid], args.seconds))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
