"""Several engines on one redis-server are one queue system; Redis outages heal by themselves.

Engines are in-process servers (or a ``pyiii serve`` subprocess where one must
be SIGKILLed) on the session's redis-server, each test with its own key
prefix; the outage test has a private redis-server with an append-only file
(``appendfsync always``), so what Redis acknowledged survives its restart.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pyiii import IIIError, Worker, connect
from support.queue_engines import QueueEngine, queue_config_yaml
from support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)


def redis_block(url: str, prefix: str, visibility_ms: int = 1500) -> dict[str, Any]:
    return {
        "name": "redis",
        "config": {"redis_url": url, "key_prefix": prefix, "visibility_timeout_ms": visibility_ms},
    }


async def worker(url: str, name: str) -> Worker:
    return await connect(url, name=name, invocation_timeout_ms=10_000)


async def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def subscribed(w: Worker, topic: str) -> None:
    """Wait until a subscription made on another engine is in Redis (a few ms after the trigger)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        topics = await w.trigger("engine::queue::list_topics", {})
        if any(t["name"] == topic for t in topics):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the subscription to {topic!r} never reached Redis")


async def test_two_engines_share_10000_messages_each_processed_once(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    text = queue_config_yaml({}, redis_block(redis_url, prefix))
    one, two = await QueueEngine(text).start(), await QueueEngine(text).start()
    counts: collections.Counter[int] = collections.Counter()
    by_engine = {"one": 0, "two": 0}
    workers = []
    for name, eng in (("one", one), ("two", two)):
        w = await worker(eng.url, f"consumer-{name}")

        def handler(engine_name: str) -> Any:
            async def handle(data: Any) -> None:
                counts[data["n"]] += 1
                by_engine[engine_name] += 1

            return handle

        w.subscriber("shared", id="shared::handle", queue_config={"concurrency": 32})(handler(name))
        await w.trigger("engine::functions::list", {})
        workers.append(w)
    publishers = [await worker(one.url, "pub-one"), await worker(two.url, "pub-two")]
    for p in publishers:
        await subscribed(p, "shared")
    total = 10_000

    async def publish(start: int) -> None:
        for n in range(start, total, 64):
            await publishers[n % 2].publish("shared", {"n": n})

    started = time.monotonic()
    await asyncio.gather(*(publish(i) for i in range(64)))
    await wait_until(lambda: len(counts) == total, 60, "every message")
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)
    duplicates = {n: c for n, c in counts.items() if c != 1}
    assert not duplicates, f"processed more than once: {list(duplicates.items())[:10]}"
    assert sum(counts.values()) == total
    assert by_engine["one"] > total // 10 and by_engine["two"] > total // 10, by_engine
    print(f"two engines: {total} messages, each once, in {elapsed:.1f}s; split {by_engine}")
    for w in [*workers, *publishers]:
        await w.shutdown()
    await one.stop()
    await two.stop()


async def test_messages_held_by_a_killed_engine_are_processed_by_the_other(
    redis_url: str, make_engine_proc: Any
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    text = queue_config_yaml({}, redis_block(redis_url, prefix, visibility_ms=1500))
    survivor = await QueueEngine(text).start()
    doomed = make_engine_proc(text).start()
    done: dict[int, str] = {}
    held: set[int] = set()

    b = await worker(doomed.url, "doomed-consumer")

    @b.subscriber("jobs", id="jobs::handle", queue_config={"concurrency": 8})
    async def slow(data: Any) -> None:
        held.add(data["n"])
        await asyncio.sleep(60)  # never finishes: its engine dies first

    await b.trigger("engine::functions::list", {})
    pub = await worker(survivor.url, "publisher")
    await subscribed(pub, "jobs")
    for n in range(8):
        await pub.publish("jobs", {"n": n})
    await wait_until(lambda: len(held) == 8, 10, "the doomed engine to hold every message")
    doomed.stop(signal.SIGKILL)
    killed = time.monotonic()
    a = await worker(survivor.url, "survivor-consumer")

    @a.subscriber("jobs", id="jobs::handle", queue_config={"concurrency": 8})
    async def fast(data: Any) -> None:
        done[data["n"]] = "survivor"

    await wait_until(lambda: len(done) == 8, 15, "the survivor to process the held messages")
    waited = time.monotonic() - killed
    assert sorted(done) == list(range(8))
    assert waited >= 1.0  # they came back after the lease (1.5 s), not at once
    stats = await pub.trigger("engine::queue::topic_stats", {"topic": "jobs"})
    assert stats["depth"] == 0 and stats["dlq_depth"] == 0
    await b.shutdown()
    await a.shutdown()
    await pub.shutdown()
    await survivor.stop()


async def test_retries_and_dead_letters_work_across_engines(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    text = queue_config_yaml({"jobs": {"max_retries": 2, "backoff_ms": 50}}, redis_block(redis_url, prefix))
    one, two = await QueueEngine(text).start(), await QueueEngine(text).start()
    healthy = {"on": False}
    calls: list[Any] = []
    consumer = await worker(two.url, "consumer")

    @consumer.function("jobs::flaky")
    async def flaky(data: Any) -> None:
        calls.append(data["n"])
        if not healthy["on"]:
            raise RuntimeError("not yet")

    await consumer.trigger("engine::functions::list", {})
    producer = await worker(one.url, "producer")
    # The function lives on engine two only; enqueue through engine one reaches it once
    # engine two has consumed that lane (a lane another engine made is found by polling).
    await consumer.enqueue("jobs::flaky", {"n": 0}, queue="jobs")
    await wait_until(lambda: len(calls) == 2, 10, "two deliveries")

    async def dead() -> list[Any]:
        return list(await producer.trigger("engine::queue::dlq_messages", {"queue": "jobs"}))

    deadline = time.monotonic() + 10
    letters: list[Any] = []
    while not letters and time.monotonic() < deadline:
        letters = await dead()
        await asyncio.sleep(0.05)
    assert len(letters) == 1 and "not yet" in letters[0]["error"]  # seen from the other engine
    await producer.enqueue("jobs::flaky", {"n": 1}, queue="jobs")  # accepted: the lane exists
    healthy["on"] = True
    assert (await producer.trigger("iii::queue::redrive", {"queue": "jobs"}))["redriven"] == 1
    await wait_until(lambda: calls.count(0) == 3 and 1 in calls, 10, "the redriven message")
    await consumer.shutdown()
    await producer.shutdown()
    await one.stop()
    await two.stop()


async def test_redis_down_fails_publish_naming_the_url_and_recovery_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]
    ).start()
    try:
        text = queue_config_yaml({}, redis_block(server.url, "out"))
        eng = await QueueEngine(text).start()
        got: set[int] = set()
        held: set[int] = set()
        gate = asyncio.Event()
        gate.set()
        w = await worker(eng.url, "consumer")

        @w.subscriber("t", id="t::handle")  # default queue: 10 handlers at once
        async def handle(data: Any) -> None:
            held.add(data["n"])
            await gate.wait()
            got.add(data["n"])

        await w.trigger("engine::functions::list", {})
        acknowledged = set()
        for n in range(20):
            await w.publish("t", {"n": n})
            acknowledged.add(n)
        await wait_until(lambda: got >= acknowledged, 10, "the first messages")
        # A backlog when Redis goes down: 10 messages out to handlers that have not
        # returned, 10 more waiting in Redis; all acknowledged.
        gate.clear()
        for n in range(20, 40):
            await w.publish("t", {"n": n})
            acknowledged.add(n)
        await wait_until(lambda: len(held - got) == 10, 10, "ten handlers running")
        server.stop()
        gate.set()  # they return while Redis is down: their acks must wait for it
        await asyncio.sleep(0.2)
        with pytest.raises(IIIError) as err:
            await w.publish("t", {"n": 999})
        assert err.value.code == "publish_failed"
        assert server.url in err.value.message and "unreachable" in err.value.message
        server.start()
        deadline = time.monotonic() + 20
        n = 40
        while n < 60 and time.monotonic() < deadline:
            try:
                await w.publish("t", {"n": n})
            except IIIError:
                await asyncio.sleep(0.1)  # Redis is still coming back
                continue
            acknowledged.add(n)
            n += 1
        assert n == 60
        await wait_until(lambda: got >= acknowledged, 20, "every acknowledged message after the outage")
        assert 999 not in got
        depth = -1
        deadline = time.monotonic() + 10
        while depth != 0 and time.monotonic() < deadline:  # the delayed acks reached Redis
            depth = (await w.trigger("engine::queue::topic_stats", {"topic": "t"}))["depth"]
            await asyncio.sleep(0.1)
        assert depth == 0
        await w.shutdown()
        await eng.stop()
    finally:
        server.stop()
