"""The Redis State adapter: op fidelity, key layout, retries, several engines, outages.

Adapter-level tests use a fresh key prefix each; engine-level tests run
in-process engines with ``adapter: redis`` (default prefix) on a flushed
server, and talk to them through pyiii SDK workers. The last tests run
against a real three-node Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio.client
import redis.crc

from pyiii.errors import ConfigError, IIIError
from pyiii.modules.state.config import StateConfig
from pyiii.modules.state.triggers import CREATED, DELETED, EXPIRED, UPDATED
from pyiii.sdk import Worker
from pyiii.stores import redis as redis_adapter
from pyiii.stores.base import AdapterError, Entry, Mutation, PreconditionFailed, Put, now_ms
from pyiii.stores.ops import OpsDecodeError, apply_ops, parse_ops
from pyiii.stores.redis import RedisAdapter
from support.data import UPDATE_OPS_VECTORS  # tests/support, on sys.path via tests/conftest.py
from support.engines import free_port, running_engine  # tests/support, on sys.path via tests/conftest.py
from support.engines import sdk_worker as worker
from support.jsonvalues import same_json  # tests/support, on sys.path via tests/conftest.py
from support.redis_server import RedisClusterServers  # tests/support, on sys.path via tests/conftest.py

VECTORS: list[dict[str, Any]] = msgspec.json.decode(UPDATE_OPS_VECTORS.read_bytes())


@pytest.fixture
async def adapter(redis_url: str) -> AsyncIterator[RedisAdapter]:
    a = RedisAdapter(redis_url, prefix=f"test-{uuid.uuid4().hex}")
    await a.open()
    yield a
    await a.close()


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def update(a: RedisAdapter, scope: str, key: str, raw_ops: Any) -> tuple[Any, list[dict[str, Any]]]:
    """What state::update does: run the ops on the stored value inside mutate."""
    parsed = parse_ops(raw_ops)
    op_errors: list[dict[str, Any]] = []

    def run(current: Entry | None) -> bytes:
        nonlocal op_errors
        value = msgspec.json.decode(current.raw) if current is not None else None
        new_value, op_errors = apply_ops(value, current is not None, parsed)
        return msgspec.json.encode(new_value)

    await a.mutate(scope, key, run)
    stored = await a.get(scope, key)
    assert stored is not None
    return msgspec.json.decode(stored.raw), op_errors


# -- update ops through Redis -----------------------------------------------------


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[v["name"] for v in VECTORS])
async def test_vector(adapter: RedisAdapter, index: int) -> None:
    vector = VECTORS[index]
    initial, expect = vector["initial"], vector["expect"]
    if initial is not None or vector.get("initial_exists"):
        raw = msgspec.json.encode(initial)
        await adapter.mutate("v", "k", lambda _: raw)
    before = await adapter.get("v", "k")
    if "error_code" in expect:
        with pytest.raises(OpsDecodeError):
            await update(adapter, "v", "k", vector["ops"])
        assert await adapter.get("v", "k") == before
        return
    value, op_errors = await update(adapter, "v", "k", vector["ops"])
    assert same_json(value, expect["new_value"]), (value, expect["new_value"])
    expected = [(e["op_index"], e["code"]) for e in expect.get("errors", [])]
    assert [(e["op_index"], e["code"]) for e in op_errors] == expected


async def test_numbers_and_empty_containers_are_exact(adapter: RedisAdapter) -> None:
    # The reference's Lua port turns [] into {} and numbers into 14-digit doubles.
    raw = b'{"big":9223372036854775807,"f":1.1,"two":2.0,"list":[],"obj":{},"n":0}'
    await adapter.mutate("s", "k", lambda _: raw)
    value, errors = await update(
        adapter,
        "s",
        "k",
        [
            {"type": "increment", "path": "big", "by": 1},
            {"type": "increment", "path": "f", "by": 2},
            {"type": "increment", "path": "two", "by": 1},
            {"type": "increment", "path": "n", "by": 1},
        ],
    )
    assert errors == []
    stored = await adapter.get("s", "k")
    assert stored is not None
    assert stored.raw == b'{"big":9223372036854775808,"f":3.1,"two":3.0,"list":[],"obj":{},"n":1}'
    assert value["big"] == 2**63 and type(value["f"]) is float and type(value["two"]) is float


async def test_absent_key_defaults(adapter: RedisAdapter) -> None:
    # Root increment / string append on an absent key (the Lua port errs here).
    assert await update(adapter, "s", "n", [{"type": "increment", "path": "", "by": 5}]) == (5, [])
    assert await update(adapter, "s", "t", [{"type": "append", "value": "x"}]) == ("x", [])


# -- layout, registry, retries ----------------------------------------------------


def keyspace(raw_redis: redis.Redis, a: RedisAdapter) -> set[bytes]:
    return set(raw_redis.scan_iter(match=redis_adapter._glob_escape(a._prefix) + b":*"))


async def test_key_layout(adapter: RedisAdapter, raw_redis: redis.Redis) -> None:
    p = adapter._prefix
    _, first = await adapter.mutate("sc", "a", lambda _: b"1")
    _, second = await adapter.mutate("sc", "b", lambda _: b'"x:y"')
    _, third = await adapter.mutate("sc", "a", lambda _: b"[]")  # overwrite: keeps ord
    assert first is not None and second is not None and third is not None
    stored = raw_redis.hgetall(p + b":{sc}:kv")
    assert stored[b"b"] == b'%d:%d:"x:y"' % (second.version, second.version)
    version, ord_, raw = stored[b"a"].split(b":", 2)
    assert (int(ord_), raw) == (first.version, b"[]") and int(version) > second.version
    assert raw_redis.get(p + b":{sc}:version") == b"%d" % third.version
    assert keyspace(raw_redis, adapter) == {p + b":{sc}:kv", p + b":{sc}:version", p + b":{sc}:keys"}
    assert raw_redis.zrange(p + b":{sc}:keys", 0, -1, withscores=True) == [(b"a", 0.0), (b"b", 0.0)]
    await adapter.mutate("sc", "a", lambda _: None)
    await adapter.mutate("sc", "b", lambda _: None)  # last key: the hash goes
    assert keyspace(raw_redis, adapter) == {p + b":{sc}:version"}  # the counter stays: no ABA
    _, again = await adapter.mutate("sc", "a", lambda _: b"1")
    assert again is not None and again.version > third.version
    # Scope names are percent-encoded inside the hash tag.
    for scope, tag in [
        ("", b"%"),
        ("{x}", b"%7Bx%7D"),
        ("a:b/c", b"a:b/c"),
        ("100%", b"100%25"),
        ("é ", b"%C3%A9%20"),
    ]:
        await adapter.mutate(scope, "k", lambda _: b"0")
        assert raw_redis.hget(p + b":{" + tag + b"}:kv", "k") is not None, scope
    raw_redis.hset(p + b":{foreign}:kv", "k", b"not ours")
    with pytest.raises(AdapterError, match="not written by pyiii"):
        await adapter.get("foreign", "k")


WEIRD_SCOPES = [
    "plain",
    "",
    "{",
    "}",
    "}{",
    "a}b{c",
    "{x}",
    "{}",
    "a:b",
    ":",
    "%",
    "%7B",
    "100%",
    "café",
    "日本",
    "\ud800",
    "sp ace",
    "tab\tnl\n",
    "*",
    "[a-z]?",
    "\\",
    "pyiii:{s}:kv",
]


def record_pipelines(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[Any, ...]]]:
    """Record the commands each pipeline (= each mutate attempt) sends; see the test below."""
    pipelines: list[list[tuple[Any, ...]]] = []
    real_init = redis.asyncio.client.Pipeline.__init__
    real_execute_command = redis.asyncio.client.Pipeline.execute_command

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self._recorded = []
        pipelines.append(self._recorded)

    def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._recorded.append(args)
        return real_execute_command(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "__init__", init)
    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute_command", execute_command)
    return pipelines


async def test_every_transaction_stays_in_one_slot(
    adapter: RedisAdapter, raw_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The WATCH/MULTI path is the one a Redis Cluster takes (plain servers run
    # scripts on the shared pipe instead); without the pipe, this server takes it too.
    monkeypatch.setattr(adapter._conn, "pipe", None)
    pipelines = record_pipelines(monkeypatch)
    ops = [{"type": "increment", "path": "n", "by": 1}]
    for scope in WEIRD_SCOPES:
        await adapter.mutate(scope, "k", lambda _: b"{}")
        await update(adapter, scope, "k", ops)
        await adapter.mutate(scope, "other", lambda _: b"1")
        await adapter.mutate(scope, "other", lambda _: None)
    assert len(pipelines) == 4 * len(WEIRD_SCOPES)
    for commands in pipelines:
        # Every command here names its key (or, for PUBLISH, its channel) first.
        names = [args[1] for args in commands]
        assert commands[0][0] == "WATCH" and commands[-1][0] == "PUBLISH", commands
        assert {args[0] for args in commands} <= {
            "WATCH",
            "HMGET",
            "GET",
            "INCRBY",
            "HSET",
            "HDEL",
            "ZADD",
            "ZREM",
            "PUBLISH",
        }, commands
        assert len({redis.crc.key_slot(name) for name in names}) == 1, commands

    # The keyspace: per scope, one hash, one counter and the key index, all in one slot.
    by_scope: dict[str, set[bytes]] = {}
    for name in keyspace(raw_redis, adapter):
        by_scope.setdefault(adapter_scope(adapter, name), set()).add(name)
    assert sorted(by_scope) == sorted(WEIRD_SCOPES)
    slots: set[int] = set()
    for scope, scope_names in by_scope.items():
        assert len(scope_names) == 3, (scope, scope_names)
        scope_slots = {redis.crc.key_slot(name) for name in scope_names}
        assert len(scope_slots) == 1, (scope, scope_names)
        slots |= scope_slots
    assert len(slots) > len(WEIRD_SCOPES) // 2  # scopes spread over slots


def adapter_scope(a: RedisAdapter, name: bytes) -> str:
    """The scope a key belongs to, from its hash tag (Redis's rule: first ``{`` to the next ``}``)."""
    start = name.index(b"{") + 1
    tag = name[start : name.index(b"}", start)]
    scope = redis_adapter._untag(tag)
    assert scope is not None, name
    assert name in (a._key(scope, b"kv"), a._key(scope, b"version"), a._key(scope, b"keys")), name
    return scope


async def test_list_groups_is_exactly_the_non_empty_scopes(
    adapter: RedisAdapter, redis_url: str, raw_redis: redis.Redis
) -> None:
    assert await adapter.list_groups() == []
    for scope in WEIRD_SCOPES:
        await adapter.mutate(scope, "a", lambda _: b"1")
        await adapter.mutate(scope, "b", lambda _: b"2")
    assert await adapter.list_groups() == sorted(WEIRD_SCOPES)
    await adapter.mutate("{x}", "a", lambda _: None)
    assert await adapter.list_groups() == sorted(WEIRD_SCOPES)
    await adapter.mutate("{x}", "b", lambda _: None)  # its last key
    await adapter.mutate("", "a", lambda _: None)
    await adapter.mutate("", "b", lambda _: None)
    expected = sorted(set(WEIRD_SCOPES) - {"{x}", ""})
    assert await adapter.list_groups() == expected
    # Keys that match the pattern but that the adapter never writes are ignored.
    p = adapter._prefix
    for name in [b":{%61}:kv", b":{a{b}:kv", b":{%ZZ}:kv", b":{%FF}:kv", b":{}:kv", b":{x}:kv:more"]:
        raw_redis.hset(p + name, "k", b"1:1:1")
    assert await adapter.list_groups() == expected
    # Another prefix (even one the first one matches as a glob) is another keyspace.
    other = RedisAdapter(redis_url, prefix=adapter._prefix.decode() + "*")
    await other.open()
    try:
        assert await other.list_groups() == []
        await other.mutate("mine", "k", lambda _: b"1")
        assert await other.list_groups() == ["mine"]
        assert await adapter.list_groups() == expected
    finally:
        await other.close()
    with pytest.raises(ValueError, match="braces"):
        RedisAdapter(redis_url, prefix="a{b}")


async def test_conflicts_rerun_fn_then_give_up(
    adapter: RedisAdapter, raw_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    kv, counter = adapter._prefix + b":{s}:kv", adapter._prefix + b":{s}:version"
    await adapter.mutate("s", "k", lambda _: b"0")
    seen: list[bytes | None] = []

    def meddling(times: int, key: str = "k") -> Any:
        def fn(current: Entry | None) -> bytes:
            seen.append(None if current is None else current.raw)
            if len(seen) <= times:  # another client writes the key mid-transaction
                version = raw_redis.incr(counter)
                raw_redis.hset(kv, key, b"%d:1:%d" % (version, len(seen)))
            return b"42"

        return fn

    old, new = await adapter.mutate("s", "k", meddling(2))
    assert seen == [b"0", b"1", b"2"] and old is not None and old.raw == b"2"
    assert new is not None and (await adapter.get("s", "k")) == new

    monkeypatch.setattr(redis_adapter, "MAX_ATTEMPTS", 3)
    seen.clear()
    with pytest.raises(AdapterError, match=r"gave up .* after 3 attempts"):
        await adapter.mutate("s", "k", meddling(99))
    assert len(seen) == 3
    stored = await adapter.get("s", "k")
    assert stored is not None and stored.raw == b"3"  # the meddler's last write, not ours
    # Another key of the scope written meanwhile (taking a version) reruns it too:
    # the versions this write took would no longer be the scope's next ones.
    seen.clear()
    monkeypatch.setattr(redis_adapter, "MAX_ATTEMPTS", 100)
    _, new = await adapter.mutate("s", "k", meddling(1, key="other"))
    other = raw_redis.hget(kv, "other")
    assert len(seen) == 2 and new is not None and other is not None
    assert new.version > int(other.split(b":")[0])


async def test_open_fails_fast_with_config_error() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        await RedisAdapter(f"redis://:hunter2@127.0.0.1:{port}/0").open()
    assert time.monotonic() - start < 6
    assert f"127.0.0.1:{port}" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="invalid redis_url"):
        await RedisAdapter("http://127.0.0.1:1").open()


# -- group commit -----------------------------------------------------------------


def put(value: object, expires_at: int | None = None) -> Mutation:
    raw = msgspec.json.encode(value)
    return (lambda _c: raw) if expires_at is None else (lambda _c: Put(raw, expires_at))


def record_events(a: RedisAdapter) -> list[tuple[bytes, str, str, bytes | None, bytes | None]]:
    """Start recording the change events ``a`` receives (its own included)."""
    seen: list[tuple[bytes, str, str, bytes | None, bytes | None]] = []
    a.subscribe(lambda *event: seen.append(event))
    return seen


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_concurrent_writes_of_one_scope_commit_together(adapter: RedisAdapter) -> None:
    events = record_events(adapter)
    await adapter.mutate("g", "seed", put(0))
    before = adapter.commits
    pairs = await asyncio.gather(*(adapter.mutate("g", f"k{i}", put(i)) for i in range(64)))
    assert adapter.commits - before <= 2, adapter.commits - before  # 64 writes, one EXEC (or two)
    versions = [new.version for _, new in pairs if new is not None]
    assert len(set(versions)) == 64 and min(versions) > 1
    # Versions and events follow the queue (= call) order.
    assert versions == sorted(versions)
    assert await adapter.get_many("g", [f"k{i}" for i in range(64)]) == [new for _, new in pairs]
    # Insertion order (the ord of each entry) is the call order too.
    assert [e.raw for e in await adapter.list("g")] == [b"0"] + [b"%d" % i for i in range(64)]
    rows, more = await adapter.list_page("g", "k", None, None)
    assert [key for key, _ in rows] == sorted(f"k{i}" for i in range(64)) and not more
    await until(lambda: len(events) == 65)
    assert [(e[0], e[2], e[4]) for e in events[1:]] == [(CREATED, f"k{i}", b"%d" % i) for i in range(64)]
    # Another scope is another queue, another batch.
    before = adapter.commits
    two = await asyncio.gather(adapter.mutate("g", "k0", put("x")), adapter.mutate("h", "k0", put("y")))
    assert [new.raw for _, new in two if new is not None] == [b'"x"', b'"y"']
    assert adapter.commits - before == 2


async def test_writes_of_one_key_in_a_batch_compose(adapter: RedisAdapter) -> None:
    events = record_events(adapter)
    _, first = await adapter.mutate("c", "k", put(1))
    assert first is not None
    await adapter.mutate("c", "a", put(0))
    before = adapter.commits
    increment = lambda current: b"%d" % (int(current.raw) + 1)  # noqa: E731
    (old_a, new_a), (old_b, new_b), (old_c, new_c), (old_d, new_d) = await asyncio.gather(
        adapter.mutate("c", "k", put(10)),
        adapter.mutate("c", "k", increment),
        adapter.mutate("c", "k", lambda _: None),
        adapter.mutate("c", "k", put(20)),
    )
    # The first goes out at once (the scope was idle), the rest queue behind it: one batch.
    assert adapter.commits - before == 2
    assert old_a == first and new_a is not None and new_a.raw == b"10"
    assert old_b == new_a and new_b is not None and new_b.raw == b"11"
    assert old_c == new_b and new_c is None
    assert old_d is None and new_d is not None and new_d.raw == b"20"
    assert first.version < new_a.version < new_b.version < new_d.version
    assert await adapter.get("c", "k") == new_d
    await until(lambda: len(events) == 6)
    assert [(e[0], e[3], e[4]) for e in events if e[2] == "k"] == [
        (CREATED, None, b"1"),
        (UPDATED, b"1", b"10"),
        (UPDATED, b"10", b"11"),
        (DELETED, b"11", None),
        (CREATED, None, b"20"),
    ]
    # Deleted and created again: the key moved to the end of the list order.
    assert [e.raw for e in await adapter.list("c")] == [b"0", b"20"]


async def test_a_failing_write_fails_alone(adapter: RedisAdapter) -> None:
    await adapter.mutate("f", "k", put(1))
    stored = await adapter.get("f", "k")
    assert stored is not None

    def expect(version: int) -> Mutation:
        def run(current: Entry | None) -> bytes:
            if current is None or current.version != version:
                raise PreconditionFailed("stale", None if current is None else current.version)
            return b"2"

        return run

    def too_large(_current: Entry | None) -> bytes:
        raise IIIError("VALUE_TOO_LARGE", "too large")

    before = adapter.commits
    results = await asyncio.gather(
        adapter.mutate("f", "a", put("a")),
        adapter.mutate("f", "k", expect(stored.version - 1)),  # stale: fails
        adapter.mutate("f", "b", too_large),
        adapter.mutate_many([("f", "c", put("c")), ("f", "d", too_large)]),  # all or nothing
        adapter.mutate("f", "k", expect(stored.version)),  # holds
        adapter.mutate_many([("f", "e", put("e")), ("f", "e", put("e2"))]),
        return_exceptions=True,
    )
    assert adapter.commits - before == 2  # the first alone, then one batch
    assert isinstance(results[1], PreconditionFailed) and results[1].current_version == stored.version
    assert isinstance(results[2], IIIError) and results[2].code == "VALUE_TOO_LARGE"
    assert isinstance(results[3], IIIError)
    got = {
        key: (None if e is None else e.raw)
        for key, e in zip("abcdek", await adapter.get_many("f", list("abcdek")), strict=True)
    }
    assert got == {"a": b'"a"', "b": None, "c": None, "d": None, "e": b'"e2"', "k": b"2"}
    # Only the written entries took versions.
    _, new = await adapter.mutate("f", "z", put(0))
    assert new is not None and new.version == stored.version + 5


async def test_an_expired_entry_replaced_in_a_batch(adapter: RedisAdapter, raw_redis: redis.Redis) -> None:
    events = record_events(adapter)
    await adapter.mutate("x", "k", put("gone", now_ms() - 1))
    await adapter.mutate("x", "j", put("gone", now_ms() - 1))
    assert await adapter.get("x", "k") is None
    ttl = adapter._prefix + b":{x}:ttl"
    assert raw_redis.zcard(ttl) == 2
    results = await asyncio.gather(
        adapter.mutate("x", "k", put(1)),
        adapter.mutate("x", "k", put(2)),
        adapter.mutate("x", "j", put(3)),
        adapter.mutate("x", "j", lambda _: None),
    )
    assert [(old, None if new is None else new.raw) for old, new in results[:2]] == [
        (None, b"1"),
        (results[0][1], b"2"),
    ]
    await until(lambda: len(events) == 8)
    assert [(e[0], e[2], e[3], e[4]) for e in events[2:]] == [
        (EXPIRED, "k", b'"gone"', None),
        (CREATED, "k", None, b"1"),
        (UPDATED, "k", b"1", b"2"),
        (EXPIRED, "j", b'"gone"', None),
        (CREATED, "j", None, b"3"),
        (DELETED, "j", b"3", None),
    ]
    assert raw_redis.zcard(ttl) == 0 and raw_redis.hkeys(adapter._prefix + b":{x}:kv") == [b"k"]
    assert raw_redis.zrange(adapter._prefix + b":{x}:keys", 0, -1) == [b"k"]


async def test_increments_from_two_engines_add_up(adapter: RedisAdapter) -> None:
    other = RedisAdapter(adapter.url, prefix=adapter._prefix.decode())
    await other.open()
    try:

        def increment(current: Entry | None) -> bytes:
            return b"%d" % (1 + (0 if current is None else int(current.raw)))

        commits = adapter.commits + other.commits
        results = await asyncio.gather(
            *((adapter, other)[i % 2].mutate("n", "k", increment) for i in range(1000))
        )
        assert (await adapter.get("n", "k")) == (await other.get("n", "k"))
        stored = await adapter.get("n", "k")
        assert stored is not None and stored.raw == b"1000"
        assert sorted(int(new.raw) for _, new in results if new is not None) == list(range(1, 1001))
        assert adapter.commits + other.commits - commits < 200
    finally:
        await other.close()


async def test_cancelled_callers_and_close(
    adapter: RedisAdapter, redis_url: str, raw_redis: redis.Redis
) -> None:
    # A caller cancelled while queued is dropped; the others are written.
    # Redis itself holds the first write (CLIENT PAUSE WRITE delays scripts).
    raw_redis.client_pause(5000, all=False)
    first = asyncio.create_task(adapter.mutate("q", "first", put(0)))
    await asyncio.sleep(0.05)  # sent, held by Redis
    tasks = [asyncio.create_task(adapter.mutate("q", f"k{i}", put(i))) for i in range(10)]
    await asyncio.sleep(0.01)
    tasks[5].cancel()
    raw_redis.client_unpause()
    done = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert isinstance(done[6], asyncio.CancelledError)
    assert [not isinstance(result, BaseException) for result in done] == [i != 6 for i in range(11)]
    entries = await adapter.get_many("q", [f"k{i}" for i in range(10)])
    assert [e is not None for e in entries] == [i != 5 for i in range(10)]
    # Closing fails what is in flight or queued instead of leaving callers waiting.
    other = RedisAdapter(redis_url, prefix=adapter._prefix.decode())
    await other.open()
    raw_redis.client_pause(5000, all=False)
    try:
        first = asyncio.create_task(other.mutate("q", "first", put(1)))
        await asyncio.sleep(0.05)
        tasks = [asyncio.create_task(other.mutate("q", f"k{i}", put(-i))) for i in range(10)]
        await asyncio.sleep(0.01)
        await other.close()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
    finally:
        raw_redis.client_unpause()
    assert "during the write" in str(results[0])
    for result in results:
        assert isinstance(result, AdapterError) and "was closed" in str(result), result
    assert other._queues == {}
    with pytest.raises(AdapterError, match="not open"):
        await other.mutate("q", "k", put(0))


async def test_an_outage_fails_the_batch_and_nothing_sticks(private_redis: Any) -> None:
    a = RedisAdapter(private_redis.url, prefix="p")
    await a.open()
    try:
        await a.mutate("o", "k", put(0))
        private_redis.stop()
        results = await asyncio.gather(
            *(a.mutate("o", f"k{i}", put(i)) for i in range(20)), return_exceptions=True
        )
        for result in results:
            assert isinstance(result, AdapterError) and "unreachable" in str(result), result
        private_redis.start()  # empty: nothing was saved
        pairs = await asyncio.gather(*(a.mutate("o", f"k{i}", put(i)) for i in range(20)))
        assert [old for old, _ in pairs] == [None] * 20
        assert a._queues == {}
    finally:
        await a.close()


# -- several engines on one Redis ---------------------------------------------------


def redis_state(url: str) -> StateConfig:
    return StateConfig(adapter="redis", redis_url=url)


class Recorder:
    """A function that records the payloads it is called with."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()

    async def __call__(self, data: Any) -> None:
        self.events.append(data)
        self._changed.set()

    async def wait_until(self, done: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"events never matched; got {self.events!r}"
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.events

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        return await self.wait_until(lambda events: len(events) >= count, timeout)


async def watch(w: Worker, function_id: str, config: dict[str, Any]) -> Recorder:
    """Register a recording function and a state trigger for it; return once both are live."""
    rec = Recorder()
    w.register_function(function_id, rec)
    w.register_trigger({"type": "state", "function_id": function_id, "config": config})
    await w.trigger("state::list_groups", {})  # frames are handled in order: both are registered now
    return rec


@dataclasses.dataclass
class Pair:
    a: Worker
    b: Worker


@pytest.fixture
async def pair(redis_url: str, raw_redis: redis.Redis) -> AsyncIterator[Pair]:
    """Two engines on the session's Redis (flushed first), one worker on each."""
    raw_redis.flushall()
    async with (
        running_engine(redis_state(redis_url)) as url_a,
        running_engine(redis_state(redis_url)) as url_b,
        worker(url_a, "on-a") as wa,
        worker(url_b, "on-b") as wb,
    ):
        yield Pair(wa, wb)


async def test_engines_share_state(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert await a.trigger("state::set", {"scope": "s", "key": "k", "value": {"x": [1, 2.5]}}) == {
        "old_value": None,
        "new_value": {"x": [1, 2.5]},
    }
    assert await b.trigger("state::get", {"scope": "s", "key": "k"}) == {"x": [1, 2.5]}
    await b.trigger("state::set", {"scope": "s", "key": "j", "value": []})
    ops = [{"type": "set", "path": "", "value": 1}]
    await a.trigger("state::update", {"scope": "t", "key": "k", "ops": ops})
    assert await a.trigger("state::list", {"scope": "s"}) == [{"x": [1, 2.5]}, []]
    assert await a.trigger("state::list_groups", {}) == {"groups": ["s", "t"]}
    assert await b.trigger("state::delete", {"scope": "t", "key": "k"}) == 1
    assert await a.trigger("state::list_groups", {}) == {"groups": ["s"]}
    assert await a.trigger("state::get", {"scope": "t", "key": "k"}) is None


async def test_concurrent_increments_across_engines(pair: Pair) -> None:
    ops = [{"type": "increment", "path": "n", "by": 1}]
    results = await asyncio.gather(
        *(
            (pair.a if i % 2 else pair.b).trigger("state::update", {"scope": "c", "key": "k", "ops": ops})
            for i in range(1000)
        )
    )
    assert await pair.a.trigger("state::get", {"scope": "c", "key": "k"}) == {"n": 1000}
    # Every increment saw a distinct predecessor: none was lost or applied twice.
    assert sorted(r["new_value"]["n"] for r in results) == list(range(1, 1001))


async def test_trigger_fires_once_wherever_the_write_happens(pair: Pair) -> None:
    rec = await watch(pair.b, "b::changes", {"scope": "w"})
    await pair.a.trigger("state::set", {"scope": "w", "key": "k", "value": {"v": 1}})
    await pair.a.trigger("state::set", {"scope": "other", "key": "k", "value": 0})  # filtered out
    ops = [{"type": "increment", "path": "v", "by": 1}]
    await pair.b.trigger("state::update", {"scope": "w", "key": "k", "ops": ops})  # a local write on B
    await pair.a.trigger("state::delete", {"scope": "w", "key": "k"})
    await pair.a.trigger("state::delete", {"scope": "w", "key": "k"})  # absent: nothing fires
    events = await rec.wait_for(3)
    await asyncio.sleep(0.3)  # room for a duplicate to show up
    head = {"type": "state", "scope": "w", "key": "k"}
    assert events == [
        {**head, "event_type": "state:created", "old_value": None, "new_value": {"v": 1}},
        {**head, "event_type": "state:updated", "old_value": {"v": 1}, "new_value": {"v": 2}},
        {**head, "event_type": "state:deleted", "old_value": {"v": 2}, "new_value": None},
    ]


async def test_redis_outage_and_recovery(private_redis: Any) -> None:
    url = private_redis.url
    async with (
        running_engine(redis_state(url)) as url_a,
        running_engine(redis_state(url)) as url_b,
        worker(url_a, "on-a") as a,
        worker(url_b, "on-b") as b,
    ):
        rec = await watch(b, "b::changes", {"scope": "o"})
        a.register_function("a::ping", lambda data: "pong")
        b.register_function("b::ping", lambda data: "pong")
        await a.trigger("state::set", {"scope": "o", "key": "k", "value": 1})
        await rec.wait_for(1)

        private_redis.stop()
        for w, function_id, payload, code in [
            (a, "state::set", {"scope": "o", "key": "k", "value": 2}, "SET_ERROR"),
            (b, "state::get", {"scope": "o", "key": "k"}, "GET_ERROR"),
            (a, "state::update", {"scope": "o", "key": "k", "ops": []}, "UPDATE_ERROR"),
            (b, "state::delete", {"scope": "o", "key": "k"}, "DELETE_ERROR"),
            (a, "state::list", {"scope": "o"}, "LIST_ERROR"),
            (b, "state::list_groups", {}, "LIST_GROUPS_ERROR"),
        ]:
            start = time.monotonic()
            with pytest.raises(IIIError) as err:
                await w.trigger(function_id, payload)
            assert err.value.code == code, err.value
            assert f"Redis at {url} is unreachable" in err.value.message, err.value.message
            assert time.monotonic() - start < 8, f"{function_id} took too long to fail"
        # The engines are still up and routing.
        assert a.connected and b.connected
        assert await a.trigger("a::ping", {}) == "pong"
        assert await b.trigger("b::ping", {}) == "pong"

        private_redis.start()  # empty: nothing was saved
        assert await a.trigger("state::set", {"scope": "o", "key": "k", "value": 3}) == {
            "old_value": None,
            "new_value": 3,
        }
        assert await b.trigger("state::get", {"scope": "o", "key": "k"}) == 3
        # B's subscriber reconnects by itself; from then on its triggers fire again.
        deadline = time.monotonic() + 15
        value = 3
        while len(rec.events) < 2:
            assert time.monotonic() < deadline, f"no event after Redis came back: {rec.events!r}"
            await asyncio.sleep(0.2)
            value += 1
            await a.trigger("state::set", {"scope": "o", "key": "k", "value": value})
        await a.trigger("state::set", {"scope": "o", "key": "k", "value": "last"})
        await rec.wait_until(lambda events: events[-1]["new_value"] == "last")


# -- Redis Cluster ------------------------------------------------------------------


async def test_adapter_on_a_redis_cluster(redis_cluster: RedisClusterServers) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    a, b = (
        RedisAdapter(redis_cluster.url, prefix=prefix),
        RedisAdapter(redis_cluster.nodes[2].url, prefix=prefix),
    )
    events: list[tuple[bytes, str, str]] = []
    a.subscribe(lambda event_type, scope, key, old, new: events.append((event_type, scope, key)))
    await a.open()
    await b.open()
    try:
        assert a.cluster and b.cluster
        scopes = ["s0", "s1", "s2", "s3", "s4", "s5", *WEIRD_SCOPES]
        nodes = {a._redis.get_node_from_key(a._kv(scope)).name for scope in scopes}
        assert len(nodes) == 3, nodes  # the scopes live on every node
        for scope in scopes:
            await a.mutate(scope, "k", lambda _: b'{"n":0}')
            assert await update(b, scope, "k", [{"type": "increment", "path": "n", "by": 2}]) == (
                {"n": 2},
                [],
            )
            await b.mutate(scope, "j", lambda _: b"[]")
            assert [e.raw for e in await a.list(scope)] == [b'{"n":2}', b"[]"]
        assert await a.list_groups() == sorted(scopes)
        for scope in scopes[::2]:
            await a.mutate(scope, "k", lambda _: None)
            await b.mutate(scope, "j", lambda _: None)
        assert await b.list_groups() == sorted(scopes[1::2])
        assert await a.get(scopes[0], "k") is None

        # Concurrent writers on two clients, scopes on different nodes: WATCH/EXEC on the slot's node.
        ops = [{"type": "increment", "path": "", "by": 1}]
        await asyncio.gather(*(update(a if i % 2 else b, f"s{i % 3}", "c", ops) for i in range(150)))
        for i in range(3):
            stored = await a.get(f"s{i}", "c")
            assert stored is not None and stored.raw == b"50"

        # Events from every node reach the subscriber on the node of the URL.
        expected = {(b"state:created", scope, "k") for scope in scopes} | {
            (b"state:deleted", scope, "j") for scope in scopes[::2]
        }
        deadline = time.monotonic() + 10
        while not expected <= set(events):
            assert time.monotonic() < deadline, expected - set(events)
            await asyncio.sleep(0.05)
    finally:
        await a.close()
        await b.close()


async def test_engines_on_a_redis_cluster(redis_cluster: RedisClusterServers) -> None:
    url = redis_cluster.url
    async with (
        running_engine(redis_state(url)) as url_a,
        running_engine(redis_state(redis_cluster.nodes[1].url)) as url_b,
        worker(url_a, "on-a") as wa,
        worker(url_b, "on-b") as wb,
    ):
        rec = await watch(wb, "b::changes", {"scope": "c{1}"})
        await wa.trigger("state::set", {"scope": "c{1}", "key": "k", "value": {"v": 1}})
        await wa.trigger("state::set", {"scope": "c2", "key": "k", "value": 2})
        assert await wb.trigger("state::get", {"scope": "c{1}", "key": "k"}) == {"v": 1}
        groups = (await wb.trigger("state::list_groups", {}))["groups"]
        assert {"c{1}", "c2"} <= set(groups)
        events = await rec.wait_for(1)
        assert events[0]["event_type"] == "state:created" and events[0]["new_value"] == {"v": 1}
