"""Shared fixtures: real engines on free loopback ports.

``engine_proc`` runs ``python -m pyiii serve`` as a subprocess (for tests that
read its console, kill it or restart it); ``engine`` runs a Server inside the
test's event loop (cheaper, still real sockets). ``redis_url`` is a private
redis-server shared by the session; ``private_redis`` is one a test may stop
and restart. ``spawn`` starts official-SDK worker programs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from compat.compat_kit import Spawner
from support.engine_process import EngineProcess
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
# The repository's iii-config.yaml serves the console on ${III_CONSOLE_PORT:3113}: engines
# started by tests (and their subprocesses) take a free port instead, so they never collide.
os.environ.setdefault("III_CONSOLE_PORT", "0")


@pytest.fixture
async def spawn() -> AsyncIterator[Spawner]:
    """Starts official-SDK worker programs; whatever is left is killed at teardown."""
    spawner = Spawner()
    yield spawner
    await spawner.close()


@pytest.fixture
def engine_proc(tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine subprocess with in-memory state, in a temp working directory."""
    eng = EngineProcess(tmp_path).start()
    yield eng
    eng.stop()


@pytest.fixture
def make_engine_proc(tmp_path: Path) -> Iterator[type[EngineProcess]]:
    """Factory for engines with a given config; all are stopped afterwards."""
    started: list[EngineProcess] = []

    class _Factory(EngineProcess):
        def __init__(
            self,
            config: str | None = None,
            port: int | None = None,
            env: dict[str, str] | None = None,
            workdir: Path | None = None,
        ) -> None:
            super().__init__(workdir or tmp_path, config, port, env)
            started.append(self)

    yield _Factory
    for eng in started:
        eng.stop()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[str]:
    """An in-process engine (in-memory state) on a free port; yields its URL."""
    from pyiii.config import parse_config
    from pyiii.engine.server import Server

    config = parse_config("workers: []\n", source="test")
    import dataclasses

    from pyiii.modules.state.config import StateConfig

    config = dataclasses.replace(config, port=0).with_module("iii-state", StateConfig())
    server = Server(config)
    await server.start()
    yield f"ws://127.0.0.1:{server.port}"
    await server.stop()
    await asyncio.sleep(0)


# -- Redis -------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session (never stopped by tests).

    Fails (does not skip) when redis-server is missing: `make test` installs it.
    """
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server."""
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone: it may ``stop()`` and ``start()`` it."""
    try:
        server = RedisServer(tmp_path / "redis").start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()
