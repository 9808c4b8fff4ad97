"""The queue benchmark's baseline: arq running the same no-op jobs on the same redis-server.

Runs in its own venv (``.compat/bench-arq``: arq 0.28 needs redis-py < 6), so it imports
nothing from pyiii. Same model as the pyiii queue rows: N concurrent loops, each enqueues
one job and waits until the job function has run (a future resolved by the job, in this
process's arq Worker), then the next. The worker gets its best settings for this: it
takes up to 64 jobs at once, polls every millisecond and keeps no results.

    .compat/bench-arq/bin/python benchmarks/arq_baseline.py REDIS_PORT SECONDS [INFLIGHT ...]

Prints one JSON line: {"<inflight>": {"ops_per_s", "p50_us", "p99_us", "cpu"}, ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

_waiting: dict[str, asyncio.Future[None]] = {}


async def noop(ctx: dict[str, Any], key: str) -> None:
    fut = _waiting.pop(key, None)
    if fut is not None and not fut.done():
        fut.set_result(None)


async def window(pool: Any, inflight: int, seconds: float, latencies: list[float] | None) -> int:
    loop = asyncio.get_running_loop()
    stop_at = time.perf_counter() + seconds
    done = 0

    async def one_loop() -> None:
        nonlocal done
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            key = uuid.uuid4().hex
            fut = loop.create_future()
            _waiting[key] = fut
            await pool.enqueue_job("noop", key, _job_id=key)
            await fut
            done += 1
            if latencies is not None:
                latencies.append(time.perf_counter() - now)

    await asyncio.gather(*(one_loop() for _ in range(inflight)))
    return done


async def main(port: int, seconds: float, inflights: list[int]) -> None:
    settings = RedisSettings(host="127.0.0.1", port=port)
    pool = await create_pool(settings)
    worker = Worker(
        functions=[noop],
        redis_settings=settings,
        max_jobs=max(inflights),
        poll_delay=0.001,
        keep_result=0,
        handle_signals=False,
    )
    runner = asyncio.ensure_future(worker.async_run())
    out: dict[str, Any] = {}
    try:
        for n in inflights:
            await window(pool, n, 0.3, None)
            latencies: list[float] = []
            cpu0, t0 = time.process_time(), time.perf_counter()
            count = await window(pool, n, seconds, latencies)
            elapsed = time.perf_counter() - t0
            latencies.sort()
            out[str(n)] = {
                "ops_per_s": count / elapsed,
                "p50_us": latencies[len(latencies) // 2] * 1e6,
                "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
                "cpu": (time.process_time() - cpu0) / elapsed,
            }
        print(json.dumps(out), flush=True)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        with contextlib.suppress(BaseException):
            await worker.close()
        await pool.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), [int(a) for a in sys.argv[3:]] or [1, 64]))
