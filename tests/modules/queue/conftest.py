"""Engines with the Queue module for the queue tests, once per store.

``queue_engine`` is a factory: ``await queue_engine(queue_configs, others)``
starts an in-process engine (real sockets) whose ``iii-queue`` uses the store
of the test's ``adapter`` parameter, with the module blocks ``others`` beside
it, and returns a ``QueueEngine`` (its ``url``, the ``server``, ``restart()``).
Tests that use it run against every store in ``ADAPTERS``: ``in_memory``,
``file_based`` (a SQLite file in the test's tmp dir) and ``redis`` (the
session's redis-server, a key prefix of its own).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from support.queue_engines import QueueEngine, adapter_block, queue_config_yaml

ADAPTERS = ("in_memory", "file_based", "redis")


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def queue_engine(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[QueueEngine]]]:
    redis_url = request.getfixturevalue("redis_url") if adapter == "redis" else None
    prefix = f"t{uuid.uuid4().hex[:10]}"
    started: list[QueueEngine] = []

    async def make(
        queue_configs: dict[str, Any] | None = None, others: tuple[dict[str, Any], ...] = ()
    ) -> QueueEngine:
        block = adapter_block(adapter, tmp_path, redis_url, prefix)
        eng = await QueueEngine(queue_config_yaml(queue_configs or {}, block, others)).start()
        started.append(eng)
        return eng

    yield make
    for eng in started:
        await eng.stop()
    await asyncio.sleep(0)
