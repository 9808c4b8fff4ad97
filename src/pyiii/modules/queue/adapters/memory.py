"""The in-process store (``builtin`` adapter, ``store_method: in_memory``).

Lanes are ``LaneBook``s in a dict; nothing survives the engine. The
``file_based`` store (``sqlite.py``) is this store plus a SQLite file: every
change is also described as a ``Change`` and handed to ``_record``, which
does nothing here. The two changes every job goes through, its publish and
its ack, go through ``_record_push`` and ``_record_done``, which the file store
turns into rows without building a ``Change`` (~0.6 µs a job less on the loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Literal

import msgspec

from pyiii.modules.queue.adapters.base import QueueStore
from pyiii.modules.queue.book import LaneBook
from pyiii.modules.queue.jobs import DeadLetter, Job, Lane, now_ms

log = logging.getLogger("pyiii.queue")

ChangeKind = Literal["insert", "update", "revive", "delete", "sub", "unsub"]


class Change(msgspec.Struct, array_like=True):
    """One change to persist: a job row (``ref`` = job id) or a subscription (``ref`` = topic)."""

    kind: ChangeKind
    ref: str
    lane: str = ""  # lane key
    body: bytes = b""  # the job (live) or dead letter, as JSON
    dead: bool = False


class MemoryQueueStore(QueueStore):
    """Lanes in memory (see module docstring)."""

    persists = False  # True: changes are described and handed to ``_record``

    def __init__(self) -> None:
        self.books: dict[str, LaneBook] = {}
        self.known: dict[str, Lane] = {}
        self.subs: dict[str, dict[str, tuple[Lane, str | None]]] = {}
        self._events: dict[str, asyncio.Event] = {}

    def describe(self) -> str:
        return "builtin in_memory (nothing is kept when the engine stops)"

    # --- persistence hook (file_based) ---------------------------------------------

    def _record(self, changes: list[Change]) -> Awaitable[None] | None:
        """Persist ``changes``; the awaitable resolves when they are durable."""
        return None

    async def _durable(self, changes: list[Change]) -> None:
        done = self._record(changes)
        if done is not None:
            await done

    def _behind(self, changes: list[Change]) -> None:
        """Persist without waiting (an outcome: losing it only repeats a delivery)."""
        self._record(changes)

    # The two changes of every job, which a store may record without a Change each.

    def _record_push(self, items: Sequence[tuple[Lane, Job]]) -> Awaitable[None] | None:
        """Persist new jobs (as ``insert`` changes); the awaitable resolves when they are durable."""
        encode = msgspec.json.encode
        return self._record([Change("insert", job.id, lane.key, encode(job)) for lane, job in items])

    def _record_done(self, job_id: str) -> None:
        """Persist, behind, that a job was handled (a ``delete`` change)."""
        self._behind([Change("delete", job_id)])

    # --- helpers ---------------------------------------------------------------------

    def book(self, lane: Lane) -> LaneBook:
        key = lane.key
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = LaneBook()
            self.known[key] = lane
        return book

    def wakeup(self, lane: Lane) -> asyncio.Event:
        event = self._events.get(lane.key)
        if event is None:
            event = self._events[lane.key] = asyncio.Event()
        return event

    def _wake(self, lane: Lane) -> None:
        event = self._events.get(lane.key)
        if event is not None:
            event.set()

    def next_due(self, lane: Lane) -> int | None:
        book = self.books.get(lane.key)
        return None if book is None else book.next_due()

    # --- jobs --------------------------------------------------------------------------

    async def push(self, items: Sequence[tuple[Lane, Job]]) -> None:
        # Deliverable at once, acknowledged once durable: a delivery overlaps the
        # commit. Its outcome is written after the insert (one writer, in order).
        done = self._record_push(items) if self.persists else None
        now = now_ms()
        for lane, job in items:
            self.book(lane).add(job, now)
            self._wake(lane)
        if done is not None:
            await done

    async def take(self, lane: Lane, n: int) -> list[Job]:
        book = self.books.get(lane.key)
        return [] if book is None else book.take(n, now_ms())

    async def ack(self, lane: Lane, job: Job) -> None:
        book = self.books.get(lane.key)
        if book is not None and book.finish(job.id, now_ms()) is not None:
            if self.persists:
                self._record_done(job.id)
            self._wake(lane)

    async def retry(self, lane: Lane, job: Job) -> None:
        book = self.books.get(lane.key)
        if book is not None and job.id in book.jobs:
            book.retry(job, now_ms())
            if self.persists:
                self._behind([Change("update", job.id, lane.key, msgspec.json.encode(job))])
            self._wake(lane)

    async def bury(self, lane: Lane, letter: DeadLetter) -> None:
        book = self.books.get(lane.key)
        if book is not None and letter.job.id in book.jobs:
            book.bury(letter, now_ms())
            if self.persists:
                body = msgspec.json.encode(letter)
                self._behind([Change("update", letter.job.id, lane.key, body, dead=True)])
            self._wake(lane)

    async def release(self, lane: Lane, jobs: Sequence[Job]) -> None:
        book = self.books.get(lane.key)
        if book is not None:
            for job in jobs:
                book.release(job.id)
            self._wake(lane)

    # --- subscriptions -----------------------------------------------------------------

    async def subscribe(self, topic: str, lane: Lane, order: str | None) -> None:
        if self.subs.get(topic, {}).get(lane.key) == (lane, order):
            return
        await self._durable([Change("sub", topic, lane.key, msgspec.json.encode(order))])
        self.subs.setdefault(topic, {})[lane.key] = (lane, order)
        self.book(lane)

    async def unsubscribe(self, topic: str, lane: Lane) -> None:
        lanes = self.subs.get(topic)
        if lanes is None or lane.key not in lanes:
            return
        await self._durable([Change("unsub", topic, lane.key)])
        del lanes[lane.key]
        if not lanes:
            del self.subs[topic]

    async def subscribers(self, topic: str) -> list[tuple[Lane, str | None]]:
        return list(self.subs.get(topic, {}).values())

    async def lanes(self) -> list[Lane]:
        return list(self.known.values())

    # --- inspection and dead letters -------------------------------------------------

    async def depth(self, lane: Lane) -> int:
        book = self.books.get(lane.key)
        return 0 if book is None else book.depth

    async def dead_count(self, lane: Lane) -> int:
        book = self.books.get(lane.key)
        return 0 if book is None else len(book.dead)

    async def dead_letters(self, lane: Lane, offset: int, limit: int) -> list[DeadLetter]:
        book = self.books.get(lane.key)
        return [] if book is None else book.dead_page(offset, limit)

    async def redrive(self, lane: Lane, job_id: str | None) -> int:
        book = self.books.get(lane.key)
        if book is None:
            return 0
        if job_id is None:
            letters = list(book.dead.values())
        else:
            one = book.dead.get(job_id)
            letters = [] if one is None else [one]
        if not letters:
            return 0
        revived = [
            msgspec.structs.replace(letter.job, attempts_made=0, process_at=None, last_error=None)
            for letter in letters
        ]
        await self._durable([Change("revive", job.id, lane.key, msgspec.json.encode(job)) for job in revived])
        now = now_ms()
        for job in revived:
            if book.dead.pop(job.id, None) is not None:
                book.add(job, now)
        self._wake(lane)
        return len(revived)

    async def discard(self, lane: Lane, job_id: str) -> bool:
        book = self.books.get(lane.key)
        if book is None or job_id not in book.dead:
            return False
        await self._durable([Change("delete", job_id)])
        return book.dead.pop(job_id, None) is not None
