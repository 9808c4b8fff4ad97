"""File-based State storage: SQLite in WAL mode behind an in-memory mirror.

Reads are served from a ``MemoryStore`` loaded at ``open()``. A write is
applied to the mirror synchronously (so it is atomic on the event loop),
then handed to one writer thread; ``mutate`` returns only after the SQLite
transaction holding the change has committed (``synchronous=FULL`` by
default: the commit is fsynced). The writer commits everything that queued
up while the previous commit ran in one transaction (group commit), so many
concurrent writers share each fsync.

Consequences worth knowing:

* Reads see writes whose commit is still in flight (read-uncommitted). If
  that commit then fails, the writer is told and readers may have seen a
  value that never reached disk.
* Commit failure: the writer rolls back, reloads the whole mirror from the
  database (which then holds exactly the committed state) and fails, with
  ``AdapterError``, every write of the failed transaction and every write
  queued behind it (those were computed from the uncommitted values). Later
  writes proceed normally. If even the reload fails, the adapter refuses all
  further operations with ``AdapterError`` until the engine restarts.
* A write whose caller is cancelled while waiting is still committed.
* The database is opened with ``locking_mode=EXCLUSIVE``: a second engine on
  the same file fails to start instead of silently diverging from this one.
* An existing file is checked (header, ``PRAGMA quick_check``, schema) through
  a read-only connection before anything is written; a damaged or foreign
  file makes ``open()`` raise ``ConfigError`` and is never modified.
* A ``mutate_many`` (a State transaction) is one queue item and therefore
  always lands in one SQLite transaction: after a crash it is there entirely
  or not at all.
* Expiry: each row keeps ``expires_at`` (schema version 2; a version 1 file
  gains the column when opened). The mirror removes an expired entry at the
  first operation or timer tick after its time; the removal is committed
  like any delete, and only then reported to the ``on_expired`` listener.
  Rows that expired while the engine was down are removed, and reported,
  right after the State module starts.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyiii.errors import ConfigError
from pyiii.sqlite_writer import INLINE_AFTER, SYNCHRONOUS_MODES, Schema, SqliteWriter
from pyiii.stores.base import (
    AdapterError,
    Entry,
    ExpiryListener,
    Mutation,
    MutationItem,
    StateAdapter,
)
from pyiii.stores.memory import Expired, MemoryStore, Sweeper

log = logging.getLogger(__name__)

DB_FILE_NAME = "pyiii-state.sqlite3"
SCHEMA_VERSION = 2  # 1: no expires_at column (read, and upgraded in place)
WHAT = "state store"  # how messages name the file

_CREATE_META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
# ord is the version at which the key was (re)created: it keeps its value on
# overwrite, grows on delete + re-insert, and as the rowid it makes the
# load-time scan in list order a plain table walk. Scope and key are stored
# as BLOBs (UTF-8, surrogatepass) so NUL and any Python str round-trip.
# expires_at: ms since the epoch, NULL = never (added in schema version 2).
_CREATE_KV = """CREATE TABLE IF NOT EXISTS kv (
    ord INTEGER PRIMARY KEY,
    scope BLOB NOT NULL,
    key BLOB NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL,
    expires_at INTEGER,
    UNIQUE (scope, key)
)"""
_INIT_META = "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?), ('last_version', 0)"
_MIGRATE_1_TO_2 = (
    "ALTER TABLE kv ADD COLUMN expires_at INTEGER",
    "UPDATE meta SET value = 2 WHERE name = 'schema_version'",
)
_UPSERT = (
    "INSERT INTO kv (ord, scope, key, version, value, expires_at) VALUES (?1, ?2, ?3, ?1, ?4, ?5)"
    " ON CONFLICT (scope, key) DO UPDATE SET"
    " version = excluded.version, value = excluded.value, expires_at = excluded.expires_at"
)
_DELETE = "DELETE FROM kv WHERE scope = ? AND key = ?"
# Rows per multi-row statement are powers of two up to this (a handful of
# cached statements; 512 * 6 parameters stays far below SQLite's limit).
_MAX_ROWS = 512


@functools.lru_cache(maxsize=16)
def _upsert_sql(rows: int) -> str:
    """``_UPSERT`` for ``rows`` rows (each: ord = version, scope, key, version, value, expires_at)."""
    values = ",".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO kv (ord, scope, key, version, value, expires_at) VALUES {values}"
        " ON CONFLICT (scope, key) DO UPDATE SET"
        " version = excluded.version, value = excluded.value, expires_at = excluded.expires_at"
    )


@functools.lru_cache(maxsize=16)
def _delete_sql(rows: int) -> str:
    values = ",".join(["(?, ?)"] * rows)
    return f"DELETE FROM kv WHERE (scope, key) IN (VALUES {values})"


def _run(conn: sqlite3.Connection, sql: Callable[[int], str], params: list[Any], width: int) -> None:
    """Execute ``sql(n)`` over the flat ``params`` (``width`` per row) in power-of-two chunks."""
    rows = len(params) // width
    start = 0
    while rows:
        n = min(_MAX_ROWS, 1 << (rows.bit_length() - 1))
        conn.execute(sql(n), params[start : start + n * width])
        start += n * width
        rows -= n


# Persisted so a key deleted at the highest version cannot get a smaller
# version after a restart.
_SET_LAST_VERSION = "UPDATE meta SET value = ? WHERE name = 'last_version'"
_LOAD = "SELECT scope, key, version, value, expires_at FROM kv ORDER BY ord"

# (scope, key, JSON text or None to delete, version, expires_at)
_Row = tuple[str, str, bytes | None, int, int | None]


@dataclass(slots=True)
class _Write:
    """Rows that commit together (one write, or a whole transaction)."""

    rows: builtins.list[_Row]
    version: int  # the store's counter after these rows
    future: asyncio.Future[None]


def _row(scope: str, key: str, new: Entry | None) -> _Row:
    if new is None:
        return (scope, key, None, 0, None)
    return (scope, key, new.raw, new.version, new.expires_at)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _blob(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class SqliteAdapter(StateAdapter):
    """Durable State storage in one SQLite file (``store_method: file_based``).

    ``path`` is a directory (an existing one, or any path without a suffix;
    the database is ``<dir>/<file_name>``, ``pyiii-state.sqlite3`` by
    default) or else the database file itself. ``synchronous`` is SQLite's setting; FULL fsyncs every commit,
    NORMAL survives a process crash but may lose the last commits on power
    loss. ``db_path`` is the resolved file; ``commits`` counts transactions.
    """

    eager_safe = True

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", file_name: str = DB_FILE_NAME) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}, not {synchronous!r}")
        path = Path(path)
        self._file_name = file_name
        self.db_path = path / file_name if path.is_dir() or not path.suffix else path
        self._mem = MemoryStore()
        # The lambdas look the methods up at call time (tests replace them).
        self._writer: SqliteWriter[_Write, MemoryStore] = SqliteWriter(
            self.db_path,
            Schema(WHAT, self._prepare, _check_schema),
            load=lambda conn: self._load(conn),
            write=lambda conn, batch: self._write_rows(conn, batch),
            write_alone=lambda conn, batch: self._write_upserts(conn, batch),
            on_failed=self._commit_failed,
            error=AdapterError,
            synchronous=synchronous,
            thread_name="pyiii-state-sqlite",
            inline_after=INLINE_AFTER,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"  # new -> opening -> open -> closed
        self._broken: str | None = None
        self._listener: ExpiryListener | None = None
        self._sweeper = Sweeper(self._timer_sweep)

    @property
    def commits(self) -> int:
        """SQLite transactions committed so far."""
        return self._writer.commits

    # -- StateAdapter ------------------------------------------------------

    async def open(self) -> None:
        """Check and load the database; ``ConfigError`` if it is unusable."""
        if self._state != "new":
            raise RuntimeError("SqliteAdapter.open() can only be called once")
        self._loop = asyncio.get_running_loop()
        self._state = "opening"
        try:
            store = await self._writer.open()
        except BaseException:
            self._state = "closed"
            raise
        if self._state == "closed":  # close() ran while we were opening
            self._writer.stop()
            return
        self._use(store)
        self._state = "open"

    async def close(self) -> None:
        """Wait until every queued write has committed, then close the file."""
        was_open = self._state == "open"
        self._state = "closed"
        self._sweeper.close()
        if was_open:
            self._writer.stop()
        await self._writer.wait_stopped()

    # Reads are served from the in-memory mirror; writes wait for their commit.
    sync_reads = True

    async def get(self, scope: str, key: str) -> Entry | None:
        self._check_usable()
        return self._mem.get(scope, key)

    def get_now(self, scope: str, key: str) -> Entry | None:
        self._check_usable()
        return self._mem.get(scope, key)

    async def get_many(self, scope: str, keys: Sequence[str]) -> builtins.list[Entry | None]:
        self._check_usable()
        return self._mem.get_many(scope, keys)

    async def mutate(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        self._check_usable()
        mem = self._mem
        old, new, changed = mem.apply(scope, key, fn)
        if not changed:
            return old, new
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._writer.submit(_Write([_row(scope, key, new)], mem.version, future))
        await future
        return old, new

    async def mutate_many(
        self, items: Sequence[MutationItem]
    ) -> builtins.list[tuple[Entry | None, Entry | None]]:
        self._check_usable()
        mem = self._mem
        applied = mem.apply_many(items)
        rows = [
            _row(scope, key, new)
            for (scope, key, _), (_, new, changed) in zip(items, applied, strict=True)
            if changed
        ]
        if rows:
            assert self._loop is not None
            future: asyncio.Future[None] = self._loop.create_future()
            self._writer.submit(_Write(rows, mem.version, future))
            await future
        return [(old, new) for old, new, _ in applied]

    async def list(self, scope: str) -> builtins.list[Entry]:
        self._check_usable()
        return self._mem.list(scope)

    async def list_page(
        self, scope: str, prefix: str, after: str | None, limit: int | None
    ) -> tuple[builtins.list[tuple[str, Entry]], bool]:
        self._check_usable()
        return self._mem.list_page(scope, prefix, after, limit)

    async def count(self, scope: str, prefix: str) -> int:
        self._check_usable()
        return self._mem.count(scope, prefix)

    async def list_groups(self, prefix: str = "") -> builtins.list[str]:
        self._check_usable()
        return self._mem.list_groups(prefix)

    def on_expired(self, listener: ExpiryListener) -> None:
        self._listener = listener
        if self._state == "open":
            self._sweeper.arm(self._mem.next_expiry())

    # -- expiry ----------------------------------------------------------------

    def _use(self, store: MemoryStore) -> None:
        """Make ``store`` the mirror (at open, and after a failed commit)."""
        store.on_expire = self._persist_expired
        store.on_schedule = self._sweeper.arm
        self._mem = store
        if self._listener is not None:
            self._sweeper.arm(store.next_expiry())

    def _timer_sweep(self) -> int | None:
        if self._state != "open" or self._broken is not None:
            return None
        self._mem.sweep()
        return self._mem.next_expiry()

    def _persist_expired(self, expired: builtins.list[Expired]) -> None:
        """Commit the removal of ``expired`` entries, then report them."""
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        rows: builtins.list[_Row] = [(scope, key, None, 0, None) for scope, key, _ in expired]
        self._writer.submit(_Write(rows, self._mem.version, future))
        future.add_done_callback(lambda done: self._report_expired(expired, done))

    def _report_expired(self, expired: builtins.list[Expired], done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None:
            # Not removed on disk: the reloaded mirror holds the entries again
            # and the next sweep reports them.
            return
        listener = self._listener
        if listener is not None:
            for scope, key, entry in expired:
                listener(scope, key, entry)

    # -- event-loop side -----------------------------------------------------

    def _check_usable(self) -> None:
        if self._state != "open":
            what = "closed" if self._state == "closed" else "not open yet"
            raise AdapterError(f"state store {self.db_path} is {what}")
        if self._broken is not None:
            raise AdapterError(self._broken)

    def _commit_failed(self, batch: builtins.list[_Write], reason: str, store: MemoryStore | None) -> None:
        if store is None:
            self._broken = (
                f"state store {self.db_path} is unusable after a failed commit ({reason}); restart the engine"
            )
            return
        # Runs between two event-loop steps: every write applied to the old
        # mirror is already queued ahead of the resume mark, so the writer
        # drops exactly those, and every later write starts from the disk state.
        self._use(store)
        self._writer.resume()

    # -- writer thread -------------------------------------------------------

    def _write_upserts(self, conn: sqlite3.Connection, batch: builtins.list[_Write]) -> bool:
        """A batch of up to ``_MAX_ROWS`` upserts ending in the batch's top version as one
        statement; False (nothing done) for anything else.

        ``last_version`` in meta is only needed for a version no row keeps
        (a delete's): loading takes the larger of it and the rows' largest, so
        when the last row written carries the batch's version it can stay."""
        last = batch[-1]
        if not last.rows or last.rows[-1][2] is None or last.rows[-1][3] != last.version:
            return False
        params: builtins.list[bytes | int | None] = []
        for write in batch:
            for scope_text, key_text, value, version, expires_at in write.rows:
                if value is None:
                    return False
                params += (version, _blob(scope_text), _blob(key_text), version, value, expires_at)
        rows = len(params) // 6
        if rows > _MAX_ROWS:
            return False
        # Padded to a power of two (a handful of cached statements) by writing
        # the last row again: the same values, so the same result.
        size = 1 << (rows - 1).bit_length()
        params += params[-6:] * (size - rows)
        conn.execute(_upsert_sql(size), params)
        return True

    def _write_rows(self, conn: sqlite3.Connection, batch: builtins.list[_Write]) -> None:
        # A run of consecutive upserts (or deletes) is one multi-row statement:
        # the thread releases and retakes the GIL around every SQLite step,
        # and retaking it while the event loop runs Python costs a forced
        # switch, so a commit takes a handful of steps, not one per row.
        # Runs keep the rows' order, so a delete followed by a re-insert of
        # the same key still re-creates it (new ``ord``).
        upserts: builtins.list[bytes | int | None] = []
        deletes: builtins.list[bytes] = []
        for write in batch:
            for scope_text, key_text, value, version, expires_at in write.rows:
                scope, key = _blob(scope_text), _blob(key_text)
                if value is None:
                    if upserts:
                        _run(conn, _upsert_sql, upserts, 6)
                        upserts = []
                    deletes += (scope, key)
                else:
                    if deletes:
                        _run(conn, _delete_sql, deletes, 2)
                        deletes = []
                    upserts += (version, scope, key, version, value, expires_at)
        if upserts:
            _run(conn, _upsert_sql, upserts, 6)
        if deletes:
            _run(conn, _delete_sql, deletes, 2)
        # Writes are queued in version order, so the last one is the highest.
        conn.execute(_SET_LAST_VERSION, (batch[-1].version,))

    def _load(self, conn: sqlite3.Connection) -> MemoryStore:
        (last_version,) = conn.execute("SELECT value FROM meta WHERE name = 'last_version'").fetchone()
        store = MemoryStore()
        store.replace(
            (
                (_text(scope), _text(key), Entry(bytes(value), version, expires_at))
                for scope, key, version, value, expires_at in conn.execute(_LOAD)
            ),
            last_version,
        )
        return store

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the tables, or upgrade an older file (in the opening transaction)."""
        path = self.db_path
        if path.name == self._file_name and any(path.parent.glob("*.bin")):
            log.warning(
                "%s holds *.bin scope files of the reference engine; pyiii does not"
                " read them and keeps its state in %s",
                path.parent,
                path,
            )
        conn.execute(_CREATE_META)
        conn.execute(_CREATE_KV)
        conn.execute(_INIT_META, (SCHEMA_VERSION,))
        (found,) = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if found == 1:
            for statement in _MIGRATE_1_TO_2:
                conn.execute(statement)
            log.info("state store %s upgraded from schema version 1 to 2 (entry expiry)", path)


def _check_schema(path: Path, conn: sqlite3.Connection) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return  # an empty database: ours to initialise
    if not {"meta", "kv"} <= tables:
        raise ConfigError(
            f"{path} is a SQLite database of something else (tables: {', '.join(sorted(tables))});"
            " it was left untouched. Set file_path to another location."
        )
    row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    if row is None or row[0] not in (1, SCHEMA_VERSION):
        found = "none" if row is None else row[0]
        raise ConfigError(
            f"state store {path} has schema version {found}, this pyiii reads versions 1 to"
            f" {SCHEMA_VERSION}; it was left untouched. Use the pyiii version that wrote it."
        )
