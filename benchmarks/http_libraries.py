"""Which HTTP server library the engine embeds: each candidate alone, measured with wrk.

    python benchmarks/http_libraries.py [--seconds 5] [--only uvicorn,aiohttp,granian]

Every candidate runs in its own process on one uvloop event loop (as the engine
would run it) and answers ``POST /echo`` with a small JSON body: it reads the
request body, decodes it, and encodes ``{"ok": true, "echo": <body>}``. wrk (one
thread, keep-alive) drives 1 and 64 connections. Prints requests/s and p50/p99.
The figures behind the choice are in docs/decisions.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wrk import require_wrk, run_wrk, wait_http

CANDIDATES = ("uvicorn", "aiohttp", "granian")


_ENGINE: list[Any] = []  # set in --through-engine mode: answer via engine.call


def _answer(body: bytes) -> bytes:
    import msgspec

    data = msgspec.json.decode(body) if body else None
    return msgspec.json.encode({"ok": True, "echo": data})


async def _answer_async(body: bytes) -> bytes:
    if not _ENGINE:
        return _answer(body)
    from msgspec import Raw

    out = await _ENGINE[0].call("bench::echo", Raw(body))
    return bytes(out) if out is not None else b"null"


async def _serve_uvicorn(port: int) -> None:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        out = await _answer_async(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})

    config = uvicorn.Config(app, http="httptools", lifespan="off", access_log=False, log_level="warning")
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpToolsProtocol(config=config, server_state=state, app_state={}), "127.0.0.1", port
    )
    await server.serve_forever()


async def _serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(body=await _answer_async(await request.read()), content_type="application/json")

    server = web.Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", port)
    await listener.serve_forever()


async def _serve_granian(port: int) -> None:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    async def app(scope: Any, proto: Any) -> None:
        body = await proto()
        proto.response_bytes(200, [("content-type", "application/json")], await _answer_async(body))

    server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.RSGI, log_enabled=False)
    await server.serve()


SERVERS = {"uvicorn": _serve_uvicorn, "aiohttp": _serve_aiohttp, "granian": _serve_granian}
TITLES = {
    "uvicorn": "uvicorn + httptools, bare ASGI callable",
    "aiohttp": "aiohttp low-level web.Server",
    "granian": "granian embedded (RSGI)",
}


def serve_main(name: str, port: int, engine_port: int) -> None:
    import uvloop

    async def main() -> None:
        if engine_port:
            import dataclasses

            from pyiii.config import parse_config
            from pyiii.engine.server import Server

            server = Server(dataclasses.replace(parse_config("workers: []\n"), port=engine_port))
            await server.start()
            _ENGINE.append(server.engine)
        await SERVERS[name](port)

    uvloop.run(main())


def start(name: str, port: int, engine_port: int = 0) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, "--port", str(port), "--engine-port", str(engine_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_http(port, "/echo", proc)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    parser.add_argument("--engine-port", type=int, default=0)
    parser.add_argument(
        "--through-engine", action="store_true", help="answer through engine.call to an echo worker process"
    )
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve, args.port, args.engine_port)
        return
    require_wrk()
    from common import free_port

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; wrk -t1, {args.seconds:g}s")
    for name in args.only.split(","):
        port = free_port()
        engine_port = free_port() if args.through_engine else 0
        proc = start(name, port, engine_port)
        worker = None
        if engine_port:
            from invoke import echo_worker

            worker = echo_worker(f"ws://127.0.0.1:{engine_port}")
            worker.__enter__()
        try:
            for conns in (1, 64):
                result = run_wrk(port, "/echo", conns, args.seconds)
                print(
                    f"{TITLES[name]:45s} {conns:3d} conns: {result.rps:9.0f} req/s  "
                    f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  errors {result.errors}"
                )
                time.sleep(0.5)
        finally:
            if worker is not None:
                worker.__exit__(None, None, None)
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
