"""Fixtures for the iii-http-functions tests (helpers in tests/support/http_services.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from pyiii.config import parse_config
from pyiii.engine.server import Server
from pyiii.modules.http_functions.module import HttpFunctionsModule
from support.http_services import DEFAULT_DNS, LOCAL_SECURITY, MakeEngine, Service, StubDNS, start_service


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    """A real HTTP service on 127.0.0.1 that records what it gets."""
    svc, runner = await start_service()
    yield svc
    await runner.cleanup()


@pytest.fixture
async def make_engine() -> AsyncIterator[MakeEngine]:
    """``await make_engine(extra_yaml, dns=StubDNS(...))``: an in-process engine on a free port."""
    servers: list[Server] = []

    async def make(workers: str = LOCAL_SECURITY, dns: StubDNS | None = None) -> Server:
        config = dataclasses.replace(parse_config("workers:\n" + workers, source="test"), port=0)
        server = Server(config)
        for module in server.modules:
            if isinstance(module, HttpFunctionsModule):
                module.resolve = dns or StubDNS(dict(DEFAULT_DNS))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()
