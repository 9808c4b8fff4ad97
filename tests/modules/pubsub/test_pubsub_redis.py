"""The ``redis`` pub/sub adapter: engines on one redis-server share topics; outages and recovery."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from pyiii import IIIError, Worker
from pyiii.engine.server import Server
from support.engines import running_server, sdk_worker, url_of
from support.redis_server import RedisServer


def config(redis_url: str) -> str:
    return (
        "workers:\n  - name: iii-pubsub\n    config:\n      adapter:\n        name: redis\n"
        f"        config: {{redis_url: '{redis_url}'}}\n"
    )


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def numsub(url: str, topic: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        counts = await client.pubsub_numsub(topic)
        return int(counts[0][1])
    finally:
        await client.aclose()


async def wait_numsub(url: str, topic: str, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (n := await numsub(url, topic)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{topic}: {n} Redis subscribers, expected {expected}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def two_engines(redis_url: str) -> AsyncIterator[tuple[Server, Server, Worker, Worker]]:
    async with (
        running_server(config(redis_url)) as a,
        running_server(config(redis_url)) as b,
        sdk_worker(url_of(a), "on-a") as wa,
        sdk_worker(url_of(b), "on-b") as wb,
    ):
        yield a, b, wa, wb


async def test_subscribers_on_both_engines_get_each_message_once(private_redis: RedisServer) -> None:
    url = private_redis.url
    async with two_engines(url) as (_a, _b, wa, wb):
        got: dict[str, collections.Counter[int]] = {k: collections.Counter() for k in ("a1", "a2", "b")}

        def counter(key: str) -> Any:
            return lambda data: got[key].update([data["n"]])

        wa.on_event("ticks", id="a::one")(counter("a1"))
        wa.on_event("ticks", id="a::two")(counter("a2"))
        wb.on_event("ticks", id="b::one")(counter("b"))
        # one Redis subscription per engine, whatever the number of bindings
        await wait_numsub(url, "ticks", 2)
        n = 300
        sends = [wa.publish_event("ticks", {"n": i}) for i in range(0, n, 2)]
        sends += [wb.publish_event("ticks", {"n": i}) for i in range(1, n, 2)]
        assert await asyncio.gather(*sends) == [None] * n
        await wait_until(lambda: all(sum(c.values()) >= n for c in got.values()), 10, "all messages")
        await asyncio.sleep(0.3)
        for key, counts in got.items():
            assert counts == collections.Counter(range(n)), key  # each message once, none lost


async def test_unsubscribe_releases_the_redis_subscription(private_redis: RedisServer) -> None:
    url = private_redis.url
    async with running_server(config(url)) as server, sdk_worker(url_of(server), "w") as w:
        got: list[Any] = []
        w.register_function("u::on", got.append)
        trig = w.register_trigger({"type": "subscribe", "function_id": "u::on", "config": {"topic": "u"}})
        await wait_numsub(url, "u", 1)
        trig.unregister()
        await wait_numsub(url, "u", 0)
        await w.publish_event("u", 1)
        w.register_trigger({"type": "subscribe", "function_id": "u::on", "config": {"topic": "u"}})
        await wait_numsub(url, "u", 1)
        await w.publish_event("u", 2)
        await wait_until(lambda: got == [2], 3, "the message after resubscribing")


async def test_redis_down_publish_fails_naming_the_url_then_everything_resumes(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_redis.url
    async with two_engines(url) as (_a, _b, wa, wb):
        got: list[Any] = []
        wb.register_function("r::on", got.append)
        wb.register_trigger({"type": "subscribe", "function_id": "r::on", "config": {"topic": "r"}})
        await wait_numsub(url, "r", 1)
        await wa.publish_event("r", "before")
        await wait_until(lambda: got == ["before"], 3, "the first message")

        with caplog.at_level(logging.WARNING, logger="pyiii.pubsub"):
            private_redis.stop()
            with pytest.raises(IIIError) as info:
                await wa.publish_event("r", "during")
            assert info.value.code == "PUBLISH_ERROR"
            assert f"Redis at {url} is unreachable" in info.value.message
            assert "topic 'r'" in info.value.message
            await wait_until(
                lambda: "subscription to Redis" in caplog.text, 5, "the lost-subscription warning"
            )
            private_redis.start()
            # the subscriber reconnects and subscribes again by itself
            await wait_numsub(url, "r", 1, timeout=10)
            await wait_until(lambda: "flow again" in caplog.text, 5, "the recovery line")
        assert await wa.publish_event("r", "after") is None
        await wait_until(lambda: got == ["before", "after"], 5, "the message after recovery")


async def test_messages_that_are_not_json_are_dropped(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_redis.url
    async with running_server(config(url)) as server, sdk_worker(url_of(server), "w") as w:
        got: list[Any] = []
        w.register_function("j::on", got.append)
        w.register_trigger({"type": "subscribe", "function_id": "j::on", "config": {"topic": "orders"}})
        await wait_numsub(url, "orders", 1)
        other = aioredis.Redis.from_url(url)
        try:
            with caplog.at_level(logging.WARNING, logger="pyiii.pubsub"):
                await other.publish("orders", b"not json {")
                await other.publish("orders", b'{"from": "redis-cli"}')  # another program, same topic
                await wait_until(lambda: got == [{"from": "redis-cli"}], 3, "the JSON message")
        finally:
            await other.aclose()
        assert "not JSON text" in caplog.text


async def test_engine_refuses_to_start_without_redis(tmp_path: Any) -> None:
    from pyiii.errors import ConfigError
    from support.engines import free_port

    url = f"redis://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"pubsub adapter redis: cannot reach Redis at {url}"):
        async with running_server(config(url)):
            pass
