"""A real HTTP service on 127.0.0.1 for HTTP-invoked functions, a DNS stub, a bare worker.

The service (aiohttp.web) records every request it gets. Test host names
(``*.test``) are resolved by ``StubDNS``, put in the module's DNS seam, so a
name can point at 127.0.0.1 (a real request) or at a private address (which
the guard must refuse before any connection is made).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import websockets
from aiohttp import web

from pyiii.engine.server import Server
from pyiii.modules.http_functions.guard import RULE_DNS, Refused

LOCAL_SECURITY = """\
  - name: iii-http-functions
    config:
      security:
        url_allowlist: [127.0.0.1, "*.test"]
        require_https: false
"""


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Service:
    """The local HTTP service: ``url(path)``; ``hits`` in arrival order."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def wait_hits(self, n: int, timeout: float = 5.0) -> list[Hit]:
        async with asyncio.timeout(timeout):
            while len(self.hits) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.hits


def _app(service: Service) -> web.Application:
    async def record(request: web.Request) -> Hit:
        hit = Hit(request.method, request.path_qs, dict(request.headers), await request.read())
        service.hits.append(hit)
        service.arrived.set()
        return hit

    async def echo(request: web.Request) -> web.Response:
        hit = await record(request)
        return web.json_response({"method": hit.method, "path": hit.path, "body": hit.json()})

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(int(request.query.get("ms", "2000")) / 1000)
        return web.json_response({"slept": True})

    async def status(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.match_info["code"])
        if request.query.get("shape") == "error":
            body = {"error": {"code": "UPSTREAM_ERROR", "message": "the ledger is closed"}}
            return web.json_response(body, status=code)
        return web.Response(status=code, text="x" * int(request.query.get("size", "40")))

    async def raw(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(
            status=int(request.query.get("status", "200")), text=request.query.get("text", "")
        )

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.query.get("code", "302"))
        return web.Response(status=code, headers={"Location": request.query.get("to", request.path_qs)})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{rest:.*}", echo)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/raw", raw)
    app.router.add_route("*", "/redirect", redirect)
    return app


async def start_service() -> tuple[Service, web.AppRunner]:
    """The service on a free loopback port; ``await runner.cleanup()`` stops it."""
    svc = Service()
    runner = web.AppRunner(_app(svc), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    svc.port = runner.addresses[0][1]
    return svc, runner


class StubDNS:
    """Answers for ``*.test`` names; counts lookups. Anything else fails like an unknown name."""

    def __init__(self, answers: dict[str, list[str] | Callable[[int], list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise Refused(RULE_DNS, f"DNS lookup of {host} failed: unknown to the test stub")
        return answer(self.lookups.count(host)) if callable(answer) else answer


DEFAULT_DNS: dict[str, list[str] | Callable[[int], list[str]]] = {
    "svc.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
    "internal.test": ["10.20.30.40"],
    "metadata.test": ["169.254.169.254"],
}

# ``await make_engine(workers_yaml, dns=StubDNS(...))`` (the fixture in tests/modules/http_functions).
MakeEngine = Callable[..., Awaitable[Server]]


class RawWorker:
    """A bare WebSocket worker, to see exactly which frames the engine sends back."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.worker_id = ""

    @classmethod
    async def connect(cls, url: str) -> RawWorker:
        worker = cls(await websockets.connect(url, max_size=None))
        hello = await worker.next()
        worker.worker_id = hello["worker_id"]
        return worker

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(msgspec.json.encode(frame).decode())

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            frame: dict[str, Any] = json.loads(await self.ws.recv())
        return frame

    async def register(self, function_id: str, invocation: dict[str, Any]) -> None:
        await self.send({"type": "registerfunction", "id": function_id, "invocation": invocation})

    async def call(self, function_id: str, data: Any, inv_id: str = "c1") -> dict[str, Any]:
        await self.send(
            {"type": "invokefunction", "invocation_id": inv_id, "function_id": function_id, "data": data}
        )
        while True:
            frame = await self.next(15.0)
            if frame.get("type") == "invocationresult" and frame.get("invocation_id") == inv_id:
                return frame

    async def close(self) -> None:
        await self.ws.close()
