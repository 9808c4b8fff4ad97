"""The ``cron`` trigger type on one engine (kv locks), through the pyiii SDK over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from typing import Any

import pytest

from pyiii import IIIError
from pyiii.config import parse_config
from pyiii.errors import ConfigError
from pyiii.modules.cron.adapters.base import may_claim
from pyiii.modules.cron.adapters.kv import KvLocks
from pyiii.modules.cron.config import CronConfig
from pyiii.modules.cron.module import CronModule
from support.engines import running_server, sdk_worker, url_of

CONFIG = "workers:\n  - name: iii-cron\n"


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_every_second_payload_and_times() -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "cron-w") as w:
        events: list[dict[str, Any]] = []
        received: list[float] = []

        @w.cron("* * * * * *", id="jobs::tick")
        def tick(event: dict[str, Any]) -> None:
            received.append(time.time())
            events.append(event)

        await wait_until(lambda: len(events) >= 3, 6, "three ticks")
        triggers = [t for t in server.engine.triggers.values() if t.function_id == "jobs::tick"]
        assert len(triggers) == 1
        for event, got in zip(events, received, strict=False):
            assert set(event) == {"trigger", "job_id", "scheduled_time", "actual_time"}
            assert event["trigger"] == "cron"
            assert event["job_id"] == triggers[0].id
            scheduled = parse_time(event["scheduled_time"])
            actual = parse_time(event["actual_time"])
            assert event["scheduled_time"].endswith("+00:00") and scheduled.microsecond == 0
            assert 0 <= (actual - scheduled).total_seconds() < 0.5
            assert 0 <= got - scheduled.timestamp() < 0.5
        seconds = [parse_time(e["scheduled_time"]) for e in events[:3]]
        assert [(b - a).total_seconds() for a, b in itertools.pairwise(seconds)] == [1.0, 1.0]


async def test_condition_false_skips_the_run_and_sees_the_event() -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "cron-cond") as w:
        seen: list[dict[str, Any]] = []
        ran: list[dict[str, Any]] = []

        def only_even(event: dict[str, Any]) -> bool:
            seen.append(event)
            return parse_time(event["scheduled_time"]).second % 2 == 0

        @w.cron("* * * * * *", id="jobs::even", condition=only_even)
        def even(event: dict[str, Any]) -> None:
            ran.append(event)

        await wait_until(lambda: len(seen) >= 3, 5, "three condition checks")
        await asyncio.sleep(0.2)
        assert ran and all(parse_time(e["scheduled_time"]).second % 2 == 0 for e in ran)
        assert {e["scheduled_time"] for e in ran} == {
            e["scheduled_time"] for e in seen if parse_time(e["scheduled_time"]).second % 2 == 0
        }
        assert seen[0]["trigger"] == "cron"


async def test_unregister_stops_the_job() -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "cron-unreg") as w:
        ticks: list[dict[str, Any]] = []
        w.register_function("jobs::stop", ticks.append)
        trig = w.register_trigger(
            {"type": "cron", "function_id": "jobs::stop", "config": {"expression": "* * * * * *"}}
        )
        await wait_until(lambda: len(ticks) >= 1, 3, "a tick")
        trig.unregister()
        module = server.module("iii-cron")
        assert isinstance(module, CronModule)
        await wait_until(lambda: not module.jobs, 2, "the job to go")
        count = len(ticks)
        await asyncio.sleep(1.3)
        assert len(ticks) == count


async def test_bindings_of_the_same_job_run_once_per_tick() -> None:
    # Two triggers (different ids) bind the same function to the same schedule,
    # as two replicas of an app would: one run per tick, not two.
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "cron-dup") as w:
        ticks: list[dict[str, Any]] = []
        w.register_function("jobs::dup", ticks.append)
        for expression in ("* * * * * *", "*/1 * * * * * *"):
            w.register_trigger(
                {"type": "cron", "function_id": "jobs::dup", "config": {"expression": expression}}
            )
        await wait_until(lambda: len(ticks) >= 3, 5, "three ticks")
        await asyncio.sleep(0.3)
        times = [e["scheduled_time"] for e in ticks]
        assert len(times) == len(set(times)), times
        module = server.module("iii-cron")
        assert isinstance(module, CronModule) and len(module.jobs) == 1


async def test_a_missed_run_is_skipped_not_caught_up() -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "cron-stall") as w:
        ticks: list[dict[str, Any]] = []
        w.register_function("jobs::stall", ticks.append)
        w.register_trigger(
            {"type": "cron", "function_id": "jobs::stall", "config": {"expression": "* * * * * *"}}
        )
        await wait_until(lambda: len(ticks) >= 1, 3, "a tick")
        # Stall the engine's loop for 2.2 s: the due tick runs late, once; the
        # ticks that fell inside the stall are not run afterwards.
        stall_start = time.time()
        time.sleep(2.2)
        stall_end = time.time()
        await asyncio.sleep(1.2)
        times = sorted(parse_time(e["scheduled_time"]).timestamp() for e in ticks)
        inside = [t for t in times if stall_start < t <= stall_end]
        assert len(inside) <= 1, (inside, stall_start, stall_end)
        late = [e for e in ticks if stall_start < parse_time(e["scheduled_time"]).timestamp() <= stall_end]
        if late:
            assert parse_time(late[0]["actual_time"]).timestamp() >= stall_end - 0.05
        assert any(t > stall_end for t in times)  # and the schedule goes on
        assert server.engine.accepting


async def test_a_tick_later_than_lock_ttl_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    config = CONFIG + "    config:\n      adapter:\n        name: kv\n        config: {lock_ttl_ms: 1000}\n"
    async with running_server(config) as server, sdk_worker(url_of(server), "cron-late") as w:
        ticks: list[dict[str, Any]] = []
        w.register_function("jobs::late", ticks.append)
        w.register_trigger(
            {"type": "cron", "function_id": "jobs::late", "config": {"expression": "* * * * * *"}}
        )
        await wait_until(lambda: len(ticks) >= 1, 3, "a tick")
        await asyncio.sleep(0.3)  # the run has finished: the job sleeps until its next second
        with caplog.at_level(logging.WARNING, logger="pyiii.cron"):
            # The tick due first in the stall wakes more than 1 s late: skipped.
            stall_start = time.time()
            time.sleep(2.2)
            stall_end = time.time()
            await asyncio.sleep(1.1)
        times = [parse_time(e["scheduled_time"]).timestamp() for e in ticks]
        assert not [t for t in times if stall_start < t <= stall_end - 1.0]
        assert any(t > stall_end for t in times)
        assert "more than lock_ttl_ms" in caplog.text


async def test_invalid_expression_fails_registration_and_the_engine_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "cron-bad") as w:
        w.register_function("jobs::bad", lambda e: None)
        cases = {
            "0 61 * * * *": "minute (field 2) '61': 61 is outside 0-59",
            "* * * * *": "expected 6 or 7 fields",
            "0 0 0 * * FUNDAY": "weekday (field 6) 'FUNDAY': 'FUNDAY' is not a weekday",
            "0 0 0 * JANUARYX *": "month (field 5) 'JANUARYX'",
            "0 0 0 31 4 *": "never fires after",
            "": "a cron expression is required",
        }
        with caplog.at_level(logging.WARNING, logger="pyiii.sdk"):
            for expression in cases:
                w.register_trigger(
                    {"type": "cron", "function_id": "jobs::bad", "config": {"expression": expression}}
                )
            w.register_trigger({"type": "cron", "function_id": "jobs::bad", "config": {}})
            w.register_trigger(
                {
                    "type": "cron",
                    "function_id": "jobs::bad",
                    "config": {"expression": "* * * * * *", "condition_function_id": 7},
                }
            )
            await wait_until(lambda: caplog.text.count("registration failed") >= len(cases) + 2, 5, "errors")
        for message in cases.values():
            assert message in caplog.text
        assert "trigger_registration_failed" in caplog.text
        assert "condition_function_id must be a function id" in caplog.text
        assert not [t for t in server.engine.triggers.values() if t.function_id == "jobs::bad"]
        # the engine still serves
        assert await w.trigger("engine::functions::list", {}) is not None


def test_sdk_decorator_checks_the_expression_before_sending() -> None:
    from pyiii.sdk.events import EventsMixin

    class Offline(EventsMixin):
        def register_function(self, *a: Any, **k: Any) -> Any:
            raise AssertionError("nothing may be registered")

        register_trigger = register_function

    with pytest.raises(ValueError, match=r"second \(field 1\) '60': 60 is outside 0-59"):
        Offline().cron("60 * * * * *")  # type: ignore[misc]


async def test_sdk_publish_event_rejects_unserialisable_data() -> None:
    async with (
        running_server("workers:\n  - name: iii-pubsub\n") as server,
        sdk_worker(url_of(server), "p") as w,
    ):
        with pytest.raises(IIIError, match=r"publish_event\('t'\): data is not JSON-serialisable") as info:
            await w.publish_event("t", {"when": object()})
        assert info.value.code == "serialization_error"
        with pytest.raises(ValueError, match="non-empty string"):
            await w.publish_event("", 1)
        with pytest.raises(IIIError, match="topic_not_set"):
            await w.trigger("publish", {"data": 1})


# --- locks and config ------------------------------------------------------------


def test_lock_rule() -> None:
    assert may_claim(None, 1000)
    assert may_claim("1000:done:a", 2000)
    assert not may_claim("1000:done:a", 1000)  # that tick already ran
    assert not may_claim("2000:done:a", 1000)  # a later tick ran: this one is stale
    assert not may_claim("1000:run:a", 2000)  # a run is going on
    assert not may_claim("garbage", 1000)


async def test_kv_locks_claim_finish_expire() -> None:
    now = [100.0]
    locks = KvLocks("me", 30_000, "cron_locks", clock=lambda: now[0])
    assert await locks.claim("job", 1000)
    assert not await locks.claim("job", 1000)
    assert not await locks.claim("job", 2000)  # still running
    await locks.finish("job", 1000)
    assert not await locks.claim("job", 1000)  # done: never again
    assert await locks.claim("job", 2000)
    now[0] += 31  # the run's lock expired (the run hung)
    assert await locks.claim("job", 3000)


def test_config_shapes() -> None:
    def cron(text: str) -> CronConfig:
        config = parse_config(text, source="t").module_config("iii-cron")
        assert isinstance(config, CronConfig)
        return config

    assert cron("workers:\n  - name: cron\n") == CronConfig()
    old = "modules:\n  - class: modules::cron::CronModule\n    config:\n      adapter:\n"
    got = cron(
        old + "        class: modules::cron::RedisCronAdapter\n        config: {redis_url: 'redis://h:1'}\n"
    )
    assert got.adapter == "redis" and got.redis_url == "redis://h:1" and got.lock_ttl_ms == 30_000
    got = cron(
        old
        + "        class: modules::cron::KvCronAdapter\n        config: {lock_ttl_ms: 5000, lock_index: x}\n"
    )
    assert (got.adapter, got.lock_ttl_ms, got.lock_index) == ("kv", 5000, "x")
    for bad, message in (
        ("{name: memcache}", "unknown Cron adapter 'memcache'"),
        ("{name: redis, config: {redis_url: 'http://x'}}", "redis_url"),
        ("{name: kv, config: {lock_ttl_ms: 10}}", "lock_ttl_ms"),
        ("{name: kv, config: {lock_tll_ms: 1000}}", "lock_ttl_ms"),
    ):
        with pytest.raises(ConfigError, match=message):
            cron(f"workers:\n  - name: iii-cron\n    config:\n      adapter: {bad}\n")
