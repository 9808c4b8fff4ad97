"""One SQLite file written by one thread with group commit (the State and Queue stores).

A store keeps its data in memory for reads and hands every change to
``SqliteWriter.submit`` as an item carrying a future; the writer thread
commits whatever queued up while the previous commit ran in one transaction
(group commit: many writers share each fsync) and resolves the futures once
it is on disk (``synchronous=FULL`` by default: the commit is fsynced).

What the writer guarantees, whatever the store:

* Open checks an existing file through a read-only connection first (SQLite
  header, ``PRAGMA quick_check``, the store's own schema check): a damaged
  or foreign file raises ``ConfigError`` and is never modified.
* The database runs in WAL mode with ``locking_mode=EXCLUSIVE``, so a second
  engine on the same file fails to start instead of silently diverging.
* A failed commit is rolled back; the items of that transaction fail with
  the reason, and so does every item queued behind it until the store calls
  ``resume()`` (those were computed from state that never reached disk). With
  ``reload_on_failure`` the writer first reloads the store's data from the
  database and hands it to ``on_failed``, so the store can start again from
  exactly what is committed.
* ``close()`` commits everything queued, then closes the file.

Inline commits (``inline_after``, off unless the store asks; the State store
does): when one item is all there is to commit and the thread has reported
every round it was given, the commit after ``inline_after`` such items in a
row runs on the event loop itself, saving the two thread hand-overs and a
wake-up at one write in flight. Once that is so, the first item of a turn is
committed inside ``submit`` (its future is done when ``submit`` returns); the
rest of that turn's items wait for the end of the turn as usual. Never two
threads on the connection at once: the loop uses it only while the thread is
parked waiting for the loop's next put, so commits stay in submission order.
Load switches it off by itself: a commit that keeps the loop waiting lets
requests pile up, the next flush holds several items and goes to the thread,
which keeps the loop free during the fsync. A failed inline commit is handled
exactly as one in the thread (rollback, reload, fail, drop until
``resume()``); the futures still resolve only once the commit has returned.
The queue store leaves it off: its items are whole event-loop steps, so their
count says nothing about the load.

The store supplies its schema (``Schema``), ``load(conn)`` (read everything
at open) and ``write(conn, items)`` (the statements of one transaction), and
optionally ``write_alone(conn, items)``: write the batch as one statement in
autocommit mode (its own transaction) and return True, or return False
without touching the database to get ``BEGIN``/``write``/``COMMIT``.
Messages name the store (``Schema.what``, e.g. ``state store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pyiii.errors import ConfigError

log = logging.getLogger(__name__)

SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_SQLITE_MAGIC = b"SQLite format 3\x00"
# How long opening waits for another process that holds the database lock.
LOCK_TIMEOUT_S = 2.0
# One-item commits in a row, with the thread idle, before the loop commits
# itself (``SqliteWriter(inline_after=...)``).
INLINE_AFTER = 4


class Item(Protocol):
    """What the writer commits: the store's own record of a change, with its future."""

    @property
    def future(self) -> asyncio.Future[None]: ...


W = TypeVar("W", bound=Item)
L = TypeVar("L")


@dataclass(frozen=True, slots=True)
class Schema:
    """How a store lays out its file.

    ``prepare(conn)`` creates (or upgrades) the tables inside the opening
    transaction; ``check(path, conn)`` inspects an existing file through a
    read-only connection and raises ``ConfigError`` for one that is not the
    store's (another program's tables, a newer schema version).
    """

    what: str
    prepare: Callable[[sqlite3.Connection], None]
    check: Callable[[Path, sqlite3.Connection], None]


class _Control:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _DropFrom(_Control):
    """A commit on the event loop failed: drop what follows, up to ``_RESUME``."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        super().__init__("drop")
        self.reason = reason


_STOP = _Control("stop")  # commit what is queued, close, end the thread
_RESUME = _Control("resume")  # end of the items to drop after a failed commit
# What went wrong with a commit: the reason, the reloaded data, the items' error.
_Failure = tuple[str, Any, BaseException]


class SqliteWriter(Generic[W, L]):
    """The writer thread of one SQLite file (see module docstring).

    ``on_failed(items, reason, reloaded)`` runs on the event loop after a
    failed commit, once the items' futures have failed; ``reloaded`` is the
    data ``load`` read back (``None`` when not asked for, or when reading
    failed too, or when the thread itself crashed). The store must call
    ``resume()`` when it is ready for new items; until then queued items fail.
    ``error(reason)`` makes the exception a failed item's future gets (the
    store's own error type).
    """

    def __init__(
        self,
        path: Path,
        schema: Schema,
        *,
        load: Callable[[sqlite3.Connection], L],
        write: Callable[[sqlite3.Connection, list[W]], None],
        on_failed: Callable[[list[W], str, L | None], None],
        error: Callable[[str], BaseException],
        write_alone: Callable[[sqlite3.Connection, list[W]], bool] | None = None,
        synchronous: str = "FULL",
        reload_on_failure: bool = True,
        thread_name: str = "pyiii-sqlite",
        inline_after: int | None = None,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}, not {synchronous!r}")
        self.path = path
        self.schema = schema
        self.commits = 0
        self._synchronous = mode
        self._load = load
        self._write = write
        self._write_alone = write_alone
        self._on_failed = on_failed
        self._error = error
        self._reload_on_failure = reload_on_failure
        self._thread_name = thread_name
        # The loop side hands over whole batches: the items submitted during
        # one event-loop iteration go in one list (one put, at most one
        # wake-up of the thread, one GIL hand-over), not one put per item.
        self._queue: queue.SimpleQueue[list[W] | _Control] = queue.SimpleQueue()
        self._pending: list[W] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._conn: sqlite3.Connection | None = None
        # Inline commits; all of this is loop-side state. ``_outstanding``
        # counts the queue entries whose round the thread has not reported
        # yet (the report runs on the loop): at 0 the thread is parked in
        # ``get()`` and touches the connection only after the loop's next put,
        # and every earlier commit's futures are settled, so the loop may use
        # the connection itself. ``_thread_dropping`` is the thread's drop
        # state as of its last report (or set by a failed inline commit, or a
        # crash: then nothing is committed inline again).
        self.inline_after = inline_after
        self._idle_singles = 0  # consecutive one-item flushes that found the thread idle
        self._outstanding = 0
        self._thread_dropping: str | None = None
        self._stopping = False
        self._turn_used = False  # an item of this turn was committed in submit()
        self.inline_commits = 0  # of ``commits``, those run on the event loop

    # -- event-loop side -------------------------------------------------------

    async def open(self) -> L:
        """Check, open and load the file in the writer thread; ``ConfigError`` if unusable."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopped = loop.create_future()
        opened: asyncio.Future[L] = loop.create_future()
        thread = threading.Thread(target=self._run, args=(opened,), name=self._thread_name, daemon=True)
        thread.start()
        try:
            return await opened
        except BaseException:
            self._stopping = True
            self._put(_STOP)  # if cancelled after the thread opened the file
            raise

    def submit(self, item: W, *, now: bool = False) -> None:
        """Queue ``item`` for the next commit; its future resolves once it is on disk.

        Items submitted in one event-loop iteration reach the thread together,
        at the end of that iteration, in submission order (with inline commits
        on, the iteration's first item may be committed before this returns).
        ``now`` hands it over at once (with anything queued before it), for a
        store whose item already holds a whole event-loop step: no callback, no
        turn of waiting.
        """
        pending = self._pending
        if not pending and not self._turn_used and self._hot() and self._loop_may_commit():
            # Inline commits are on and this is the turn's first item: commit
            # it now. Its caller then finds the future done instead of waiting
            # for the end of the turn and a turn more to be woken. Later items
            # of this turn queue up as usual, so a burst still forms a group.
            self._turn_used = True
            assert self._loop is not None
            self._loop.call_soon(self._next_turn)
            self._commit_inline([item])
            return
        pending.append(item)
        if now:
            self._flush()
        elif len(pending) == 1:
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _loop_may_commit(self) -> bool:
        """Inline commits are on and the thread is parked with every round reported."""
        return (
            self.inline_after is not None
            and self._outstanding == 0
            and self._thread_dropping is None
            and not self._stopping
        )

    def _hot(self) -> bool:
        """The last ``inline_after`` flushes were single items the loop could commit."""
        return self.inline_after is not None and self._idle_singles >= self.inline_after

    def _next_turn(self) -> None:
        self._turn_used = False

    def _flush(self, to_thread: bool = False) -> None:
        batch = self._pending
        if not batch:
            return
        self._pending = []
        if len(batch) == 1 and not to_thread and self._loop_may_commit():
            # Light load: this one item is all there is to commit. After a
            # few such flushes in a row, commit on the loop: no hand-over to
            # the thread and back, one wake-up less. A commit that keeps the
            # loop waiting lets requests pile up, so the next flush holds
            # several items and goes to the thread, which keeps the loop free
            # during the fsync while the next group forms.
            if self._hot():
                self._commit_inline(batch)
                return
            self._idle_singles += 1
        else:
            self._idle_singles = 0
        self._put(batch)

    def _put(self, entry: list[W] | _Control) -> None:
        self._outstanding += 1
        self._queue.put(entry)

    def resume(self) -> None:
        """Accept items again after a failed commit (see ``on_failed``)."""
        # Items still buffered were computed before the failure: they go
        # ahead of the mark, so the thread drops them with the others.
        self._flush(to_thread=True)
        self._put(_RESUME)

    def stop(self) -> None:
        """Commit what is queued, then close the file and end the thread."""
        self._stopping = True  # the thread closes the connection after _STOP
        self._flush(to_thread=True)
        self._put(_STOP)

    async def wait_stopped(self) -> None:
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback`` on the event loop (called from the writer thread)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(callback, *args)

    @staticmethod
    def _settle(future: asyncio.Future[Any], result: object = None) -> None:
        if future.done():  # the waiting caller was cancelled
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    @staticmethod
    def _committed(batch: list[W]) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_result(None)

    @staticmethod
    def fail(batch: list[W], error: BaseException) -> None:
        """Fail every waiting item of ``batch`` with ``error``."""
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    def _commit_failed(self, batch: list[W], reason: str, reloaded: L | None, error: BaseException) -> None:
        self.fail(batch, error)
        self._on_failed(batch, reason, reloaded)

    def _finished(
        self,
        taken: int,
        dropping: str | None,
        dropped: list[W],
        drop_error: BaseException | None,
        batch: list[W],
        failure: _Failure | None,
    ) -> None:
        """The thread's report of one round (``taken`` queue entries), run on the loop."""
        self._outstanding -= taken
        self._thread_dropping = dropping
        if dropped:
            assert drop_error is not None
            self.fail(dropped, drop_error)
        if batch:
            if failure is None:
                self._committed(batch)
            else:
                self._commit_failed(batch, *failure)

    def _crashed(self, reason: str) -> None:
        self._thread_dropping = reason  # and never commit inline again
        self._commit_failed([], reason, None, self._error(reason))

    def _commit_inline(self, batch: list[W]) -> None:
        """Commit ``batch`` on the loop (the thread is idle: see ``_flush``)."""
        assert self._conn is not None
        self.inline_commits += 1
        try:
            failure = self._commit(self._conn, batch)
        except BaseException:  # KeyboardInterrupt and the like: nobody waits forever
            self._thread_dropping = "interrupted"
            self.fail(batch, self._error(f"{self.schema.what} commit interrupted"))
            raise
        if failure is None:
            self._committed(batch)
            return
        self.inline_commits -= 1
        # As after a failure in the thread: what is submitted from here on was
        # computed from the failed state, so the thread drops it until
        # resume() (this mark goes ahead of anything on_failed queues).
        self._idle_singles = 0
        self._thread_dropping = failure[0]
        self._put(_DropFrom(failure[0]))
        self._commit_failed(batch, *failure)

    # -- writer thread ---------------------------------------------------------

    def _run(self, opened: asyncio.Future[L]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = self._connect()
                data = self._load(conn)
            except BaseException as exc:
                self._call_soon(self._settle, opened, exc)
                return
            self._conn = conn
            self._call_soon(self._settle, opened, data)
            self._serve(conn)
        except BaseException as exc:  # a bug: make it visible instead of hanging callers
            log.exception("%s writer thread crashed", self.schema.what)
            reason = f"writer thread crashed: {exc!r}"
            self._call_soon(self._crashed, reason)
            waiting: list[W] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if not isinstance(item, _Control):
                        waiting.extend(item)
            self._call_soon(self.fail, waiting, self._error(reason))
        finally:
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:
                    log.exception("closing %s %s failed", self.schema.what, self.path)
            assert self._stopped is not None
            self._call_soon(self._settle, self._stopped, None)

    def _serve(self, conn: sqlite3.Connection) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        dropping: str | None = None  # reason, while skipping items after a failure
        while True:
            # Block for the first item, then take whatever queued up meanwhile:
            # that is the group of the next commit.
            items = [get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(get_nowait())
            batch: list[W] = []
            dropped: list[W] = []
            drop_reason = dropping
            stop = False
            for item in items:
                if item is _RESUME:
                    dropping = None
                elif item is _STOP:
                    stop = True
                elif isinstance(item, _DropFrom):
                    dropping = item.reason
                elif isinstance(item, _Control):
                    pass
                elif dropping is None:
                    batch.extend(item)
                else:
                    drop_reason = drop_reason or dropping
                    dropped.extend(item)
            drop_error = None
            if dropped:
                drop_error = self._error(f"not written: an earlier write to it failed ({drop_reason})")
            failure = self._commit(conn, batch) if batch else None
            if failure is not None:
                dropping = failure[0]
            # One report per round, sent once the connection is left alone:
            # the loop commits inline only when every round is reported.
            self._call_soon(self._finished, len(items), dropping, dropped, drop_error, batch, failure)
            if stop:
                return

    def _commit(self, conn: sqlite3.Connection, batch: list[W]) -> _Failure | None:
        """Write ``batch`` in one transaction; what went wrong if it failed (rolled back).

        Runs in the writer thread, or on the loop for an inline commit."""
        try:
            # One statement outside BEGIN is a transaction of its own: one
            # SQLite step, so the thread retakes the GIL once per commit
            # instead of once per statement (each retake may wait for the
            # event loop's switch interval while it is busy).
            if self._write_alone is None or not self._write_alone(conn, batch):
                conn.execute("BEGIN")
                self._write(conn, batch)
                conn.execute("COMMIT")
        except Exception as exc:
            what = self.schema.what
            reason = f"could not commit to {self.path}: {exc}"
            log.error("%s: %s", what, reason)
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            reloaded: L | None = None
            if self._reload_on_failure:
                try:
                    reloaded = self._load(conn)
                except Exception:
                    log.exception("%s: reloading %s after a failed commit", what, self.path)
            return reason, reloaded, self._error(reason)
        self.commits += 1
        return None

    # -- opening (writer thread) -----------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        path, what = self.path, self.schema.what
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the {what} directory {path.parent}: "
                f"{exc.strerror or exc}. Create it or set file_path to a writable location."
            ) from exc
        existed = self._verify_existing(path)
        try:
            # The loop commits on it too, never while the thread does (see _flush).
            conn = sqlite3.connect(
                path, timeout=LOCK_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise open_error(what, path, exc) from exc
        try:
            # Before the first access: the lock is then held until close, and
            # WAL runs without a -shm file.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            (journal,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if journal != "wal":
                raise ConfigError(
                    f"cannot use WAL mode for {what} {path} (got {journal!r});"
                    " put file_path on a local filesystem"
                )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            self.schema.prepare(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise open_error(what, path, exc) from exc
            raise
        if not existed:
            _fsync_dir(path.parent)  # make the new file's directory entry durable
        return conn

    def _verify_existing(self, path: Path) -> bool:
        """Check an existing file without writing to it; True if it holds data."""
        what = self.schema.what
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ConfigError(
                f"cannot access {what} {path}: {exc.strerror or exc}. Check its permissions."
            ) from exc
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"{what} {path} exists but is not a regular file;"
                " move it away or set file_path to another location"
            )
        if st.st_size == 0:
            return False  # what SQLite leaves when it crashes right after creating the file
        try:
            with path.open("rb") as f:
                header = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise ConfigError(
                f"cannot read {what} {path}: {exc.strerror or exc}. Check its permissions."
            ) from exc
        if header != _SQLITE_MAGIC:
            raise ConfigError(
                f"{path} exists but is not a SQLite database, so it cannot be the pyiii {what};"
                " it was left untouched. Move it away or set file_path to another location."
            )

        wal = Path(f"{path}-wal")
        shm = Path(f"{path}-shm")
        try:
            has_wal = wal.stat().st_size > 0
        except FileNotFoundError:
            has_wal = False
        shm_existed = shm.exists()
        # Without a WAL the main file is the whole database, and immutable=1
        # reads it with no locks and no -wal/-shm files: nothing is written.
        # A non-empty WAL (left by a crash) holds committed data and must be
        # read too; a read-only connection never checkpoints into the file.
        uri = path.absolute().as_uri() + ("?mode=ro" if has_wal else "?mode=ro&immutable=1")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_S, isolation_level=None)
            try:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise ConfigError(corrupt_message(what, path, "; ".join(map(str, problems))))
                self.schema.check(path, conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise open_error(what, path, exc) from exc
        finally:
            if has_wal and not shm_existed:
                # Ours: no live connection uses it (we run without -shm).
                with contextlib.suppress(OSError):
                    shm.unlink()
        return True


def corrupt_message(what: str, path: Path, detail: str) -> str:
    return (
        f"{what} {path} is damaged ({detail}); it was left untouched. Restore it from a"
        f" backup, or move it (with any {path.name}-wal file) away to start with an empty store."
    )


def open_error(what: str, path: Path, exc: sqlite3.Error) -> ConfigError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return ConfigError(
            f"{what} {path} is in use by another process (another pyiii engine?)."
            " Stop it, or give this engine its own file_path."
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return ConfigError(corrupt_message(what, path, str(exc)))
    return ConfigError(
        f"cannot open {what} {path}: {exc}. The file and its directory must be readable"
        f" and writable (SQLite creates {path.name}-wal next to it)."
    )


def _fsync_dir(directory: Path) -> None:
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # Windows cannot open directories
        return
    try:
        fd = os.open(directory, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
