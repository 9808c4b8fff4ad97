"""What a Cron lock backend does, and the one rule every backend applies.

A job's lock is one value per job key, ``<tick_ms>:<state>:<owner>``:

* ``run`` -- the engine ``owner`` is running the tick scheduled at
  ``tick_ms`` (ms since the epoch);
* ``done`` -- that tick has run; the value stays until it expires.

Claiming tick ``t`` succeeds only when no value is there, or the value is a
``done`` of an earlier tick. Both states expire ``lock_ttl_ms`` after they
were written, and a tick more than ``lock_ttl_ms`` late is never attempted
(the module skips it), so every attempt at tick ``t`` meets the value its
first claimer wrote: each tick runs once in total, however late the other
engines' timers fire. A ``run`` also keeps every other tick off the job
until it is done (or its lock expires), so runs of one job never overlap.

Deleting the lock after a run (the plain ``SET NX PX`` + ``DEL`` pattern)
would let an engine whose timer fired a few milliseconds later claim and
run the same tick again; keeping the finished tick in the value is what
rules that out.
"""

from __future__ import annotations

import abc

RUN = "run"
DONE = "done"


class LockUnavailable(Exception):
    """The backend cannot be reached; the tick is skipped (the message says where)."""


def value(tick_ms: int, state: str, owner: str) -> str:
    return f"{tick_ms}:{state}:{owner}"


def may_claim(current: str | None, tick_ms: int) -> bool:
    """Whether tick ``tick_ms`` may be claimed while the lock holds ``current``."""
    if current is None:
        return True
    tick, _, rest = current.partition(":")
    state = rest.partition(":")[0]
    try:
        return state != RUN and int(tick) < tick_ms
    except ValueError:  # not written by pyiii: treat as held until it expires
        return False


class CronLocks(abc.ABC):
    """Per-job locks shared by the engines that should run each tick once."""

    def __init__(self, owner: str, ttl_ms: int) -> None:
        self.owner = owner
        self.ttl_ms = ttl_ms

    async def open(self) -> None:  # noqa: B027 -- optional: kv needs no connection
        """Connect (a backend that needs nothing does nothing)."""

    async def close(self) -> None:  # noqa: B027
        """Release connections."""

    @abc.abstractmethod
    async def claim(self, job_key: str, tick_ms: int) -> bool:
        """Take the job for this tick; False when it ran or runs elsewhere. May raise LockUnavailable."""

    @abc.abstractmethod
    async def finish(self, job_key: str, tick_ms: int) -> None:
        """Mark our run of this tick done (no-op if the lock is no longer ours). May raise LockUnavailable."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the startup log."""
