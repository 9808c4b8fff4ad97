"""Adapter contract for the State extensions: mutate_many, expiry, key order, count.

Run against every adapter that stores data itself (memory, sqlite, redis).
The engine-level behaviour (functions, triggers) is in the other
``test_state_ext_*`` modules.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pyiii.modules.state.triggers import EXPIRED
from pyiii.stores.base import (
    KEEP,
    Entry,
    Mutation,
    PreconditionFailed,
    Put,
    StateAdapter,
    now_ms,
)
from pyiii.stores.memory import MemoryAdapter, prefix_end
from pyiii.stores.redis import RedisAdapter
from pyiii.stores.sqlite import DB_FILE_NAME, SqliteAdapter

ADAPTERS: dict[str, Callable[[Path, pytest.FixtureRequest], StateAdapter]] = {
    "memory": lambda tmp, request: MemoryAdapter(),
    "sqlite": lambda tmp, request: SqliteAdapter(tmp / "store"),
    # The session's redis-server; a fresh key prefix isolates each test.
    "redis": lambda tmp, request: RedisAdapter(
        request.getfixturevalue("redis_url"), prefix=f"test-{uuid.uuid4().hex}"
    ),
}

ODD_KEYS = ["", "a", "a\x00", "ab", "b", "é", "日本", "\ud800", "\ue000", "\U0010ffff", "z" * 300]


@pytest.fixture(params=sorted(ADAPTERS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateAdapter]:
    a = ADAPTERS[request.param](tmp_path, request)
    await a.open()
    yield a
    await a.close()


def put(value: object, expires_at: int | None = None) -> Mutation:
    raw = json.dumps(value).encode()
    if expires_at is None:
        return lambda _current: raw
    return lambda _current: Put(raw, expires_at)


def delete(_current: Entry | None) -> None:
    return None


class Expiries:
    """Records the expiries an adapter reports.

    Local adapters report through ``on_expired``; Redis publishes them to
    every engine as ``state:expired`` changes (``subscribe``).
    """

    def __init__(self, store: StateAdapter) -> None:
        self.seen: list[tuple[str, str, object]] = []
        self.changed = asyncio.Event()
        store.subscribe(self._change)
        store.on_expired(self._expired)

    def _expired(self, scope: str, key: str, entry: Entry) -> None:
        self.seen.append((scope, key, json.loads(entry.raw)))
        self.changed.set()

    def _change(self, event_type: bytes, scope: str, key: str, old: bytes | None, new: bytes | None) -> None:
        if event_type == EXPIRED:
            assert old is not None and new is None
            self._expired(scope, key, Entry(old, 0))

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()


# -- mutate_many --------------------------------------------------------------


async def test_mutate_many_applies_in_order(store: StateAdapter) -> None:
    await store.mutate("s", "a", put(1))
    seen: list[Entry | None] = []

    def bump(current: Entry | None) -> bytes:
        seen.append(current)
        return str(int(current.raw) + 10 if current is not None else 0).encode()

    pairs = await store.mutate_many(
        [("s", "a", bump), ("s", "a", bump), ("t", "b", put("x")), ("s", "gone", delete), ("s", "a", put(7))]
    )
    (o1, n1), (o2, n2), (o3, n3), (o4, n4), (o5, n5) = pairs
    assert o1 is not None and o1.raw == b"1" and n1 is not None and n1.raw == b"11"
    assert o2 == n1 and n2 is not None and n2.raw == b"21"  # the second item saw the first
    assert seen == [o1, n1]
    assert o3 is None and n3 is not None
    assert (o4, n4) == (None, None)  # deleting an absent key writes nothing
    assert o5 == n2 and n5 is not None and n5.raw == b"7"
    assert n1.version < n2.version < n5.version
    assert await store.get("s", "a") == n5
    assert await store.get("t", "b") == n3
    assert await store.list_groups() == ["s", "t"]


async def test_mutate_many_failure_writes_nothing(store: StateAdapter) -> None:
    _, before = await store.mutate("s", "a", put(1))

    def refuse(current: Entry | None) -> bytes:
        raise PreconditionFailed("no", None if current is None else current.version)

    with pytest.raises(PreconditionFailed):
        await store.mutate_many(
            [("s", "a", put(2)), ("s", "new", put(3)), ("u", "x", put(4)), ("s", "a", refuse)]
        )
    assert await store.get("s", "a") == before
    assert await store.get("s", "new") is None
    assert await store.list_groups() == ["s"]
    assert [json.loads(e.raw) for e in await store.list("s")] == [1]


async def test_mutate_many_keep_and_empty(store: StateAdapter) -> None:
    assert await store.mutate_many([]) == []
    assert await store.mutate_many([("s", "k", lambda _: KEEP)]) == [(None, None)]
    assert await store.list_groups() == []


# -- expiry ---------------------------------------------------------------------


async def test_expired_entries_read_as_absent_everywhere(store: StateAdapter) -> None:
    expiries = Expiries(store)
    soon = now_ms() + 400
    await store.mutate("s", "live", put(1))
    await store.mutate("s", "brief", put(2, soon))
    await store.mutate("only-brief", "k", put(3, soon))
    entry = await store.get("s", "brief")
    assert entry is not None and entry.expires_at == soon
    assert await store.count("s", "") == 2
    await asyncio.sleep((soon - now_ms()) / 1000 + 0.01)
    # Absent for every read, whether or not the sweeper got to it yet.
    assert await store.get("s", "brief") is None
    assert await store.get_many("s", ["brief", "live"]) == [None, await store.get("s", "live")]
    assert [json.loads(e.raw) for e in await store.list("s")] == [1]
    assert [k for k, _ in (await store.list_page("s", "", None, None))[0]] == ["live"]
    assert await store.count("s", "") == 1
    assert await store.list_groups() == ["s"]
    await expiries.wait_for(2)
    await asyncio.sleep(0.1)
    assert sorted(expiries.seen) == [("only-brief", "k", 3), ("s", "brief", 2)]  # once each


async def test_expired_entry_is_absent_to_mutations(store: StateAdapter) -> None:
    expiries = Expiries(store)
    await store.mutate("s", "k", put("old", now_ms() - 1))  # expired at once
    seen: list[Entry | None] = []

    def record(current: Entry | None) -> bytes:
        seen.append(current)
        return b'"new"'

    old, new = await store.mutate("s", "k", record)
    assert seen == [None] and old is None
    assert new is not None and new.expires_at is None  # plain bytes: no expiry
    await expiries.wait_for(1)
    await asyncio.sleep(0.05)
    assert expiries.seen == [("s", "k", "old")]  # reported once, before or as it was replaced
    assert await store.get("s", "k") == new


async def test_overwritten_entries_do_not_expire(store: StateAdapter) -> None:
    expiries = Expiries(store)
    await store.mutate("s", "k", put(1, now_ms() + 300))
    await store.mutate("s", "k", put(2))  # no expiry now
    await store.mutate("s", "j", put(1, now_ms() + 300))
    await store.mutate("s", "j", put(2, now_ms() + 60_000))  # a later expiry
    await asyncio.sleep(0.45)
    assert expiries.seen == []
    assert await store.count("s", "") == 2


async def test_many_expiries_fire_once_each(store: StateAdapter) -> None:
    expiries = Expiries(store)
    base = now_ms()
    await store.mutate_many([("s", f"k{i}", put(i, base + 20 + i)) for i in range(200)])
    await expiries.wait_for(200)
    await asyncio.sleep(0.1)
    assert sorted(v for _, _, v in expiries.seen) == list(range(200))  # type: ignore[type-var]
    assert await store.list_groups() == []


# -- ordered listing ------------------------------------------------------------


async def test_list_page_order_prefix_and_cursor(store: StateAdapter) -> None:
    keys = [*ODD_KEYS, "user:1", "user:10", "user:2", "users", "user", "usez"]
    await store.mutate_many([("s", k, put(i)) for i, k in enumerate(keys)])
    everything, more = await store.list_page("s", "", None, None)
    assert [k for k, _ in everything] == sorted(keys) and not more
    user, more = await store.list_page("s", "user:", None, None)
    assert [k for k, _ in user] == ["user:1", "user:10", "user:2"] and not more
    page, more = await store.list_page("s", "user:", None, 2)
    assert [k for k, _ in page] == ["user:1", "user:10"] and more
    page, more = await store.list_page("s", "user:", "user:10", 2)
    assert [k for k, _ in page] == ["user:2"] and not more
    page, more = await store.list_page("s", "user:", "a", 1)  # a cursor before the prefix
    assert [k for k, _ in page] == ["user:1"] and more
    # Paging one key at a time visits every key once, in order.
    seen: list[str] = []
    after: str | None = None
    while True:
        page, more = await store.list_page("s", "", after, 1)
        seen += [k for k, _ in page]
        if not more:
            break
        after = page[-1][0]
    assert seen == sorted(keys)
    assert await store.list_page("nope", "", None, 5) == ([], False)
    assert await store.list_page("s", "\U0010ffff", None, None) == (
        [("\U0010ffff", e) for k, e in everything if k == "\U0010ffff"],
        False,
    )
    entry = dict(everything)["é"]
    assert json.loads(entry.raw) == keys.index("é")


async def test_list_page_follows_writes(store: StateAdapter) -> None:
    await store.mutate_many([("s", f"k{i:03}", put(i)) for i in range(10)])
    page, _ = await store.list_page("s", "", None, 3)  # builds the index where lazy
    assert [k for k, _ in page] == ["k000", "k001", "k002"]
    await store.mutate("s", "k001", delete)
    await store.mutate("s", "k0015", put("new"))
    await store.mutate("s", "k000", put("overwritten"))
    page, _ = await store.list_page("s", "", "k000", 2)
    assert [k for k, _ in page] == ["k0015", "k002"]
    assert await store.count("s", "k00") == 10
    assert await store.count("s", "") == 10


async def test_count(store: StateAdapter) -> None:
    assert await store.count("s", "") == 0
    await store.mutate_many([("s", k, put(1)) for k in ODD_KEYS])
    assert await store.count("s", "") == len(ODD_KEYS)
    assert await store.count("s", "a") == 3
    assert await store.count("s", "\U0010ffff") == 1
    assert await store.count("s", "zz") == 1
    assert await store.count("s", "nope") == 0


def test_prefix_end() -> None:
    assert prefix_end("") is None
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff\U0010ffff") is None
    for prefix in ["a", "é", "\ud7ff", "x\U0010ffff"]:
        end = prefix_end(prefix)
        assert end is not None and prefix < end
        for s in [prefix, prefix + "\U0010ffff" * 3, prefix + "\x00"]:
            assert s < end


async def test_get_many(store: StateAdapter) -> None:
    _, a = await store.mutate("s", "a", put(1))
    assert await store.get_many("s", ["a", "b", "a"]) == [a, None, a]
    assert await store.get_many("none", ["a"]) == [None]
    assert await store.get_many("s", []) == []


# -- SQLite specifics ----------------------------------------------------------

V1_SCHEMA = [
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE kv (
    ord INTEGER PRIMARY KEY,
    scope BLOB NOT NULL,
    key BLOB NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL,
    UNIQUE (scope, key)
)""",
    "INSERT INTO meta (name, value) VALUES ('schema_version', 1), ('last_version', 5)",
    "INSERT INTO kv VALUES (1, CAST('s' AS BLOB), CAST('b' AS BLOB), 4, CAST('\"two\"' AS BLOB))",
    "INSERT INTO kv VALUES (3, CAST('s' AS BLOB), CAST('a' AS BLOB), 3, CAST('{\"n\":1}' AS BLOB))",
]


async def test_sqlite_upgrades_a_version_1_file(tmp_path: Path) -> None:
    db = tmp_path / "store" / DB_FILE_NAME
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    for statement in V1_SCHEMA:
        conn.execute(statement)
    conn.commit()
    conn.close()

    a = SqliteAdapter(tmp_path / "store")
    await a.open()
    try:
        assert [json.loads(e.raw) for e in await a.list("s")] == ["two", {"n": 1}]  # ord order kept
        entry = await a.get("s", "a")
        assert entry == Entry(b'{"n":1}', 3, None)
        _, new = await a.mutate("s", "c", put(3, now_ms() + 60_000))
        assert new is not None and new.version == 6  # continues after last_version
    finally:
        await a.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (2,)
        rows = conn.execute("SELECT CAST(key AS TEXT), expires_at FROM kv ORDER BY ord").fetchall()
        assert rows[:2] == [("b", None), ("a", None)] and rows[2][1] is not None
    finally:
        conn.close()

    b = SqliteAdapter(tmp_path / "store")  # a version 2 file opens as it is
    await b.open()
    try:
        assert await b.count("s", "") == 3
    finally:
        await b.close()


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    from pyiii.errors import ConfigError

    db = tmp_path / "store" / DB_FILE_NAME
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    for statement in V1_SCHEMA[:2]:
        conn.execute(statement)
    conn.execute("INSERT INTO meta (name, value) VALUES ('schema_version', 3), ('last_version', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="schema version 3"):
        await SqliteAdapter(tmp_path / "store").open()


async def test_sqlite_expiry_survives_reopen(tmp_path: Path) -> None:
    a = SqliteAdapter(tmp_path / "store")
    await a.open()
    soon = now_ms() + 300
    await a.mutate("s", "brief", put("b", soon))
    await a.mutate("s", "later", put("l", now_ms() + 60_000))
    await a.mutate("s", "plain", put("p"))
    await a.close()
    await asyncio.sleep((soon - now_ms()) / 1000 + 0.02)

    b = SqliteAdapter(tmp_path / "store")
    await b.open()
    try:
        assert await b.get("s", "brief") is None  # expired while closed: absent at once
        later = await b.get("s", "later")
        assert later is not None and later.expires_at is not None
        expiries = Expiries(b)  # what the State module does once it starts
        await expiries.wait_for(1)
        assert expiries.seen == [("s", "brief", "b")]
    finally:
        await b.close()
    conn = sqlite3.connect(b.db_path)
    try:
        keys = [r[0] for r in conn.execute("SELECT CAST(key AS TEXT) FROM kv ORDER BY ord")]
    finally:
        conn.close()
    assert keys == ["later", "plain"]  # the removal was committed


async def test_sqlite_mutate_many_is_one_commit(tmp_path: Path) -> None:
    a = SqliteAdapter(tmp_path / "store")
    await a.open()
    try:
        before = a.commits
        await a.mutate_many([("s", f"k{i}", put(i)) for i in range(100)])
        assert a.commits == before + 1
    finally:
        await a.close()
    b = SqliteAdapter(tmp_path / "store")
    await b.open()
    try:
        assert await b.count("s", "") == 100
    finally:
        await b.close()
