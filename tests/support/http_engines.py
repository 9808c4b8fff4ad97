"""HTTP-module engines for tests: an in-process engine with iii-http on free loopback ports."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from pyiii.engine.server import Server
from pyiii.modules.http.module import HttpModule


@dataclasses.dataclass
class HttpEngine:
    server: Server

    @property
    def http(self) -> HttpModule:
        module = self.server.module("iii-http")
        assert isinstance(module, HttpModule)
        return module

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=20, **kw)

    async def wait_route(self, method: str, path: str, present: bool = True, timeout: float = 10) -> None:
        """Wait until ``method path`` is (or is no longer) routed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self.http.routes.match(method, path) is not None) != present:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"route {method} {path} {'never appeared' if present else 'stayed'}")
            await asyncio.sleep(0.02)


MakeEngine = Callable[..., Awaitable[HttpEngine]]
