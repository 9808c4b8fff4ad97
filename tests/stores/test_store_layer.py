"""What the shared store layer offers beyond the State contract (tests/modules/state
covers that): scopes listed by prefix, events published through a store, the
SQLite file's name."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pyiii.stores.base import StateAdapter
from pyiii.stores.memory import MemoryAdapter
from pyiii.stores.redis import RedisAdapter
from pyiii.stores.sqlite import SqliteAdapter

ADAPTERS: dict[str, Callable[[Path, pytest.FixtureRequest], StateAdapter]] = {
    "memory": lambda tmp, request: MemoryAdapter(),
    "sqlite": lambda tmp, request: SqliteAdapter(tmp / "store"),
    "redis": lambda tmp, request: RedisAdapter(
        request.getfixturevalue("redis_url"), prefix=f"test-{uuid.uuid4().hex}"
    ),
}


@pytest.fixture(params=sorted(ADAPTERS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateAdapter]:
    adapter = ADAPTERS[request.param](tmp_path, request)
    await adapter.open()
    yield adapter
    await adapter.close()


def put(value: object) -> Callable[[object], bytes]:
    raw = json.dumps(value).encode()
    return lambda _current: raw


async def test_list_groups_by_prefix(store: StateAdapter) -> None:
    # Names chosen to trip glob patterns and percent-encoding: *, ?, [, %, {, space.
    scopes = ["chat:room-1", "chat:room-2", "chat*:x", "chat%3A:y", "cha:z", "c{h}at:w", "chat :v", "other"]
    for scope in scopes:
        await store.mutate(scope, "k", put(1))
    assert await store.list_groups("chat:") == ["chat:room-1", "chat:room-2"]
    assert await store.list_groups("chat*") == ["chat*:x"]
    assert await store.list_groups("chat%") == ["chat%3A:y"]
    assert await store.list_groups("c{h}") == ["c{h}at:w"]
    assert await store.list_groups("chat ") == ["chat :v"]
    assert await store.list_groups("nothing") == []
    assert await store.list_groups("") == sorted(scopes)
    # An emptied scope is gone from the prefix listing too.
    await store.mutate("chat:room-1", "k", lambda _c: None)
    assert await store.list_groups("chat:") == ["chat:room-2"]


async def test_local_stores_leave_published_events_to_the_caller(tmp_path: Path) -> None:
    heard: list[object] = []
    for adapter in (MemoryAdapter(), SqliteAdapter(tmp_path / "s")):
        await adapter.open()
        assert adapter.subscribe(lambda *event: heard.append(event)) is False
        assert await adapter.publish(b"custom", "scope", "key", None, b'{"a":1}') is False
        assert heard == []
        await adapter.close()


async def test_redis_publish_reaches_every_engine_in_order_with_writes(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    a, b = RedisAdapter(redis_url, prefix=prefix), RedisAdapter(redis_url, prefix=prefix)
    heard: dict[str, list[tuple[bytes, str, str, bytes | None, bytes | None]]] = {"a": [], "b": []}
    for name, adapter in (("a", a), ("b", b)):
        await adapter.open()
        adapter.subscribe(lambda *event, name=name: heard[name].append(event))
    try:
        await a.mutate("s", "k", put(1))
        assert await a.publish(b"custom", "s", "k", None, b'{"n":2}') is True
        await a.mutate("s", "k", put(3))
        expected = [
            (b"state:created", "s", "k", None, b"1"),
            (b"custom", "s", "k", None, b'{"n":2}'),
            (b"state:updated", "s", "k", b"1", b"3"),
        ]
        for _ in range(200):
            if heard["a"] == expected and heard["b"] == expected:
                break
            await asyncio.sleep(0.01)
        assert heard["a"] == expected
        assert heard["b"] == expected
        entry = await b.get("s", "k")
        assert entry is not None and entry.raw == b"3"
    finally:
        await a.close()
        await b.close()


async def test_sqlite_file_name(tmp_path: Path) -> None:
    adapter = SqliteAdapter(tmp_path / "streams", file_name="pyiii-stream.sqlite3")
    await adapter.open()
    await adapter.mutate("s", "k", put(1))
    await adapter.close()
    assert (tmp_path / "streams" / "pyiii-stream.sqlite3").is_file()
    again = SqliteAdapter(tmp_path / "streams", file_name="pyiii-stream.sqlite3")
    await again.open()
    entry = await again.get("s", "k")
    await again.close()
    assert entry is not None and entry.raw == b"1"
