"""The file-based store (``builtin`` adapter, ``store_method: file_based``).

The in-memory store (``memory.py``) backed by one SQLite file, written by the
shared group-commit writer (``pyiii.sqlite_writer``, the State store's):

* a publish is acknowledged only once its jobs are committed (fsynced; with
  ``synchronous: normal`` written to the WAL file without fsync), so an
  acknowledged publish survives ``kill -9`` (and, fsynced, a power cut); the jobs are deliverable at once,
  so the handler runs while the commit is on its way (if that commit fails the
  publisher gets an error although the job may run: at-least-once);
* outcomes (ack, retry, dead letter) are written behind: a crash before one
  reaches disk means that delivery happens again after the restart;
* which jobs are out for delivery is not written at all: after a restart every
  job that had not been acknowledged is delivered again (without counting an
  attempt), retries keep their time, dead letters stay dead.

Tables: ``jobs(seq, lane, dead, body)`` (``seq``, the rowid, gives publish
order and is how a row is found again: the store keeps each job's ``seq`` in
memory, so every write is a rowid lookup; a redriven job gets a new ``seq``
and moves to the end), ``subs(lane, ord)`` (durable subscriptions; the topic
is the lane's name) and ``meta``. One commit runs each kind of statement as
one ``executemany``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from pyiii.errors import ConfigError
from pyiii.modules.queue.adapters.base import StoreError
from pyiii.modules.queue.adapters.memory import Change, MemoryQueueStore
from pyiii.modules.queue.book import LaneBook
from pyiii.modules.queue.jobs import Job, Lane, decode_dead, decode_job, now_ms
from pyiii.sqlite_writer import Schema, SqliteWriter

log = logging.getLogger("pyiii.queue")

DB_FILE_NAME = "pyiii-queue.sqlite3"
SCHEMA_VERSION = 1
WHAT = "queue store"

_CREATE = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY, lane TEXT NOT NULL,"
    " dead INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS subs (lane TEXT PRIMARY KEY, ord BLOB NOT NULL)",
)
_INIT_META = "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)"
_INSERT = "INSERT INTO jobs (seq, lane, dead, body) VALUES (?, ?, 0, ?)"
_UPDATE = "UPDATE jobs SET dead = ?, body = ? WHERE seq = ?"
_DELETE = "DELETE FROM jobs WHERE seq = ?"
_SUB = "INSERT OR REPLACE INTO subs (lane, ord) VALUES (?, ?)"
_UNSUB = "DELETE FROM subs WHERE lane = ?"


@dataclass(slots=True)
class _Rows:
    """The statements of one batch of changes, by kind, in order."""

    deletes: list[tuple[int]]
    inserts: list[tuple[int, str, bytes]]
    updates: list[tuple[int, bytes, int]]
    subs: list[tuple[str, tuple[str | bytes, ...]]]  # (statement, args), in order


@dataclass(slots=True)
class _Batch:
    rows: _Rows
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Loaded:
    books: dict[str, LaneBook]
    known: dict[str, Lane]
    subs: dict[str, dict[str, tuple[Lane, str | None]]]
    seqs: dict[str, int]
    next_seq: int


class SqliteQueueStore(MemoryQueueStore):
    """Queue lanes in memory, every change in one SQLite file (see module docstring).

    The changes of one event-loop step go to the writer as one item with one
    future (publishers in that step await it together), so a busy engine hands
    the writer thread a few large items instead of many small ones.

    ``path`` is a directory (an existing one, or any path without a suffix; the
    database is ``<dir>/pyiii-queue.sqlite3``) or the database file itself.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__()
        path = Path(path)
        self._synchronous = synchronous.upper()
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
        self._seqs: dict[str, int] = {}  # job id -> its row
        self._next_seq = 1
        self._tick: tuple[_Rows, asyncio.Future[None]] | None = None

    persists = True

    def describe(self) -> str:
        how = "committed" if self._synchronous == "FULL" else "committed without fsync (synchronous: normal)"
        return f"builtin file_based at {self.db_path} (every publish {how} before it is acknowledged)"

    @property
    def commits(self) -> int:
        return self._writer.commits

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        loaded = await self._writer.open()
        self.books, self.known, self.subs = loaded.books, loaded.known, loaded.subs
        self._seqs, self._next_seq = loaded.seqs, loaded.next_seq
        self._open = True

    async def close(self) -> None:
        if self._open:
            self._flush()
            self._open = False
            self._writer.stop()
        await self._writer.wait_stopped()

    # The changes of an event-loop step become rows as they are recorded (in
    # order: that is when a job gets its row number), into the step's one item.

    def _rows(self) -> tuple[_Rows, asyncio.Future[None]]:
        """This event-loop step's rows and the future its publishers await."""
        if not self._open:
            raise StoreError(f"{WHAT} {self.db_path} is closed")
        tick = self._tick
        if tick is None:
            assert self._loop is not None
            tick = self._tick = (_Rows([], [], [], []), self._loop.create_future())
            self._loop.call_soon(self._flush)
        return tick

    def _record(self, changes: list[Change]) -> Awaitable[None] | None:
        rows, future = self._rows()
        seqs = self._seqs
        for change in changes:
            kind = change.kind
            if kind == "insert" or kind == "revive":
                self._insert(rows, change.ref, change.lane, change.body)
            elif kind == "update":
                seq_or_none = seqs.get(change.ref)
                if seq_or_none is not None:
                    rows.updates.append((int(change.dead), change.body, seq_or_none))
            elif kind == "delete":
                seq_or_none = seqs.pop(change.ref, None)
                if seq_or_none is not None:
                    rows.deletes.append((seq_or_none,))
            elif kind == "sub":
                rows.subs.append((_SUB, (change.lane, change.body)))
            else:
                rows.subs.append((_UNSUB, (change.lane,)))
        return future

    def _record_push(self, items: Sequence[tuple[Lane, Job]]) -> Awaitable[None] | None:
        rows, future = self._rows()
        encode = msgspec.json.encode
        for lane, job in items:
            self._insert(rows, job.id, lane.key, encode(job))
        return future

    def _record_done(self, job_id: str) -> None:
        if not self._open:
            raise StoreError(f"{WHAT} {self.db_path} is closed")
        seq = self._seqs.pop(job_id, None)
        if seq is not None:
            self._rows()[0].deletes.append((seq,))

    def _insert(self, rows: _Rows, job_id: str, lane_key: str, body: bytes) -> None:
        seqs = self._seqs
        old = seqs.get(job_id)
        if old is not None:  # a redriven job moves to a new row
            rows.deletes.append((old,))
        seq = seqs[job_id] = self._next_seq
        self._next_seq = seq + 1
        rows.inserts.append((seq, lane_key, body))

    def _flush(self) -> None:
        tick, self._tick = self._tick, None
        if tick is None:
            return
        rows, future = tick
        future.add_done_callback(_log_failure)
        # The step is over: hand its one item to the thread now, not a turn later.
        self._writer.submit(_Batch(rows, future), now=True)

    def _commit_failed(self, batch: list[_Batch], reason: str, reloaded: _Loaded | None) -> None:
        # Nothing to undo in memory: an uncommitted publish was never
        # acknowledged (delivering it anyway is at-least-once), and a lost
        # outcome only repeats a delivery after a restart. Take new changes at once.
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
    loaded = _Loaded({}, {}, {}, {}, 1)
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

    for seq, key, dead, body in conn.execute("SELECT seq, lane, dead, body FROM jobs ORDER BY seq"):
        loaded.next_seq = seq + 1
        target = book(key)
        if target is None:
            continue
        if dead:
            letter = decode_dead(body)
            target.dead[letter.job.id] = letter
            loaded.seqs[letter.job.id] = seq
        else:
            job = decode_job(body)
            target.add(job, now)
            loaded.seqs[job.id] = seq
    for key, order in conn.execute("SELECT lane, ord FROM subs"):
        if book(key) is not None:
            lane = loaded.known[key]
            loaded.subs.setdefault(lane.name, {})[key] = (lane, msgspec.json.decode(order))
    return loaded


def _write(conn: sqlite3.Connection, batch: list[_Batch]) -> None:
    # Statement order within a batch only matters per row: a row is inserted
    # before it is updated or deleted, and deletes go last (a revived job's old
    # row is deleted after its new one is in).
    inserts = [r for item in batch for r in item.rows.inserts]
    updates = [r for item in batch for r in item.rows.updates]
    deletes = [r for item in batch for r in item.rows.deletes]
    if inserts and deletes:
        # A job published and handled within one commit never needs to touch the file.
        gone = {seq for (seq,) in deletes}
        born = {r[0] for r in inserts} & gone
        if born:
            inserts = [r for r in inserts if r[0] not in born]
            updates = [r for r in updates if r[2] not in born]
            deletes = [r for r in deletes if r[0] not in born]
    if inserts:
        conn.executemany(_INSERT, inserts)
    if updates:
        conn.executemany(_UPDATE, updates)
    if deletes:
        conn.executemany(_DELETE, deletes)
    for item in batch:
        for statement, args in item.rows.subs:
            conn.execute(statement, args)


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error(
            "%s: a write failed (%s); publishes waiting for it got the error, and a delivery whose"
            " outcome it held may happen again after a restart",
            WHAT,
            fut.exception(),
        )
