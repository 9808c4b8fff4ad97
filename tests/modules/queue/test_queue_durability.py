"""file_based: acknowledged publishes survive kill -9; unfinished deliveries happen again.

The engine runs as a ``pyiii serve`` subprocess that the test SIGKILLs; the
publisher and the subscriber are pyiii SDK workers in the test process, which
reconnect by themselves when the engine is back on the same port.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pyiii import IIIError, connect

pytestmark = pytest.mark.timeout(120)

CONFIG = """\
workers:
  - name: iii-queue
    config:
      queue_configs:
        slow: {max_retries: 3, backoff_ms: 50, handler_timeout_ms: 60000}
      adapter:
        name: builtin
        config: {store_method: file_based, file_path: ./data/queue_store}
"""
NORMAL = CONFIG.replace("queue_store}", "queue_store, synchronous: normal}")
TOTAL = 10_000
IN_FLIGHT = 64


@pytest.mark.parametrize("config", [CONFIG, NORMAL], ids=["synchronous-full", "synchronous-normal"])
async def test_kill_9_during_10000_acknowledged_publishes_loses_none(
    make_engine_proc: Any, config: str
) -> None:
    # synchronous: normal skips the fsync, not the write: a crash of the process loses nothing either.
    engine = make_engine_proc(config).start()
    fsync = "without fsync" not in engine.output
    assert fsync == (config == CONFIG), engine.output
    processed: set[int] = set()
    sub = await connect(engine.url, name="subscriber", invocation_timeout_ms=10_000)

    @sub.subscriber("work", id="work::handle", queue_config={"concurrency": 32})
    async def handle(data: Any) -> None:
        await asyncio.sleep(0.001)  # some deliveries are always running when the engine dies
        processed.add(data["id"])

    pub = await connect(engine.url, name="publisher", invocation_timeout_ms=5_000)
    await sub.trigger("engine::functions::list", {})
    acknowledged: set[int] = set()
    todo = list(range(TOTAL))
    killed_at: int | None = None
    backlog: set[int] = set()  # acknowledged but not yet processed when the engine died
    restarted = asyncio.Event()

    async def publisher() -> None:
        nonlocal killed_at
        while todo:
            n = todo.pop()
            try:
                await pub.publish("work", {"id": n, "pad": "x" * 64})
            except IIIError:
                todo.append(n)  # not acknowledged: publish it again once the engine is back
                await restarted.wait()
                continue
            acknowledged.add(n)
            if killed_at is None and len(acknowledged) >= TOTAL // 3:
                killed_at = len(acknowledged)
                engine.stop(signal.SIGKILL)
                backlog.update(acknowledged - processed)
                engine.start()
                restarted.set()

    started = time.monotonic()
    await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))
    assert killed_at is not None and len(acknowledged) == TOTAL
    deadline = time.monotonic() + 60
    while not acknowledged <= processed and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    missing = acknowledged - processed
    assert not missing, f"{len(missing)} acknowledged messages never processed, e.g. {sorted(missing)[:10]}"
    # The messages waiting in the store at the kill came back from the file.
    assert backlog, "nothing was waiting when the engine died: the test proved nothing"
    elapsed = time.monotonic() - started
    print(
        f"{'fsync' if fsync else 'no fsync'}: kill -9 after {killed_at} acks"
        f" ({len(backlog)} waiting or running);"
        f" {TOTAL} acknowledged, all processed in {elapsed:.1f}s"
    )
    stats = await pub.trigger("engine::queue::topic_stats", {"topic": "work"})
    assert stats["dlq_depth"] == 0
    await pub.shutdown()
    await sub.shutdown()


async def test_a_delivery_cut_by_kill_9_happens_again_after_restart(
    make_engine_proc: Any, tmp_path: Path
) -> None:
    engine = make_engine_proc(CONFIG).start()
    calls: list[float] = []
    w = await connect(engine.url, name="slow-worker", invocation_timeout_ms=10_000)
    first_call = asyncio.Event()

    @w.function("slow::run")
    async def run(data: Any) -> dict[str, Any]:
        calls.append(time.monotonic())
        first_call.set()
        if len(calls) == 1:
            await asyncio.sleep(30)  # still running when the engine dies
        return {"done": data["n"]}

    await w.trigger("engine::functions::list", {})
    await w.enqueue("slow::run", {"n": 7}, queue="slow")
    await asyncio.wait_for(first_call.wait(), 10)
    engine.stop(signal.SIGKILL)
    engine.start()
    deadline = time.monotonic() + 20
    while len(calls) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(calls) == 2, "the cut delivery was not made again"
    await asyncio.sleep(0.3)
    stats = await w.trigger("engine::queue::topic_stats", {"queue": "slow"})
    assert stats["depth"] == 0 and stats["dlq_depth"] == 0  # acknowledged by the second run
    assert (tmp_path / "data" / "queue_store" / "pyiii-queue.sqlite3").exists()
    await w.shutdown()


async def test_the_file_keeps_waiting_retried_dead_and_subscribed_state(tmp_path: Path) -> None:
    from msgspec import Raw, structs

    from pyiii.modules.queue.adapters.sqlite import SqliteQueueStore
    from pyiii.modules.queue.jobs import DeadLetter, Job, Lane, new_id, now_ms

    lane = Lane("topic", "orders", "default", "ship")
    other = Lane("queue", "jobs", "ns1", "bill")

    def job(n: int, group: str | None = None) -> Job:
        return Job(
            id=new_id(), queue="orders", function_id="ship", data=Raw(b'{"n":%d}' % n),
            max_attempts=3, backoff_delay_ms=10, created_at=now_ms(), group_id=group,
        )

    store = SqliteQueueStore(tmp_path / "q")
    await store.open()
    jobs = [job(n) for n in range(5)]
    await store.push([(lane, j) for j in jobs] + [(other, job(9, "g"))])
    await store.subscribe("orders", lane, None)
    taken = await store.take(lane, 5)
    assert [j.id for j in taken] == [j.id for j in jobs]
    await store.ack(lane, taken[0])
    later = now_ms() + 60_000
    await store.retry(lane, structs.replace(taken[1], attempts_made=1, process_at=later, last_error="x"))
    dead = structs.replace(taken[2], attempts_made=3)
    await store.bury(lane, DeadLetter(job=dead, error="boom", failed_at=5))
    # taken[3] and taken[4] were out when the engine "died": they come back.
    await store.close()

    again = SqliteQueueStore(tmp_path / "q")
    await again.open()
    assert await again.subscribers("orders") == [(lane, None)]
    assert await again.depth(lane) == 3 and await again.dead_count(lane) == 1
    [letter] = await again.dead_letters(lane, 0, 10)
    assert letter.error == "boom" and letter.job.id == taken[2].id and letter.failed_at == 5
    back = await again.take(lane, 10)
    assert [j.id for j in back] == [taken[3].id, taken[4].id]  # the retry waits for its time
    assert again.next_due(lane) == later
    assert [j.data for j in await again.take(other, 10)] == [Raw(b'{"n":9}')]
    assert await again.redrive(lane, None) == 1
    assert [j.id for j in await again.take(lane, 10)] == [taken[2].id]
    for j in back:
        await again.ack(lane, j)
    await again.close()

    third = SqliteQueueStore(tmp_path / "q")
    await third.open()
    # Left: the waiting retry and the redriven job (out when closed: back again).
    assert await third.depth(lane) == 2 and await third.dead_count(lane) == 0
    assert [j.id for j in await third.take(lane, 10)] == [taken[2].id]
    await third.close()
