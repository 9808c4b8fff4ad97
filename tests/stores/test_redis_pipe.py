"""The shared pipelined Redis connection (pyiii.redis_pipe) against a real redis-server:
order, errors, a dropped connection, a stuck command, a password, and the
subscription that carries State's change events."""

from __future__ import annotations

import asyncio
import time
import urllib.parse

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyiii.errors import ConfigError
from pyiii.redis_conn import RedisConnection
from pyiii.redis_pipe import RedisPipe, encode_command, listen
from support.redis_server import RedisServer  # tests/support, on sys.path via tests/conftest.py


def pipe_for(url: str, **kwargs: float) -> RedisPipe:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return RedisPipe(parts.hostname, parts.port, **kwargs)  # type: ignore[arg-type]


def test_encode_command() -> None:
    assert encode_command([b"SET", "ké", 12]) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n12\r\n"


async def test_concurrent_commands_get_their_own_replies_in_order(redis_url: str) -> None:
    pipe = pipe_for(redis_url)
    await pipe.open()
    try:
        key = f"pipe-{time.monotonic_ns()}"
        # Issued in one loop turn: they leave together and come back in order.
        replies = await asyncio.gather(*(pipe.call(b"INCR", key) for _ in range(500)))
        assert replies == list(range(1, 501))
        assert await pipe.call(b"HMGET", key + "h", b"a", b"b") == [None, None]
        # An error reply fails its own command only.
        bad, good = pipe.call(b"HGET", key, b"f"), pipe.call(b"GET", key)
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await bad
        assert await good == b"500"
    finally:
        await pipe.close()
    with pytest.raises(RedisConnectionError, match="closed"):
        await pipe.call(b"PING")


async def test_a_dropped_connection_fails_what_is_in_flight_then_reconnects(
    private_redis: RedisServer,
) -> None:
    pipe = pipe_for(private_redis.url)
    await pipe.open()
    try:
        blocked = pipe.call(b"BLPOP", b"never", 10)  # in flight when the server goes
        await asyncio.sleep(0.1)
        private_redis.stop()
        with pytest.raises(RedisConnectionError):
            await blocked
        with pytest.raises(RedisConnectionError, match="connecting"):
            await pipe.call(b"PING")  # nothing listens: fails fast, no hang
        private_redis.start()
        assert await pipe.call(b"PING") == b"PONG"
    finally:
        await pipe.close()


async def test_a_command_without_reply_times_out_and_the_pipe_recovers(redis_url: str) -> None:
    pipe = pipe_for(redis_url, timeout=0.3)
    await pipe.open()
    try:
        start = time.monotonic()
        stuck = pipe.call(b"BLPOP", f"never-{time.monotonic_ns()}", 5)
        behind = pipe.call(b"PING")
        with pytest.raises(RedisTimeoutError):
            await stuck
        with pytest.raises(RedisTimeoutError):
            await behind
        assert time.monotonic() - start < 2
        assert await pipe.call(b"PING") == b"PONG"  # a new connection
    finally:
        await pipe.close()


async def test_password_and_database_from_the_url(private_redis: RedisServer) -> None:
    admin = redis.Redis(port=private_redis.port)
    admin.config_set("requirepass", "s3cret")
    admin = redis.Redis(port=private_redis.port, password="s3cret")
    try:
        url = private_redis.url.replace("redis://", "redis://:s3cret@") + "/3"
        conn = RedisConnection(url, owner="test", pipe=True)
        await conn.open()
        try:
            assert conn.pipe is not None
            await conn.pipe.call(b"SET", b"k", b"v")
            assert redis.Redis(port=private_redis.port, password="s3cret", db=3).get("k") == b"v"
        finally:
            await conn.close()
        wrong = RedisConnection(
            private_redis.url.replace("redis://", "redis://:nope@"), owner="test adapter", pipe=True
        )
        with pytest.raises(ConfigError, match="test adapter"):
            await wrong.open()
    finally:
        admin.config_set("requirepass", "")


async def test_listen_delivers_pattern_messages_in_order(redis_url: str) -> None:
    pipe = pipe_for(redis_url)
    got: list[bytes] = []
    subscribed = asyncio.Event()
    task = asyncio.create_task(listen(pipe, b"pipe-test:*", got.append, subscribed.set))
    try:
        await asyncio.wait_for(subscribed.wait(), 5)
        publisher = redis.Redis.from_url(redis_url)
        for i in range(100):
            publisher.publish(f"pipe-test:{i % 3}", b"m%d" % i)
        publisher.publish("other", b"not for us")
        deadline = time.monotonic() + 5
        while len(got) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert got == [b"m%d" % i for i in range(100)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
