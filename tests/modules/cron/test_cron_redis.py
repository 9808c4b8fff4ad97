"""The ``redis`` cron adapter: one run per tick across engines; Redis outages."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from pyiii.modules.cron.adapters.redis import PREFIX, RedisLocks
from support.engines import running_server, sdk_worker, url_of
from support.redis_server import RedisServer


def config(redis_url: str) -> str:
    return (
        "workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: redis\n"
        f"        config: {{redis_url: '{redis_url}'}}\n"
    )


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_redis_locks_follow_the_rule(private_redis: RedisServer) -> None:
    a = RedisLocks("engine-a", 1000, private_redis.url)
    b = RedisLocks("engine-b", 1000, private_redis.url)
    await a.open()
    await b.open()
    raw = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        assert await a.claim("job", 5000)
        assert not await b.claim("job", 5000)  # same tick, other engine
        assert not await b.claim("job", 6000)  # a's run is still going on
        await b.finish("job", 5000)  # not b's run: nothing changes
        assert await raw.get(PREFIX + "job") == "5000:run:engine-a"
        await a.finish("job", 5000)
        assert await raw.get(PREFIX + "job") == "5000:done:engine-a"
        assert not await b.claim("job", 5000)  # a late engine: that tick ran
        assert await b.claim("job", 6000)
        assert 0 < await raw.pttl(PREFIX + "job") <= 1000
        await asyncio.sleep(1.1)  # b's run "hangs": its lock expires
        assert await a.claim("job", 7000)
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


def recorder(runs: list[tuple[str, str, float]], label: str) -> Any:
    def tick(event: dict[str, Any]) -> None:
        runs.append((label, event["scheduled_time"], time.time()))

    return tick


async def test_every_second_on_two_engines_for_20_s_runs_each_tick_once(
    make_engine_proc: Any, private_redis: RedisServer
) -> None:
    # Two engine processes on one redis-server; a replica of the same app on
    # each registers the same job (each with its own random trigger id).
    engines = [make_engine_proc(config(private_redis.url)).start() for _ in range(2)]
    runs: list[tuple[str, str, float]] = []  # (engine, scheduled_time, received at)
    async with contextlib.AsyncExitStack() as stack:
        for i, eng in enumerate(engines):
            w = await stack.enter_async_context(sdk_worker(eng.url, f"replica-{i}"))

            w.cron("* * * * * *", id="jobs::every-second")(recorder(runs, f"engine-{i}"))
        await wait_until(lambda: len(runs) >= 1, 5, "the first run")
        start = time.time()
        await asyncio.sleep(20)
        end = time.time()
    in_window = [r for r in runs if start <= r[2] <= end]
    ticks = collections.Counter(r[1] for r in in_window)
    duplicates = {t: n for t, n in ticks.items() if n > 1}
    assert not duplicates, duplicates
    seconds = sorted(int(datetime.datetime.fromisoformat(t).timestamp()) for t in ticks)
    assert len(seconds) >= 19, seconds  # one run for every second of the window
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "a tick was missed"
    per_engine = collections.Counter(r[0] for r in in_window)
    print(f"\n20 s on two engines: {len(seconds)} ticks, {len(in_window)} runs, by engine {dict(per_engine)}")
    for eng in engines:
        assert eng.proc is not None and eng.proc.poll() is None, eng.output


async def test_redis_down_skips_ticks_naming_the_url_then_resumes(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_redis.url
    async with running_server(config(url)) as server, sdk_worker(url_of(server), "w") as w:
        runs: list[str] = []
        w.cron("* * * * * *", id="jobs::outage")(lambda e: runs.append(e["scheduled_time"]))
        await wait_until(lambda: len(runs) >= 1, 5, "a run")
        with caplog.at_level(logging.WARNING, logger="pyiii.cron"):
            private_redis.stop()
            await asyncio.sleep(0.1)
            before = len(runs)
            await wait_until(lambda: "lock backend is unavailable" in caplog.text, 4, "the skip warning")
            assert f"Redis at {url} is unreachable" in caplog.text
            assert len(runs) == before
            private_redis.start()
            await wait_until(lambda: len(runs) > before, 5, "runs to resume")
            assert "reachable again" in caplog.text
        assert caplog.text.count("lock backend is unavailable") == 1  # once per outage, not per tick
        assert server.engine.accepting
