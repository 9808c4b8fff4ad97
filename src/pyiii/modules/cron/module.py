"""The Cron module: the ``cron`` trigger type and the scheduler behind it.

A binding ``{expression, condition_function_id?}`` calls its function at
every time the expression matches (UTC, whole seconds) with
``{trigger: "cron", job_id, scheduled_time, actual_time}`` (RFC 3339;
``job_id`` is the trigger's id).

Jobs: bindings that name the same function (and namespace), the same
schedule and the same condition are one *job* with one lock. Two replicas
of an app, each connected to its own engine, register the same cron
trigger under different random trigger ids; keying the lock by what the
binding does rather than by its id is what makes a ``redis`` lock shared by
those engines run each tick once in total. On one engine, several such
bindings also run once per tick (the first registered one is called).

Each job has a task that sleeps until its next time, claims the tick from
the lock backend (``adapters/base.py`` has the rule), calls the condition
function if any (a result of ``false`` skips the run), then the function,
and marks the tick done. The next time is computed after the run, from the
clock, so ticks that passed while a run was going on (or while the engine
was down, or the loop was stalled) are skipped, never caught up. A tick
more than ``lock_ttl_ms`` late is skipped too, and a run is waited for at
most ``lock_ttl_ms`` (its lock expires then).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.engine.module import Module, TriggerProvider
from pyiii.errors import IIIError
from pyiii.modules.cron.adapters.base import CronLocks, LockUnavailable
from pyiii.modules.cron.expression import CronError, CronExpression, parse, rfc3339

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine
    from pyiii.engine.registry import Trigger
    from pyiii.modules.cron.config import CronConfig

log = logging.getLogger("pyiii.cron")

WORKER_NAME = "iii-cron"
TRIGGER_TYPE = "cron"


class CronTriggerConfig(msgspec.Struct):
    # Loose types, checked below, so a wrong one gets a message about the field.
    expression: Any = None
    condition_function_id: Any = None


_config_decoder = msgspec.json.Decoder(CronTriggerConfig | None)


def build_locks(config: CronConfig, owner: str) -> CronLocks:
    """The lock backend the config names."""
    if config.adapter == "redis":
        from pyiii.modules.cron.adapters.redis import RedisLocks

        return RedisLocks(owner, config.lock_ttl_ms, config.redis_url)
    from pyiii.modules.cron.adapters.kv import KvLocks

    return KvLocks(owner, config.lock_ttl_ms, config.lock_index)


@dataclass(eq=False)
class Job:
    """The bindings that share one schedule, function and lock."""

    key: str
    expression: CronExpression
    namespace: str
    function_id: str
    condition: str | None
    bindings: dict[str, Trigger] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    runs: int = 0  # ticks this engine ran (for tests and stats)


def job_key(namespace: str, function_id: str, expression: CronExpression, condition: str | None) -> str:
    """The lock key of a job: the same on every engine for the same binding."""
    text = "\0".join((namespace, function_id, expression.canonical, condition or ""))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class CronModule(Module, TriggerProvider):
    """Runs functions on cron schedules; one run per tick across engines sharing a lock."""

    name = WORKER_NAME

    def __init__(
        self,
        config: CronConfig,
        locks: CronLocks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.owner = uuid.uuid4().hex
        self.locks = locks or build_locks(config, self.owner)
        self._clock = clock
        self.engine: Engine | None = None
        self.jobs: dict[str, Job] = {}
        self._job_of: dict[str, Job] = {}  # trigger id -> job
        self._lock_down = False
        self._stopping = False

    def describe(self) -> str:
        return f"{self.locks.describe()}, lock_ttl_ms {self.config.lock_ttl_ms}"

    async def start(self, engine: Engine) -> None:
        await self.locks.open()
        self.engine = engine
        engine.register_trigger_type(
            TRIGGER_TYPE,
            "Call a function on a cron schedule (sec min hour day month weekday [year], UTC)",
            self,
            worker_name=WORKER_NAME,
        )

    async def stop(self) -> None:
        self._stopping = True
        tasks = [job.task for job in self.jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self.jobs.clear()
        self._job_of.clear()
        await self.locks.close()

    # --- bindings -------------------------------------------------------------

    def register(self, trigger: Trigger) -> None:
        expression, condition = self._parse_config(trigger.config)
        key = job_key(trigger.namespace, trigger.function_id, expression, condition)
        job = self.jobs.get(key)
        if job is None:
            job = Job(key, expression, trigger.namespace, trigger.function_id, condition)
            self.jobs[key] = job
            job.task = asyncio.create_task(self._run(job), name=f"pyiii-cron-{trigger.id}")
        job.bindings[trigger.id] = trigger
        self._job_of[trigger.id] = job
        log.info("cron %s (%s) -> %s registered", trigger.id, expression.text, trigger.function_id)

    def _parse_config(self, config: Raw) -> tuple[CronExpression, str | None]:
        def failed(message: str) -> IIIError:
            return IIIError(errors.TRIGGER_REGISTRATION_FAILED, message)

        try:
            cfg = _config_decoder.decode(config) or CronTriggerConfig()
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise failed(
                f"cron trigger config must be an object like {{expression: '0 */5 * * * *'}}: {exc}"
            ) from None
        try:
            expression = parse(cfg.expression)
        except CronError as exc:
            raise failed(str(exc)) from None
        condition = cfg.condition_function_id
        if condition is not None and (not isinstance(condition, str) or not condition.strip()):
            raise failed(
                f"condition_function_id must be a function id (a non-empty string), found {condition!r}"
            )
        now = datetime.fromtimestamp(self._clock(), UTC)
        if expression.next_after(now) is None:
            raise failed(
                f"cron expression {expression.text!r} never fires after {rfc3339(now)}: no date matches"
                " its day, month, weekday and year fields together"
            )
        return expression, condition

    def unregister(self, trigger_id: str) -> None:
        job = self._job_of.pop(trigger_id, None)
        if job is None:
            return
        job.bindings.pop(trigger_id, None)
        if job.bindings:
            return
        del self.jobs[job.key]
        if job.task is not None:
            job.task.cancel()
        forget = getattr(self.locks, "forget", None)
        if forget is not None:
            forget(job.key)

    # --- scheduling -------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        while not self._stopping:
            now = datetime.fromtimestamp(self._clock(), UTC)
            scheduled = job.expression.next_after(now)
            if scheduled is None:
                log.info("cron job %s (%s) has no further run time", job.function_id, job.expression.text)
                return
            await self._sleep_until(scheduled.timestamp())
            try:
                await self._tick(job, scheduled)
            except Exception:  # a bug must not end the schedule
                log.exception("cron %s: the run due at %s failed", job.function_id, rfc3339(scheduled))

    async def _sleep_until(self, when: float) -> None:
        # asyncio sleeps by the monotonic clock; re-check the wall clock so a
        # wake-up a hair early does not run the tick before its second.
        while (delay := when - self._clock()) > 0:
            await asyncio.sleep(delay)

    async def _tick(self, job: Job, scheduled: datetime) -> None:
        engine = self.engine
        if engine is None or not engine.accepting or not job.bindings:
            return
        ttl_s = self.config.lock_ttl_ms / 1000
        tick_ms = int(scheduled.timestamp() * 1000)
        late_s = self._clock() - scheduled.timestamp()
        if late_s > ttl_s:
            log.warning(
                "cron %s: skipping the run due at %s, %.1f s late (more than lock_ttl_ms)",
                job.function_id,
                rfc3339(scheduled),
                late_s,
            )
            return
        try:
            claimed = await self.locks.claim(job.key, tick_ms)
        except LockUnavailable as exc:
            self._lock_failed(job, scheduled, exc)
            return
        self._lock_ok()
        if not claimed:
            return
        try:
            await asyncio.wait_for(self._fire(engine, job, scheduled), ttl_s)
        except TimeoutError:
            log.warning(
                "cron %s: the run due at %s still runs after lock_ttl_ms (%d ms); no longer waiting"
                " (its lock has expired)",
                job.function_id,
                rfc3339(scheduled),
                self.config.lock_ttl_ms,
            )
        finally:
            try:
                await self.locks.finish(job.key, tick_ms)
            except LockUnavailable as exc:
                log.warning(
                    "cron %s: could not mark the run due at %s done: %s",
                    job.function_id,
                    rfc3339(scheduled),
                    exc,
                )

    async def _fire(self, engine: Engine, job: Job, scheduled: datetime) -> None:
        trigger = next(iter(job.bindings.values()))
        event = {
            "trigger": "cron",
            "job_id": trigger.id,
            "scheduled_time": rfc3339(scheduled),
            "actual_time": rfc3339(datetime.fromtimestamp(self._clock(), UTC)),
        }
        try:
            if job.condition is not None:
                verdict = await engine.call(
                    job.condition, event, namespace=job.namespace, metadata=trigger.metadata
                )
                if verdict is not None and bytes(verdict).strip() == b"false":
                    return
            job.runs += 1
            await engine.call(job.function_id, event, namespace=job.namespace, metadata=trigger.metadata)
        except IIIError as err:
            log.warning("cron %s -> %s failed: %s", trigger.id, job.function_id, err)

    def _lock_failed(self, job: Job, scheduled: datetime, exc: LockUnavailable) -> None:
        if not self._lock_down:
            log.warning(
                "cron: skipping runs while the lock backend is unavailable (%s); first skipped: %s at %s",
                exc,
                job.function_id,
                rfc3339(scheduled),
            )
        self._lock_down = True

    def _lock_ok(self) -> None:
        if self._lock_down:
            log.warning("cron: the lock backend is reachable again; runs resume")
        self._lock_down = False

    def stats(self) -> dict[str, int]:
        return {"jobs": len(self.jobs), "bindings": len(self._job_of)}
