"""The file-based store (``builtin`` adapter, ``store_method: file_based``).

The in-memory store (``memory.py``) backed by one SQLite file, written by the
shared group-commit writer (``pyiii.sqlite_writer``, the State store's):

* a publish is acknowledged only once its jobs are committed (fsynced), so an
  acknowledged publish survives ``kill -9``; the jobs become deliverable at
  that moment;
* outcomes (ack, retry, dead letter) are written behind: a crash before one
  reaches disk means that delivery happens again after the restart;
* which jobs are out for delivery is not written at all: after a restart every
  job that had not been acknowledged is delivered again (without counting an
  attempt), retries keep their time, dead letters stay dead.

Tables: ``jobs(seq, id, lane, dead, body)`` (``seq`` gives publish order; a
redriven job moves to the end), ``subs(lane, ord)`` (durable subscriptions;
the topic is the lane's name) and ``meta``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from pyiii.errors import ConfigError
from pyiii.modules.queue.adapters.base import StoreError
from pyiii.modules.queue.adapters.memory import Change, MemoryQueueStore
from pyiii.modules.queue.book import LaneBook
from pyiii.modules.queue.jobs import Lane, decode_dead, decode_job, now_ms
from pyiii.sqlite_writer import Schema, SqliteWriter

log = logging.getLogger("pyiii.queue")

DB_FILE_NAME = "pyiii-queue.sqlite3"
SCHEMA_VERSION = 1
WHAT = "queue store"

_CREATE = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    " lane TEXT NOT NULL, dead INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS subs (lane TEXT PRIMARY KEY, ord BLOB NOT NULL)",
)
_INIT_META = "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)"
_INSERT = "INSERT INTO jobs (id, lane, dead, body) VALUES (?, ?, 0, ?)"
_UPDATE = "UPDATE jobs SET dead = ?, body = ? WHERE id = ?"
_REVIVE = (
    "UPDATE jobs SET seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), dead = 0, body = ? WHERE id = ?"
)
_DELETE = "DELETE FROM jobs WHERE id = ?"
_SUB = "INSERT OR REPLACE INTO subs (lane, ord) VALUES (?, ?)"
_UNSUB = "DELETE FROM subs WHERE lane = ?"


@dataclass(slots=True)
class _Batch:
    changes: list[Change]
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Loaded:
    books: dict[str, LaneBook]
    known: dict[str, Lane]
    subs: dict[str, dict[str, tuple[Lane, str | None]]]


class SqliteQueueStore(MemoryQueueStore):
    """Queue lanes in memory, every change in one SQLite file (see module docstring).

    ``path`` is a directory (an existing one, or any path without a suffix; the
    database is ``<dir>/pyiii-queue.sqlite3``) or the database file itself.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__()
        path = Path(path)
        self.db_path = path / DB_FILE_NAME if path.is_dir() or not path.suffix else path
        self._writer: SqliteWriter[_Batch, _Loaded] = SqliteWriter(
            self.db_path,
            Schema(WHAT, _prepare, _check_schema),
            load=_load,
            write=_write,
            on_failed=self._commit_failed,
            error=StoreError,
            synchronous=synchronous,
            reload_on_failure=False,
            thread_name="pyiii-queue-sqlite",
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = False

    def describe(self) -> str:
        return f"builtin file_based at {self.db_path} (every publish committed before it is acknowledged)"

    @property
    def commits(self) -> int:
        return self._writer.commits

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        loaded = await self._writer.open()
        self.books, self.known, self.subs = loaded.books, loaded.known, loaded.subs
        self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            self._writer.stop()
        await self._writer.wait_stopped()

    def _record(self, changes: list[Change]) -> Awaitable[None] | None:
        if not self._open:
            raise StoreError(f"{WHAT} {self.db_path} is closed")
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._writer.submit(_Batch(changes, future))
        return future

    def _commit_failed(self, batch: list[_Batch], reason: str, reloaded: _Loaded | None) -> None:
        # Nothing to undo in memory: publishes become visible only once
        # committed, and a lost outcome only repeats a delivery. Take new
        # changes at once.
        self._writer.resume()


def _prepare(conn: sqlite3.Connection) -> None:
    for statement in _CREATE:
        conn.execute(statement)
    conn.execute(_INIT_META, (SCHEMA_VERSION,))


def _check_schema(path: Path, conn: sqlite3.Connection) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return
    if not {"meta", "jobs", "subs"} <= tables:
        raise ConfigError(
            f"{path} is a SQLite database of something else (tables: {', '.join(sorted(tables))});"
            " it was left untouched. Set the queue adapter's file_path to another location."
        )
    row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        found = "none" if row is None else row[0]
        raise ConfigError(
            f"{WHAT} {path} has schema version {found}, this pyiii reads version {SCHEMA_VERSION};"
            " it was left untouched. Use the pyiii version that wrote it."
        )


def _load(conn: sqlite3.Connection) -> _Loaded:
    loaded = _Loaded({}, {}, {})
    now = now_ms()

    def book(key: str) -> LaneBook | None:
        found = loaded.books.get(key)
        if found is not None:
            return found
        lane = Lane.from_key(key)
        if lane is None:
            log.warning("%s: ignoring rows of an unknown lane %r", WHAT, key)
            return None
        loaded.known[key] = lane
        found = loaded.books[key] = LaneBook()
        return found

    for key, dead, body in conn.execute("SELECT lane, dead, body FROM jobs ORDER BY seq"):
        target = book(key)
        if target is None:
            continue
        if dead:
            letter = decode_dead(body)
            target.dead[letter.job.id] = letter
        else:
            target.add(decode_job(body), now)
    for key, order in conn.execute("SELECT lane, ord FROM subs"):
        if book(key) is not None:
            lane = loaded.known[key]
            loaded.subs.setdefault(lane.name, {})[key] = (lane, msgspec.json.decode(order))
    return loaded


def _write(conn: sqlite3.Connection, batch: list[_Batch]) -> None:
    cur = conn.cursor()
    for item in batch:
        for change in item.changes:
            kind = change.kind
            if kind == "insert":
                cur.execute(_INSERT, (change.ref, change.lane, change.body))
            elif kind == "update":
                cur.execute(_UPDATE, (int(change.dead), change.body, change.ref))
            elif kind == "revive":
                cur.execute(_REVIVE, (change.body, change.ref))
            elif kind == "delete":
                cur.execute(_DELETE, (change.ref,))
            elif kind == "sub":
                cur.execute(_SUB, (change.lane, change.body))
            else:
                cur.execute(_UNSUB, (change.lane,))
