"""Engines with the Streams module, and a raw client of the stream port (tests/modules/stream).

``ADAPTERS`` builds the adapter block of each store (redis gets a redis-server of
its own per test, so listings stay exact); ``StreamEngine`` is a running engine with
a pyiii SDK worker; ``StreamClient`` speaks the client protocol over the
``websockets`` library, as a browser would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets

from pyiii import Worker
from pyiii.engine.server import Server
from pyiii.modules.stream.module import StreamModule
from support.redis_server import RedisServer

ADAPTERS: dict[str, Callable[[Path, pytest.FixtureRequest], str]] = {
    "in_memory": lambda workdir, request: "{name: kv, config: {store_method: in_memory}}",
    "file_based": lambda workdir, request: (
        f"{{name: kv, config: {{store_method: file_based, file_path: '{workdir / 'streams'}'}}}}"
    ),
    "redis": lambda workdir, request: f"{{name: redis, config: {{redis_url: '{_redis(workdir, request)}'}}}}",
}


def _redis(workdir: Path, request: pytest.FixtureRequest) -> str:
    server = RedisServer(workdir / "redis").start()
    request.addfinalizer(server.stop)
    return server.url


def stream_config(adapter: str, extra: str = "") -> str:
    return f"workers:\n  - name: iii-stream\n    config: {{port: 0, adapter: {adapter}{extra}}}\n"


@dataclass
class StreamEngine:
    server: Server
    worker: Worker
    adapter: str

    @property
    def module(self) -> StreamModule:
        module = self.server.module("iii-stream")
        assert isinstance(module, StreamModule)
        return module

    @property
    def client_url(self) -> str:
        return f"ws://127.0.0.1:{self.module.port}"

    async def call(self, function_id: str, payload: Any) -> Any:
        return await self.worker.trigger(function_id, payload)

    def client(self, path: str = "/", **kw: Any) -> StreamClient:
        return StreamClient(self.client_url + path, **kw)


class StreamClient:
    """A client of the stream port: join/leave and read frames as JSON."""

    def __init__(self, url: str, **kw: Any) -> None:
        self.url = url
        self.kw = kw
        self.ws: Any = None

    async def __aenter__(self) -> StreamClient:
        self.ws = await websockets.connect(self.url, **self.kw)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, message: Any) -> None:
        await self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def join(self, sub: str, stream: str, group: str, item: str | None = None) -> None:
        data: dict[str, Any] = {"subscriptionId": sub, "streamName": stream, "groupId": group}
        if item is not None:
            data["id"] = item
        await self.send({"type": "join", "data": data})

    async def leave(self, sub: str, stream: str, group: str) -> None:
        data = {"subscriptionId": sub, "streamName": stream, "groupId": group}
        await self.send({"type": "leave", "data": data})

    async def recv(self, timeout: float = 5.0) -> Any:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def nothing(self, timeout: float = 0.3) -> None:
        """Assert that no frame arrives within ``timeout``."""
        try:
            got = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {got!r}")


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
