"""StateAdapter contract tests, run against every adapter, plus SQLite specifics."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pyiii.errors import ConfigError
from pyiii.sqlite_writer import INLINE_AFTER
from pyiii.stores.base import KEEP, AdapterError, Entry, Mutation, Put, StateAdapter
from pyiii.stores.memory import MemoryAdapter
from pyiii.stores.redis import RedisAdapter
from pyiii.stores.sqlite import DB_FILE_NAME, SqliteAdapter

# name -> factory(tmp_path, request). Add further adapters here.
ADAPTERS: dict[str, Callable[[Path, pytest.FixtureRequest], StateAdapter]] = {
    "memory": lambda tmp, request: MemoryAdapter(),
    "sqlite": lambda tmp, request: SqliteAdapter(tmp / "store"),
    # The session's redis-server; a fresh key prefix isolates each test.
    "redis": lambda tmp, request: RedisAdapter(
        request.getfixturevalue("redis_url"), prefix=f"test-{uuid.uuid4().hex}"
    ),
}

ODD_NAMES = ["", "a/b", "..", "../../etc/passwd", "nul\x00byte", "ünï©ødé 🚀", "x" * 10_000]


@pytest.fixture(params=sorted(ADAPTERS))
async def state_adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateAdapter]:
    a = ADAPTERS[request.param](tmp_path, request)
    await a.open()
    yield a
    await a.close()


def put(value: object) -> Mutation:
    raw = json.dumps(value).encode()
    return lambda _current: raw


def delete(_current: Entry | None) -> None:
    return None


def increment(current: Entry | None) -> bytes:
    return str((0 if current is None else int(current.raw)) + 1).encode()


async def values(state_adapter: StateAdapter, scope: str) -> list[object]:
    return [json.loads(e.raw) for e in await state_adapter.list(scope)]


# -- contract ---------------------------------------------------------------


async def test_set_get_overwrite(state_adapter: StateAdapter) -> None:
    assert await state_adapter.get("s", "k") is None
    old, new = await state_adapter.mutate("s", "k", put(1))
    assert old is None
    assert new is not None and new.raw == b"1"
    assert await state_adapter.get("s", "k") == new
    old2, new2 = await state_adapter.mutate("s", "k", put({"a": 2}))
    assert old2 == new
    assert new2 is not None and json.loads(new2.raw) == {"a": 2}
    assert await state_adapter.get("s", "k") == new2
    assert await state_adapter.get("other", "k") is None


async def test_delete(state_adapter: StateAdapter) -> None:
    _, new = await state_adapter.mutate("s", "k", put("v"))
    assert await state_adapter.mutate("s", "k", delete) == (new, None)
    assert await state_adapter.get("s", "k") is None
    assert await state_adapter.mutate("s", "k", delete) == (None, None)  # absent: a no-op
    assert await state_adapter.list_groups() == []


async def test_keep_writes_nothing(state_adapter: StateAdapter) -> None:
    assert await state_adapter.mutate("s", "k", lambda _: KEEP) == (None, None)
    assert await state_adapter.list_groups() == []  # no scope created
    _, new = await state_adapter.mutate("s", "k", put(1))
    seen: list[Entry | None] = []

    def keep(current: Entry | None) -> object:
        seen.append(current)
        return KEEP

    assert await state_adapter.mutate("s", "k", keep) == (new, new)
    assert seen == [new]
    assert await state_adapter.get("s", "k") == new


async def test_exception_in_fn_writes_nothing(state_adapter: StateAdapter) -> None:
    _, before = await state_adapter.mutate("s", "k", put(1))

    def boom(_current: Entry | None) -> bytes:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await state_adapter.mutate("s", "k", boom)
    with pytest.raises(ValueError):
        await state_adapter.mutate("fresh", "k", boom)
    assert await state_adapter.get("s", "k") == before
    assert await state_adapter.list_groups() == ["s"]
    # The version counter was not consumed either.
    _, after = await state_adapter.mutate("s", "k", put(2))
    assert before is not None and after is not None
    assert after.version == before.version + 1


async def test_list_order(state_adapter: StateAdapter) -> None:
    assert await state_adapter.list("s") == []
    for k in ["c", "a", "b"]:
        await state_adapter.mutate("s", k, put(k))
    assert await values(state_adapter, "s") == ["c", "a", "b"]
    await state_adapter.mutate("s", "c", put("c2"))  # overwrite keeps the position
    assert await values(state_adapter, "s") == ["c2", "a", "b"]
    await state_adapter.mutate("s", "c", delete)
    await state_adapter.mutate("s", "c", put("c3"))  # delete + insert moves to the end
    assert await values(state_adapter, "s") == ["a", "b", "c3"]
    await state_adapter.mutate("t", "x", put("other scope"))
    assert await values(state_adapter, "s") == ["a", "b", "c3"]


async def test_list_groups(state_adapter: StateAdapter) -> None:
    assert await state_adapter.list_groups() == []
    for scope in ["zeta", "Alpha", "beta", "alpha"]:
        await state_adapter.mutate(scope, "k", put(1))
    await state_adapter.mutate("beta", "k2", put(1))
    assert await state_adapter.list_groups() == ["Alpha", "alpha", "beta", "zeta"]
    await state_adapter.mutate("zeta", "k", delete)  # last key: the scope disappears
    await state_adapter.mutate("beta", "k", delete)  # one key left: it stays
    assert await state_adapter.list_groups() == ["Alpha", "alpha", "beta"]
    await state_adapter.get("never", "k")  # reading creates nothing
    assert await state_adapter.list_groups() == ["Alpha", "alpha", "beta"]


async def test_versions_monotonic_across_delete(state_adapter: StateAdapter) -> None:
    seen = []
    for fn in [put(1), put(2), delete, put(3), put(4)]:
        _, new = await state_adapter.mutate("s", "k", fn)
        if new is not None:
            seen.append(new.version)
        await state_adapter.mutate("s", "other", put(0))
    assert seen == sorted(set(seen))


async def test_odd_names(state_adapter: StateAdapter) -> None:
    for i, name in enumerate(ODD_NAMES):
        await state_adapter.mutate(name, name, put(i))
        await state_adapter.mutate("s", name, put(i))
    for i, name in enumerate(ODD_NAMES):
        entry = await state_adapter.get(name, name)
        assert entry is not None and json.loads(entry.raw) == i
    assert await state_adapter.get("nul", "nul") is None
    assert await values(state_adapter, "s") == list(range(len(ODD_NAMES)))
    assert await state_adapter.list_groups() == sorted({*ODD_NAMES, "s"})


async def test_concurrent_increments(state_adapter: StateAdapter) -> None:
    results = await asyncio.gather(*(state_adapter.mutate("s", "n", increment) for _ in range(1000)))
    entry = await state_adapter.get("s", "n")
    assert entry is not None and entry.raw == b"1000"
    assert sorted(int(new.raw) for _, new in results if new is not None) == list(range(1, 1001))


# -- SQLite -----------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def litter(db: Path) -> list[str]:
    return [s for s in ("-wal", "-shm", "-journal") if Path(f"{db}{s}").exists()]


async def fill(path: Path, n: int) -> None:
    a = SqliteAdapter(path)
    await a.open()
    await asyncio.gather(*(a.mutate(f"scope{i % 7}", f"key{i}", put("v" * 200)) for i in range(n)))
    await a.close()


async def test_sqlite_reopen_keeps_content_order_and_versions(tmp_path: Path) -> None:
    names = [*ODD_NAMES, "lone \udcff surrogate"]
    a = SqliteAdapter(tmp_path / "db")
    await a.open()
    for i, name in enumerate(names):
        await a.mutate(name, name, put(i))
        await a.mutate("s", name, put(i))
    await a.mutate("s", "a", put("a"))
    await a.mutate("s", "", put("moved"))  # overwrite: keeps position
    await a.mutate("s", "..", delete)
    await a.mutate("s", "..", put("re-added"))  # goes to the end
    _, top = await a.mutate("gone", "k", put("deleted last"))
    await a.mutate("gone", "k", delete)  # the highest version now only lives in meta
    groups, listed = await a.list_groups(), await a.list("s")
    await a.close()
    await a.close()  # idempotent
    assert litter(a.db_path) == []

    b = SqliteAdapter(tmp_path / "db")
    await b.open()
    try:
        assert await b.list_groups() == groups
        assert await b.list("s") == listed
        for i, name in enumerate(names):
            entry = await b.get(name, name)
            assert entry is not None and json.loads(entry.raw) == i
        _, new = await b.mutate("gone", "k", put("back"))
        assert top is not None and new is not None and new.version > top.version + 1
    finally:
        await b.close()


async def test_sqlite_one_commit_of_interleaved_writes_reopens_identically(tmp_path: Path) -> None:
    """Writes issued in one loop turn share a commit, written as runs of multi-row
    statements: deletes, re-creates, overwrites and TTLs of the same keys, mixed
    with transactions, must come back exactly (values, versions, expiry, order)."""
    a = SqliteAdapter(tmp_path / "db")
    await a.open()
    for i in range(40):
        await a.mutate("s", f"k{i}", put(i))
    commits = a.commits
    far = 4_102_444_800_000  # 2100-01-01
    calls = []
    for round_ in range(3):
        for i in range(0, 40, 3):
            calls.append(a.mutate("s", f"k{i}", delete))
            calls.append(a.mutate("s", f"k{i + 1}", put([round_, i])))
            calls.append(a.mutate("s", f"k{i}", put({"back": round_})))  # re-created: moves to the end
            calls.append(a.mutate("t", f"k{i}", lambda _c, r=round_: Put(b"%d" % r, far + r)))
        calls.append(a.mutate_many([("s", "new", put("n")), ("s", "k2", delete), ("u", "x", put(1))]))
    await asyncio.gather(*calls)
    assert a.commits - commits < len(calls) / 4  # they did share commits
    before = {scope: await a.list_page(scope, "", None, None) for scope in await a.list_groups()}
    order = {scope: await a.list(scope) for scope in before}
    await a.close()

    b = SqliteAdapter(tmp_path / "db")
    await b.open()
    try:
        assert {scope: await b.list_page(scope, "", None, None) for scope in await b.list_groups()} == before
        assert {scope: await b.list(scope) for scope in before} == order
        expiring = await b.get("t", "k0")
        assert expiring is not None and (expiring.raw, expiring.expires_at) == (b"2", far + 2)
    finally:
        await b.close()


async def test_sqlite_path_resolution(tmp_path: Path) -> None:
    assert SqliteAdapter(tmp_path / "a" / "state_store").db_path == (
        tmp_path / "a" / "state_store" / DB_FILE_NAME
    )
    (tmp_path / "state_store.db").mkdir()  # the reference's directory with a suffix
    assert SqliteAdapter(tmp_path / "state_store.db").db_path == (tmp_path / "state_store.db" / DB_FILE_NAME)
    file = tmp_path / "x" / "y" / "state.sqlite"
    a = SqliteAdapter(str(file))
    assert a.db_path == file
    await a.open()
    await a.mutate("s", "k", put(1))
    await a.close()
    assert file.is_file()

    nested = SqliteAdapter(tmp_path / "deep" / "er" / "dir")
    await nested.open()
    await nested.close()
    assert nested.db_path.is_file()


def test_sqlite_rejects_bad_synchronous() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteAdapter("x.db", synchronous="SOMETIMES")


async def test_sqlite_not_sqlite_file_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(os.urandom(10_000))
    before = sha256(db)
    with pytest.raises(ConfigError, match="not a SQLite database") as err:
        await SqliteAdapter(db).open()
    assert str(db) in str(err.value) and "Move it away" in str(err.value)
    assert sha256(db) == before
    assert litter(db) == []


async def test_sqlite_corrupt_pages_are_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    await fill(db, 2000)
    size = db.stat().st_size
    page = 4096
    assert size > 10 * page
    with db.open("r+b") as f:  # overwrite a few b-tree pages, keep the header
        for n in (2, 3, size // page // 2):
            f.seek(n * page)
            f.write(os.urandom(page))
    before = sha256(db)
    with pytest.raises(ConfigError, match="damaged") as err:
        await SqliteAdapter(db).open()
    assert str(db) in str(err.value) and "backup" in str(err.value)
    assert sha256(db) == before
    assert litter(db) == []


async def test_sqlite_truncated_file_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    await fill(db, 2000)
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    before = sha256(db)
    with pytest.raises(ConfigError, match="damaged"):
        await SqliteAdapter(db).open()
    assert sha256(db) == before
    assert litter(db) == []


async def test_sqlite_foreign_database_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    before = sha256(db)
    with pytest.raises(ConfigError, match="something else"):
        await SqliteAdapter(db).open()
    assert sha256(db) == before


async def test_sqlite_empty_file_becomes_a_store(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.touch()
    a = SqliteAdapter(db)
    await a.open()
    await a.mutate("s", "k", put(1))
    await a.close()


async def test_sqlite_unusable_locations(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create the state store directory"):
        await SqliteAdapter(blocker / "sub" / "state.db").open()
    (tmp_path / "d" / DB_FILE_NAME).mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a regular file"):
        await SqliteAdapter(tmp_path / "d").open()


async def test_sqlite_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running with privileges that ignore directory permissions")
        with pytest.raises(ConfigError, match="cannot open state store"):
            await SqliteAdapter(ro).open()
    finally:
        ro.chmod(0o755)


async def test_sqlite_second_engine_is_refused(tmp_path: Path) -> None:
    a = SqliteAdapter(tmp_path / "db")
    await a.open()
    try:
        await a.mutate("s", "k", put(1))
        with pytest.raises(ConfigError, match="in use by another process"):
            await SqliteAdapter(tmp_path / "db").open()
        await a.mutate("s", "k", put(2))  # the first one is unaffected
    finally:
        await a.close()


async def test_sqlite_closed_adapter_refuses(tmp_path: Path) -> None:
    a = SqliteAdapter(tmp_path / "db")
    with pytest.raises(AdapterError, match="not open"):
        await a.get("s", "k")
    await a.open()
    await a.close()
    with pytest.raises(AdapterError, match="closed"):
        await a.mutate("s", "k", put(1))


async def test_sqlite_close_commits_everything_queued(tmp_path: Path) -> None:
    a = SqliteAdapter(tmp_path / "db")
    await a.open()
    tasks = [asyncio.create_task(a.mutate("s", f"k{i}", put(i))) for i in range(500)]
    await asyncio.sleep(0)  # all applied and queued, none acknowledged yet
    await a.close()
    await asyncio.gather(*tasks)
    b = SqliteAdapter(tmp_path / "db")
    await b.open()
    assert await values(b, "s") == list(range(500))
    await b.close()


async def test_sqlite_group_commit_batches(tmp_path: Path) -> None:
    a = SqliteAdapter(tmp_path / "db")
    await a.open()

    async def writer(w: int) -> None:
        for i in range(20):
            await a.mutate("s", f"w{w}", put(i))
            await a.mutate("s", "counter", increment)

    try:
        await asyncio.gather(*(writer(w) for w in range(64)))
        writes = 64 * 20 * 2
        counter = await a.get("s", "counter")
        assert counter is not None and counter.raw == b"1280"
        assert a.commits <= writes // 8, (a.commits, writes)
    finally:
        await a.close()


@pytest.mark.parametrize("path", ["transaction", "one statement"])
async def test_sqlite_commit_failure_fails_callers_and_restores_disk_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    a = SqliteAdapter(tmp_path / "db")
    await a.open()
    # The failing commit blocks until more writes queue behind it: the
    # writer thread's path (an inline commit would block the loop itself).
    a._writer.inline_after = None
    await a.mutate("s", "a", put(1))
    await a.mutate("s", "n", increment)
    await a.mutate("s", "gone", put("x"))
    entered, release = threading.Event(), threading.Event()
    failures = 1

    if path == "transaction":  # BEGIN, the rows, then a failure before COMMIT
        original = a._write_rows
        monkeypatch.setattr(a, "_write_upserts", lambda conn, batch: False)

        def failing(conn: sqlite3.Connection, batch: list[object]) -> None:
            nonlocal failures
            original(conn, batch)  # type: ignore[arg-type]
            if failures:
                failures -= 1
                entered.set()
                release.wait(10)  # let more writes queue up behind this transaction
                raise sqlite3.OperationalError("disk I/O error (injected)")

        monkeypatch.setattr(a, "_write_rows", failing)
    else:  # the single autocommit statement of a batch of sets fails (SQLite rolls it back)
        original_alone = a._write_upserts

        def failing_alone(conn: sqlite3.Connection, batch: list[object]) -> bool:
            nonlocal failures
            if failures:
                failures -= 1
                entered.set()
                release.wait(10)
                raise sqlite3.OperationalError("disk I/O error (injected)")
            return original_alone(conn, batch)  # type: ignore[arg-type]

        monkeypatch.setattr(a, "_write_upserts", failing_alone)
    first = asyncio.ensure_future(a.mutate("s", "a", put(2)))
    assert await asyncio.to_thread(entered.wait, 10)
    # Queued behind the failing commit, computed from its uncommitted value.
    queued = asyncio.gather(
        a.mutate("s", "new", put(3)),
        a.mutate("s", "gone", delete),
        *(a.mutate("s", "n", increment) for _ in range(50)),
        return_exceptions=True,
    )
    await asyncio.sleep(0)
    assert (await a.get("s", "n")) == Entry(b"51", a._mem.version)  # read-uncommitted
    release.set()
    with pytest.raises(AdapterError, match="injected"):
        await first
    results = await queued
    assert all(isinstance(r, AdapterError) for r in results), results
    assert "earlier write" in str(results[0])
    # The mirror is back to what is on disk.
    assert await values(a, "s") == [1, 1, "x"]
    assert await a.get("s", "new") is None
    # And the adapter keeps working.
    await a.mutate("s", "n", increment)
    await a.mutate("s", "later", put(4))
    assert await values(a, "s") == [1, 2, "x", 4]
    await a.close()

    b = SqliteAdapter(tmp_path / "db")
    await b.open()
    assert await values(b, "s") == [1, 2, "x", 4]
    await b.close()


@pytest.mark.parametrize("path", ["transaction", "one statement"])
async def test_sqlite_failed_inline_commit_restores_disk_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """One write at a time commits on the event loop; a failure there is handled
    as in the thread: rolled back, the mirror reloaded, the writer resumed."""
    a = SqliteAdapter(tmp_path / "db")
    await a.open()
    for i in range(INLINE_AFTER + 2):
        await a.mutate("s", "a", put(i))
    await a.mutate("s", "gone", put("x"))
    assert a._writer.inline_commits >= 2
    threads: list[threading.Thread] = []
    failures = 1
    name = "_write_rows" if path == "transaction" else "_write_upserts"
    original = getattr(a, name)
    if path == "transaction":
        monkeypatch.setattr(a, "_write_upserts", lambda conn, batch: False)

    def failing(conn: sqlite3.Connection, batch: list[object]) -> object:
        nonlocal failures
        threads.append(threading.current_thread())
        # Inside BEGIN the rows are written first (the rollback must undo
        # them); the autocommit statement fails as a whole.
        result = original(conn, batch) if path == "transaction" or not failures else None
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return result

    monkeypatch.setattr(a, name, failing)
    with pytest.raises(AdapterError, match="injected"):
        await a.mutate("s", "gone", put("y"))
    assert threads == [threading.main_thread()]
    # Rolled back: the mirror holds the disk state again, and the store goes on.
    assert await values(a, "s") == [INLINE_AFTER + 1, "x"]
    for i in range(INLINE_AFTER + 2):
        await a.mutate("s", "n", put(i))
    assert threads[-1] is threading.main_thread()
    await a.close()
    b = SqliteAdapter(tmp_path / "db")
    await b.open()
    assert await values(b, "s") == [INLINE_AFTER + 1, "x", INLINE_AFTER + 1]
    await b.close()


async def test_sqlite_unrecoverable_failure_refuses_further_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = SqliteAdapter(tmp_path / "db")
    await a.open()

    def fail(*_args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(a, "_write_rows", fail)
    monkeypatch.setattr(a, "_write_upserts", fail)
    monkeypatch.setattr(a, "_load", fail)
    with pytest.raises(AdapterError, match="injected"):
        await a.mutate("s", "k", put(1))
    with pytest.raises(AdapterError, match="restart"):
        await a.get("s", "k")
    await a.close()


WRITER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pyiii.stores.sqlite import SqliteAdapter

    async def main() -> None:
        adapter = SqliteAdapter(sys.argv[1])
        await adapter.open()
        counter = iter(range(10**9))

        async def writer() -> None:
            for i in counter:
                key = f"k{i}"
                await adapter.mutate("s", key, lambda _: key.encode())
                sys.stdout.write(key + "\\n")
                sys.stdout.flush()

        await asyncio.gather(*(writer() for _ in range(8)))

    asyncio.run(main())
    """
)


async def test_sqlite_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None

    def read_acks() -> list[str]:
        assert proc.stdout is not None
        acked = []
        while len(acked) < 300:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"writer exited early: {proc.stderr.read()}")  # type: ignore[union-attr]
            acked.append(line)
        return acked

    try:
        lines = await asyncio.to_thread(read_acks)
        proc.send_signal(signal.SIGKILL)
        rest, _ = await asyncio.to_thread(proc.communicate)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Every complete line was printed after its mutate returned; the last
    # piece of the split is "" or a line cut off by the kill.
    acked = ("".join(lines) + rest).split("\n")[:-1]
    assert len(acked) >= 300

    a = SqliteAdapter(store)
    await a.open()
    try:
        for key in acked:
            entry = await a.get("s", key)
            assert entry is not None and entry.raw == key.encode(), key
    finally:
        await a.close()
    assert litter(a.db_path) == []
