"""Redis specifics of the State extensions: several engines, lost hints, old scopes, Cluster.

Each adapter-level test uses a fresh key prefix on the session's
redis-server; the Cluster tests start a three-node cluster of their own.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from pyiii.modules.state.triggers import EXPIRED
from pyiii.stores.base import AdapterError, Entry, Mutation, PreconditionFailed, Put, now_ms
from pyiii.stores.redis import RedisAdapter
from support.redis_server import RedisClusterServers  # tests/support, on sys.path via tests/conftest.py


def put(value: object, expires_at: int | None = None) -> Mutation:
    raw = json.dumps(value).encode()
    return (lambda _c: raw) if expires_at is None else (lambda _c: Put(raw, expires_at))


def expired_events(adapter: RedisAdapter) -> list[tuple[str, str]]:
    """Start recording the state:expired events ``adapter`` receives."""
    seen: list[tuple[str, str]] = []

    def listener(event_type: bytes, scope: str, key: str, old: bytes | None, new: bytes | None) -> None:
        if event_type == EXPIRED:
            seen.append((scope, key))

    adapter.subscribe(listener)
    return seen


async def until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def two(redis_url: str) -> AsyncIterator[tuple[RedisAdapter, RedisAdapter]]:
    """Two adapters (two engines) sharing one prefix on one Redis."""
    prefix = f"test-{uuid.uuid4().hex}"
    a, b = RedisAdapter(redis_url, prefix=prefix), RedisAdapter(redis_url, prefix=prefix)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_transactions_are_atomic_across_engines(two: tuple[RedisAdapter, RedisAdapter]) -> None:
    """Random transfers between accounts in two scopes, from two engines at once:
    the total never changes, and compare-and-set conflicts surface as
    PreconditionFailed, never as a lost write."""
    a, b = two
    accounts = [("bank-a", f"acc{i}") for i in range(4)] + [("bank-b", f"acc{i}") for i in range(4)]
    await a.mutate_many([(scope, key, put(100)) for scope, key in accounts])
    rng = random.Random(3)

    def move(delta: int) -> Mutation:
        return lambda current: str(int(current.raw) + delta).encode() if current is not None else b"0"

    async def transfers(adapter: RedisAdapter) -> None:
        for _ in range(60):
            (s1, k1), (s2, k2) = rng.sample(accounts, 2)
            amount = rng.randrange(1, 10)
            await adapter.mutate_many([(s1, k1, move(-amount)), (s2, k2, move(amount))])

    await asyncio.gather(transfers(a), transfers(b))
    total = 0
    for scope in ("bank-a", "bank-b"):
        entries = await b.get_many(scope, [f"acc{i}" for i in range(4)])
        total += sum(int(e.raw) for e in entries if e is not None)
    assert total == 800

    # A stale expectation fails as a whole, whichever engine checks it.
    current = await a.get("bank-a", "acc0")
    assert current is not None
    await b.mutate("bank-a", "acc0", put(0))

    def expect(version: int) -> Mutation:
        def run(entry: Entry | None) -> bytes:
            if entry is None or entry.version != version:
                raise PreconditionFailed("stale", None if entry is None else entry.version)
            return b"1"

        return run

    with pytest.raises(PreconditionFailed):
        await a.mutate_many([("bank-b", "acc0", put(-1)), ("bank-a", "acc0", expect(current.version))])
    entry = await a.get("bank-b", "acc0")
    assert entry is not None and entry.raw != b"-1"


async def test_expiry_fires_once_with_two_sweepers(two: tuple[RedisAdapter, RedisAdapter]) -> None:
    a, b = two
    seen = expired_events(a)
    a.on_expired(lambda *_: None)  # starts each engine's sweeper
    b.on_expired(lambda *_: None)
    base = now_ms()
    await a.mutate_many([("t", f"k{i}", put(i, base + 100 + i)) for i in range(50)])
    await b.mutate_many([("u", f"k{i}", put(i, base + 150)) for i in range(50)])
    await until(lambda: len(seen) >= 100)
    await asyncio.sleep(0.3)
    counts = Counter(seen)
    assert len(counts) == 100 and set(counts.values()) == {1}
    assert await a.list_groups() == []
    assert await b.count("t", "") == 0


async def test_a_lost_hint_is_found_by_the_rescan(redis_url: str, raw_redis: redis.Redis) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    writer = RedisAdapter(redis_url, prefix=prefix)
    await writer.open()
    try:
        await writer.mutate("s", "k", put("v", now_ms() + 100))
    finally:
        await writer.close()  # no sweeper ever ran
    raw_redis.delete(f"{prefix}:ttl-scopes")  # as if the writer died before hinting
    await asyncio.sleep(0.15)
    sweeper = RedisAdapter(redis_url, prefix=prefix)
    seen = expired_events(sweeper)
    await sweeper.open()
    try:
        assert await sweeper.get("s", "k") is None  # expired: absent even before the sweep
        sweeper.on_expired(lambda *_: None)  # rescans at start
        await until(lambda: seen == [("s", "k")])
        assert raw_redis.hlen(f"{prefix}:{{s}}:kv") == 0
    finally:
        await sweeper.close()


async def test_scopes_without_a_key_index_get_one(redis_url: str, raw_redis: redis.Redis) -> None:
    a = RedisAdapter(redis_url, prefix=f"test-{uuid.uuid4().hex}")
    await a.open()
    try:
        await a.mutate_many([("s", f"k{i:02d}", put(i)) for i in range(30)])
        raw_redis.delete(a._key("s", b"keys"))  # a scope written before the index existed
        assert await a.count("s", "k1") == 10
        page, more = await a.list_page("s", "", "k05", 3)
        assert [k for k, _ in page] == ["k06", "k07", "k08"] and more
        assert raw_redis.zcard(a._key("s", b"keys")) == 30
    finally:
        await a.close()


# -- Redis Cluster ----------------------------------------------------------------


async def test_extensions_on_a_redis_cluster(redis_cluster: RedisClusterServers) -> None:
    cluster = redis_cluster
    prefix = f"test-{uuid.uuid4().hex}"
    a = RedisAdapter(cluster.url, prefix=prefix)
    b = RedisAdapter(cluster.nodes[2].url, prefix=prefix)
    seen = expired_events(a)
    await a.open()
    await b.open()
    try:
        assert a.cluster
        nodes = {a._redis.get_node_from_key(a._kv(f"s{i}")).name for i in range(6)}
        assert len(nodes) > 1
        a.on_expired(lambda *_: None)
        b.on_expired(lambda *_: None)
        for i in range(6):
            scope = f"s{i}"
            pairs = await a.mutate_many([(scope, f"k{j:02d}", put(j)) for j in range(20)])
            assert all(old is None and new is not None for old, new in pairs)
            assert await b.count(scope, "k1") == 10
            page, more = await b.list_page(scope, "k", "k17", 5)
            assert [k for k, _ in page] == ["k18", "k19"] and not more
            assert [e is not None for e in await b.get_many(scope, ["k00", "zz"])] == [True, False]
            await b.mutate(scope, "brief", put("x", now_ms() + 100))
        with pytest.raises(AdapterError, match="one scope"):
            await a.mutate_many([("s0", "k00", put(1)), ("s1", "k00", put(1))])
        untouched = await a.get("s0", "k00")
        assert untouched is not None and untouched.raw == b"0"
        await until(lambda: len(seen) >= 6)
        await asyncio.sleep(0.2)
        assert sorted(seen) == [(f"s{i}", "brief") for i in range(6)]
        assert await a.list_groups() == [f"s{i}" for i in range(6)]
    finally:
        await a.close()
        await b.close()
