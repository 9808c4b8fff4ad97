"""How a lane's jobs reach their function: the consumer loop (storage-agnostic).

One ``LaneConsumer`` runs per lane on each engine where the lane's function
is served. It takes as many jobs as it has free handler slots (``Slots``,
shared by the lanes of one named queue so ``concurrency`` bounds the queue),
calls the function with each job's ``data`` and records the outcome:

* the call returned: ``ack`` (at-least-once: a crash before the ack means
  the job is delivered again);
* it failed, timed out (``handler_timeout_ms``) or its worker went away
  mid-call: the attempt counts; ``retry`` after ``backoff_ms *
  2^(attempt-1)`` or, once ``max_attempts`` deliveries failed, ``bury`` as a
  dead letter ``{job, error, failed_at}``;
* the engine is stopping, or the function has no worker on this engine any
  more: ``release`` (uncounted; it waits for a worker).

A condition function (``condition_function_id``) that answers ``false``
acknowledges the job without calling the handler. A store that cannot be
reached makes the loop back off and retry; outcomes are retried until they
are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw

from pyiii import errors
from pyiii.errors import IIIError
from pyiii.modules.queue.adapters.base import QueueStore, StoreError
from pyiii.modules.queue.jobs import NULL, DeadLetter, Delivery, Job, Lane, backoff_ms, now_ms

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.queue")

STORE_BACKOFF_START_S = 0.05
STORE_BACKOFF_MAX_S = 1.0
RECLAIMED = "the engine that was delivering it stopped before the handler finished (lease expired)"


class Slots:
    """Handler slots: how many deliveries may run at once (one queue's ``concurrency``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return self.size - self.used

    def acquire(self) -> None:
        self.used += 1

    def release(self) -> None:
        self.used -= 1
        self._freed.set()

    async def wait(self) -> None:
        if self.free > 0:
            return
        self._freed.clear()
        await self._freed.wait()


class LaneConsumer:
    """Delivers one lane's jobs to its function on this engine (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        store: QueueStore,
        lane: Lane,
        delivery: Delivery,
        slots: Slots,
        *,
        condition_function_id: str | None = None,
        idle_poll_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.lane = lane
        self.delivery = delivery
        self.slots = slots
        self.condition_function_id = condition_function_id
        # Stores that cannot tell when other engines' retries come due are
        # looked at this often even when nothing woke us.
        self.idle_poll_s = idle_poll_s
        self.running: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop taking jobs; deliveries already running finish on their own."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for running deliveries to record their outcome."""
        tasks = list(self.running.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # --- the loop ---------------------------------------------------------------

    async def _run(self) -> None:
        store, lane, slots = self.store, self.lane, self.slots
        wake = store.wakeup(lane)
        backoff = STORE_BACKOFF_START_S
        failing = False
        while not self._stopping:
            if slots.free <= 0:
                await slots.wait()
                continue
            wake.clear()  # before the take: anything arriving after it wakes us
            try:
                jobs = await store.take(lane, slots.free)
            except StoreError as exc:
                if not failing:
                    log.warning("queue %s: cannot take messages (%s); retrying", self._name(), exc)
                failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, STORE_BACKOFF_MAX_S)
                continue
            if failing:
                log.warning("queue %s: taking messages works again", self._name())
                failing = False
            backoff = STORE_BACKOFF_START_S
            if self._stopping:
                await self._release(jobs)
                return
            for job in jobs:
                slots.acquire()
                task = asyncio.ensure_future(self._deliver(job))
                self.running[job.id] = task
            if not jobs:
                await self._idle(wake)

    async def _idle(self, wake: asyncio.Event) -> None:
        timeout = self.idle_poll_s
        due = self.store.next_due(self.lane)
        if due is not None:
            left = max(due - now_ms(), 0) / 1000
            timeout = left if timeout is None else min(timeout, left)
        if timeout is None:
            await wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)

    def _name(self) -> str:
        lane = self.lane
        return f"{lane.kind} {lane.name!r} -> {lane.function_id}"

    # --- one delivery -----------------------------------------------------------

    async def _deliver(self, job: Job) -> None:
        try:
            if job.reclaimed:
                await self._failed(job, RECLAIMED)
                return
            error = await self._call(job)
            if error is None:
                await self._outcome(self.store.ack, job)
            elif isinstance(error, _Release):
                await self._release([job])
            else:
                await self._failed(job, error)
        except Exception:
            log.exception("queue %s: delivering %s failed", self._name(), job.id)
        finally:
            self.running.pop(job.id, None)
            self.slots.release()

    async def _call(self, job: Job) -> str | _Release | None:
        """None when handled, an error text when it failed, ``_RELEASE`` when not tried."""
        engine, lane = self.engine, self.lane
        timeout_s = self.delivery.handler_timeout_ms / 1000
        metadata: Raw | msgspec.UnsetType = UNSET if job.metadata == NULL else job.metadata
        try:
            if self.condition_function_id is not None:
                verdict = await engine.call_within(
                    timeout_s, self.condition_function_id, job.data, namespace=lane.namespace
                )
                if verdict is not None and bytes(verdict).strip() == b"false":
                    return None
            await engine.call_within(
                timeout_s, lane.function_id, job.data, namespace=lane.namespace, metadata=metadata
            )
        except TimeoutError:
            return f"handler did not finish within {self.delivery.handler_timeout_ms} ms"
        except IIIError as err:
            if err.code == errors.SHUTTING_DOWN or not engine.accepting:
                return _RELEASE
            if (
                err.code == errors.FUNCTION_NOT_FOUND
                and (lane.namespace, lane.function_id) not in engine.functions
            ):
                return _RELEASE  # its worker left; the job waits for the next one
            return f"{err.code}: {err.message}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _failed(self, job: Job, error: str) -> None:
        delivery = self.delivery
        attempts = job.attempts_made + 1
        job = msgspec.structs.replace(
            job,
            attempts_made=attempts,
            max_attempts=delivery.max_attempts,
            backoff_delay_ms=delivery.backoff_ms,
            last_error=error,
            process_at=None,
            reclaimed=False,
        )
        now = now_ms()
        if attempts >= max(delivery.max_attempts, 1):
            log.warning(
                "queue %s: message %s failed %d time(s), moved to the dead-letter queue: %s",
                self._name(),
                job.id,
                attempts,
                error,
            )
            await self._outcome(self.store.bury, DeadLetter(job=job, error=error, failed_at=now))
            return
        job = msgspec.structs.replace(job, process_at=now + backoff_ms(job))
        log.info(
            "queue %s: message %s failed (attempt %d of %d), retrying in %d ms: %s",
            self._name(),
            job.id,
            attempts,
            delivery.max_attempts,
            backoff_ms(job),
            error,
        )
        await self._outcome(self.store.retry, job)

    async def _release(self, jobs: list[Job]) -> None:
        if jobs:
            await self._outcome(self.store.release, jobs)

    async def _outcome(self, record: Callable[[Lane, Any], Awaitable[None]], arg: Any) -> None:
        """Write an outcome, retrying while the store cannot be reached."""
        backoff = STORE_BACKOFF_START_S
        while True:
            try:
                await record(self.lane, arg)
                return
            except StoreError as exc:
                if self._stopping and backoff >= STORE_BACKOFF_MAX_S:
                    log.warning(
                        "queue %s: stopping without recording an outcome (%s); the message will be"
                        " delivered again",
                        self._name(),
                        exc,
                    )
                    return
                if backoff == STORE_BACKOFF_START_S:
                    log.warning("queue %s: cannot record an outcome (%s); retrying", self._name(), exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, STORE_BACKOFF_MAX_S)


class _Release:
    """``_call``'s answer for a delivery that was not tried (uncounted)."""


_RELEASE = _Release()
