"""Fixtures for the HTTP module tests (helpers in tests/support/http_engines.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from pyiii.config import parse_config
from pyiii.engine.server import Server
from support.http_engines import HttpEngine, MakeEngine


@pytest.fixture
async def make_http_engine() -> AsyncIterator[MakeEngine]:
    """``await make_http_engine("cors: {...}")``: an engine whose iii-http block is that YAML."""
    servers: list[Server] = []

    async def make(http_block: str = "", state: bool = False) -> HttpEngine:
        block = "".join(f"        {line}\n" for line in http_block.splitlines())
        text = "workers:\n  - name: iii-http\n    config:\n        port: 0\n" + block
        if state:
            text += "  - name: iii-state\n"
        config = dataclasses.replace(parse_config(text, source="test"), port=0)
        server = Server(config)
        await server.start()
        servers.append(server)
        return HttpEngine(server)

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def http_engine(make_http_engine: MakeEngine) -> HttpEngine:
    """An engine with iii-http on default settings (port 0)."""
    return await make_http_engine()
