"""Engines and workers for tests: real sockets on free loopback ports."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator

from pyiii import Worker, connect
from pyiii.config import parse_config
from pyiii.engine.server import Server
from pyiii.modules.state.config import StateConfig


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_engine(state: StateConfig, port: int = 0) -> AsyncIterator[str]:
    """An in-process engine with ``state``; yields its URL and stops it afterwards."""
    base = parse_config("workers: []\n", source="test")
    config = dataclasses.replace(base, port=port).with_module("iii-state", state)
    server = Server(config)
    await server.start()
    try:
        yield f"ws://127.0.0.1:{server.port}"
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def sdk_worker(url: str, name: str) -> AsyncIterator[Worker]:
    """A pyiii SDK worker connected to ``url``; shut down afterwards."""
    w = await connect(url, name=name, invocation_timeout_ms=20_000)
    try:
        yield w
    finally:
        await w.shutdown()


@contextlib.asynccontextmanager
async def running_server(config_text: str, port: int = 0) -> AsyncIterator[Server]:
    """An in-process engine from ``iii-config.yaml`` text; yields the started Server.

    ``f"ws://127.0.0.1:{server.port}"`` is its URL, ``server.module(name)`` a module.
    """
    config = dataclasses.replace(parse_config(config_text, source="test"), port=port)
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def url_of(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}"
