"""The shared SQLite writer's two commit paths: the writer thread, and inline on
the event loop when one item at a time is all there is (``inline_after``).

Each item is a row of a one-table log; ``write`` records the thread it ran on
and the batch size, so the tests see which path committed what."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyiii.sqlite_writer import Schema, SqliteWriter


class WriteError(Exception):
    pass


@dataclass
class Row:
    n: int
    future: asyncio.Future[None]


@dataclass
class Log:
    """The writer of one test, with what its callbacks saw."""

    path: Path
    inline_after: int | None
    resume_in_on_failed: bool = True
    writes: list[tuple[str, list[int]]] = field(default_factory=list)  # (thread name, row numbers)
    failures: list[tuple[list[int], str, list[int] | None]] = field(default_factory=list)
    fail_next: int = 0  # how many of the next writes raise (after their INSERT)
    block: threading.Event | None = None  # a write in the thread waits for it
    entered: threading.Event = field(default_factory=threading.Event)
    writer: SqliteWriter[Row, list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.writer = SqliteWriter(
            self.path,
            Schema("test log", _prepare, lambda path, conn: None),
            load=lambda conn: [n for (n,) in conn.execute("SELECT n FROM log ORDER BY rowid")],
            write=self._write,
            on_failed=self._on_failed,
            error=WriteError,
            inline_after=self.inline_after,
        )

    def _write(self, conn: sqlite3.Connection, batch: list[Row]) -> None:
        numbers = [row.n for row in batch]
        conn.executemany("INSERT INTO log (n) VALUES (?)", [(n,) for n in numbers])
        self.writes.append((threading.current_thread().name, numbers))
        if self.block is not None and threading.current_thread() is not threading.main_thread():
            self.entered.set()
            assert self.block.wait(10)
        if self.fail_next:
            self.fail_next -= 1
            raise sqlite3.OperationalError("disk I/O error (injected)")

    def _on_failed(self, batch: list[Row], reason: str, reloaded: list[int] | None) -> None:
        self.failures.append(([row.n for row in batch], reason, reloaded))
        if self.resume_in_on_failed:
            self.writer.resume()

    def submit(self, n: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writer.submit(Row(n, future))
        return future

    def paths(self) -> list[str]:
        """``inline``/``thread`` for each commit attempt, in order."""
        return ["inline" if name == threading.main_thread().name else "thread" for name, _ in self.writes]


def _prepare(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS log (n INTEGER NOT NULL)")


def on_disk(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM log ORDER BY rowid")]
    finally:
        conn.close()


async def closed_contents(log: Log) -> list[int]:
    """Stop the writer (it commits what is queued) and read back what is on disk."""
    log.writer.stop()
    await log.writer.wait_stopped()
    return on_disk(log.path)


async def opened(log: Log) -> Log:
    assert await log.writer.open() == []
    return log


async def test_single_items_switch_to_inline_and_a_group_goes_back_to_the_thread(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=2))
    for n in range(5):  # one in flight
        await log.submit(n)
    assert log.paths() == ["thread", "thread", "inline", "inline", "inline"]
    # Several items in one flush (what piles up behind a commit that kept the
    # loop waiting) go to the thread, and so do the next single items until
    # the thread has been idle for inline_after of them.
    await asyncio.gather(*(log.submit(n) for n in range(5, 9)))
    for n in range(9, 13):
        await log.submit(n)
    assert log.paths()[5:] == ["thread", "thread", "thread", "inline", "inline"]
    assert log.writes[5] == ("pyiii-sqlite", [5, 6, 7, 8])
    assert log.writer.inline_commits == 5
    assert log.writer.commits == 10
    assert await closed_contents(log) == list(range(13))


async def test_concurrent_writers_keep_group_commits_in_the_thread(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=1))
    for n in range(3):
        await log.submit(n)
    assert log.paths()[-1] == "inline"
    inline_before = log.writer.inline_commits

    async def writer(w: int) -> None:
        for i in range(10):
            await log.submit(1000 * w + i)

    await asyncio.gather(*(writer(w) for w in range(16)))
    # At most the burst's first item commits inline (in submit, before the
    # others arrive); from then on the writers form groups in the thread.
    assert log.writer.inline_commits <= inline_before + 1
    burst = log.writes[4:] if log.writer.inline_commits > inline_before else log.writes[3:]
    assert all(len(numbers) > 1 for _, numbers in burst), log.writes[3:]
    written = sorted(1000 * w + i for w in range(16) for i in range(10))
    assert sorted((await closed_contents(log))[3:]) == written


async def test_once_inline_the_first_item_of_a_turn_commits_in_submit(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=2))
    for n in range(2):
        await log.submit(n)  # the thread, then inline_after idle singles in a row
    await log.submit(2)  # committed inline at the end of its turn
    assert log.paths() == ["thread", "thread", "inline"]
    await asyncio.sleep(0)  # a new turn
    first = log.submit(3)
    assert first.done() and first.exception() is None  # committed before submit returned
    assert log.writes[-1] == (threading.main_thread().name, [3])
    second = log.submit(4)  # same turn: waits for the turn's end, like any item
    assert not second.done()
    await second
    assert log.paths() == ["thread", "thread", "inline", "inline", "inline"]
    assert log.writer.inline_commits == 3
    assert await closed_contents(log) == [0, 1, 2, 3, 4]


async def test_no_inline_commit_while_the_thread_holds_a_batch(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=0))  # every idle single item inline
    await log.submit(0)
    assert log.paths() == ["inline"]
    log.block = threading.Event()
    first = asyncio.gather(log.submit(1), log.submit(2))  # two items: the thread
    assert await asyncio.to_thread(log.entered.wait, 10)
    later = log.submit(3)  # one item, but the thread is busy: it must wait its turn
    await asyncio.sleep(0.05)
    assert not later.done()
    assert len(log.writes) == 2
    log.block.set()
    await first
    await later
    assert log.paths() == ["inline", "thread", "thread"]
    # Once the thread's report is in, single items are committed inline again.
    await log.submit(4)
    assert log.paths()[-1] == "inline"
    assert await closed_contents(log) == [0, 1, 2, 3, 4]


async def test_failed_inline_commit_rolls_back_reloads_and_drops_until_resume(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=0, resume_in_on_failed=False))
    await log.submit(0)
    log.fail_next = 1
    failing = log.submit(1)
    # The commit ran on the loop and failed within the submitting step's flush.
    await asyncio.sleep(0)
    assert failing.done()
    with pytest.raises(WriteError, match="injected"):
        await failing
    assert log.paths() == ["inline", "inline"]
    # Rolled back, and on_failed got the data as it is on disk.
    assert log.failures == [([1], log.failures[0][1], [0])]
    assert "could not commit" in log.failures[0][1]
    # Until the store resumes, every item fails: it was computed from the failed state.
    behind = [log.submit(2), log.submit(3)]
    for future in behind:
        with pytest.raises(WriteError, match="earlier write"):
            await future
    await asyncio.sleep(0)
    log.writer.resume()
    await log.submit(4)
    await log.submit(5)  # by now the thread has reported the resume
    assert log.paths()[-1] == "inline"
    assert await closed_contents(log) == [0, 4, 5]


async def test_failed_inline_commit_with_resume_in_on_failed(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=0))
    await log.submit(0)
    log.fail_next = 1
    with pytest.raises(WriteError, match="injected"):
        await log.submit(1)
    await log.submit(2)  # the thread or inline, whichever sees the thread's report of the resume
    await log.submit(3)
    assert log.paths()[:2] == ["inline", "inline"]
    assert log.paths()[-1] == "inline"
    assert await closed_contents(log) == [0, 2, 3]


async def test_failed_thread_commit_then_inline_again(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=1))
    log.fail_next = 1
    with pytest.raises(WriteError, match="injected"):
        await log.submit(0)
    for n in range(1, 4):
        await log.submit(n)
    # (1 goes inline or to the thread, depending on whether the thread's report
    # of the resume came first.)
    assert log.paths()[0] == "thread"
    assert log.paths()[-1] == "inline"
    assert [batch for batch, _, _ in log.failures] == [[0]]
    assert await closed_contents(log) == [1, 2, 3]


async def test_inline_off_keeps_every_commit_in_the_thread(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=None))
    for n in range(10):
        await log.submit(n)
    assert set(log.paths()) == {"thread"}
    assert log.writer.inline_commits == 0
    assert await closed_contents(log) == list(range(10))


async def test_submit_now_reaches_the_thread_without_a_turn_of_the_loop(tmp_path: Path) -> None:
    log = await opened(Log(tmp_path / "db", inline_after=None))
    log.block = threading.Event()
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    log.writer.submit(Row(0, first), now=True)
    # Blocking the loop here: only a hand-over made inside submit() can reach the thread.
    assert log.entered.wait(10)
    second = log.submit(1)  # waits for the end of the loop's turn ...
    third: asyncio.Future[None] = loop.create_future()
    log.writer.submit(Row(2, third), now=True)  # ... unless an item submitted now takes it along
    log.block.set()
    await asyncio.gather(first, second, third)
    assert log.writes == [("pyiii-sqlite", [0]), ("pyiii-sqlite", [1, 2])]
    assert await closed_contents(log) == [0, 1, 2]
