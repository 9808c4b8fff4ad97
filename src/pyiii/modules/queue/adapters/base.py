"""The storage a queue runs on, apart from how it delivers (``delivery.py`` decides that).

A store keeps lanes of jobs (``jobs.Lane``), hands out deliverable jobs
(``take``: the head of a group, never two of one group at once, never a job
whose retry time has not come) and records outcomes (``ack``, ``retry``,
``bury``, ``release``). It also keeps the durable subscriptions (which lanes
a topic fans out to) and the dead-letter queues. Whether to retry, when, and
when to give up is the caller's business.

``push`` returns once the jobs are as durable as the store makes them (the
publish is acknowledged then); outcomes may be written behind the caller's
back: losing one in a crash only means a delivery happens again.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence

from pyiii.modules.queue.jobs import DeadLetter, Job, Lane


class StoreError(Exception):
    """The store could not do what was asked (message says why, naming the store)."""


class QueueStore(abc.ABC):
    """Lanes of jobs, subscriptions and dead letters (see module docstring)."""

    broker_type = "builtin"

    async def open(self) -> None:  # noqa: B027 - a store with nothing to open
        """Load or connect; raise ``ConfigError`` when the store cannot be used."""

    async def close(self) -> None:  # noqa: B027
        """Write what is pending and release resources."""

    def describe(self) -> str:
        return self.broker_type

    # --- jobs -------------------------------------------------------------------

    @abc.abstractmethod
    async def push(self, items: Sequence[tuple[Lane, Job]]) -> None:
        """Add jobs (all or none); durable when this returns."""

    @abc.abstractmethod
    async def take(self, lane: Lane, n: int) -> list[Job]:
        """Up to ``n`` deliverable jobs of ``lane``, now out for delivery by this engine.

        A job whose holder died (another engine, on a shared store) may be
        handed out again; its ``last_error`` then says so and it counts as a
        failed delivery.
        """

    @abc.abstractmethod
    async def ack(self, lane: Lane, job: Job) -> None:
        """The job was handled: forget it."""

    @abc.abstractmethod
    async def retry(self, lane: Lane, job: Job) -> None:
        """The job failed; ``job`` carries the new ``attempts_made``, ``process_at`` and error."""

    @abc.abstractmethod
    async def bury(self, lane: Lane, letter: DeadLetter) -> None:
        """The job failed for the last time: move it to the lane's dead-letter queue."""

    @abc.abstractmethod
    async def release(self, lane: Lane, jobs: Sequence[Job]) -> None:
        """Give back jobs taken but not tried (the engine is stopping), uncounted."""

    @abc.abstractmethod
    def wakeup(self, lane: Lane) -> asyncio.Event:
        """An event set when ``lane`` may have new deliverable jobs (the consumer clears it)."""

    def next_due(self, lane: Lane) -> int | None:
        """When a held retry of ``lane`` becomes deliverable (ms), if the store knows."""
        return None

    # --- subscriptions and lanes --------------------------------------------------

    @abc.abstractmethod
    async def subscribe(self, topic: str, lane: Lane, order: str | None) -> None:
        """Make ``topic`` fan out to ``lane`` (durable: kept while its worker is away).

        ``order`` is how the subscription orders its jobs: None (standard),
        ``""`` (fifo, the whole lane as one line) or the payload field whose
        value groups a fifo lane. Subscribing again updates it.
        """

    @abc.abstractmethod
    async def unsubscribe(self, topic: str, lane: Lane) -> None:
        """Stop fanning ``topic`` out to ``lane`` (its jobs stay until handled)."""

    @abc.abstractmethod
    async def subscribers(self, topic: str) -> list[tuple[Lane, str | None]]:
        """The lanes a publish to ``topic`` goes to, with their ``order``."""

    @abc.abstractmethod
    async def lanes(self) -> list[Lane]:
        """Every lane that holds jobs or dead letters, or is subscribed."""

    # --- inspection and dead letters ----------------------------------------------

    @abc.abstractmethod
    async def depth(self, lane: Lane) -> int:
        """Jobs of the lane not yet handled (waiting, held for a retry, or out)."""

    @abc.abstractmethod
    async def dead_count(self, lane: Lane) -> int: ...

    @abc.abstractmethod
    async def dead_letters(self, lane: Lane, offset: int, limit: int) -> list[DeadLetter]:
        """Dead letters of the lane, newest first."""

    @abc.abstractmethod
    async def redrive(self, lane: Lane, job_id: str | None) -> int:
        """Move dead letters (all, or one) back into the lane with a fresh attempt count."""

    @abc.abstractmethod
    async def discard(self, lane: Lane, job_id: str) -> bool:
        """Delete one dead letter; False if there is none with that id."""
