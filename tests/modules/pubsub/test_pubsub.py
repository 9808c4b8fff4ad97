"""``publish`` and the ``subscribe`` trigger type on one engine (local adapter), over real sockets."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from pyiii import IIIError
from pyiii.config import parse_config
from pyiii.errors import ConfigError
from pyiii.modules.pubsub.config import PubSubConfig
from pyiii.modules.pubsub.module import PubSubModule
from support.engines import running_server, sdk_worker, url_of
from support.jsonvalues import same_json

CONFIG = "workers:\n  - name: iii-pubsub\n"


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


VALUES: list[Any] = [
    {"orderId": "abc-123", "address": "123 Main St"},
    [1, 2.5, "three", None, True, {"nested": [[]]}],
    "just a string",
    0,
    -1.5e300,
    12345678901234567890,
    None,
    {},
    "ünïcødé ✓ \u2028",
]


async def test_every_subscriber_gets_data_as_published_once() -> None:
    async with (
        running_server(CONFIG) as server,
        sdk_worker(url_of(server), "subs-a") as a,
        sdk_worker(url_of(server), "subs-b") as b,
    ):
        got: dict[str, list[Any]] = {"a1": [], "a2": [], "b": [], "other": []}

        @a.on_event("orders.shipped", id="a::one")
        def a1(data: Any) -> None:
            got["a1"].append(data)

        @a.on_event("orders.shipped", id="a::two")
        async def a2(data: Any) -> None:
            got["a2"].append(data)

        @b.on_event("orders.shipped")
        def on_b(data: Any) -> None:
            got["b"].append(data)

        @b.on_event("orders.cancelled", id="b::other")
        def other(data: Any) -> None:
            got["other"].append(data)

        await wait_until(lambda: len(server.module("iii-pubsub").topics) == 2, 3, "subscriptions")  # type: ignore[attr-defined]
        assert "test_pubsub::test_every_subscriber_gets_data_as_published_once.<locals>.on_b" in {
            t.function_id for t in server.engine.triggers.values()
        }
        for value in VALUES:
            assert await a.publish_event("orders.shipped", value) is None
        await wait_until(lambda: all(len(got[k]) == len(VALUES) for k in ("a1", "a2", "b")), 5, "delivery")
        await asyncio.sleep(0.2)
        for key in ("a1", "a2", "b"):
            assert len(got[key]) == len(VALUES)
            # order is not promised; every value arrives exactly once, unchanged
            for value in VALUES:
                assert sum(same_json(value, v) for v in got[key]) == 1, (key, value)
        assert got["other"] == []


async def test_official_call_shape_and_missing_data() -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "raw") as w:
        got: list[Any] = []
        w.register_function("n::on", got.append)
        w.register_trigger({"type": "subscribe", "function_id": "n::on", "config": {"topic": "t"}})
        await wait_until(lambda: "t" in server.module("iii-pubsub").topics, 3, "subscription")  # type: ignore[attr-defined]
        assert await w.trigger("publish", {"topic": "t", "data": {"x": 1}}) is None
        assert await w.trigger("publish", {"topic": "t"}) is None  # no data: subscribers get null
        assert await w.trigger("publish", {"topic": "t", "data": 2}, action={"type": "void"}) is None
        assert await w.trigger("publish", {"topic": "nobody-listens", "data": 1}) is None
        await wait_until(lambda: len(got) == 3, 3, "three messages")
        assert sorted(map(repr, got)) == sorted(map(repr, [{"x": 1}, None, 2]))


async def test_unregister_and_disconnect_stop_delivery() -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "pub") as pub:
        module = server.module("iii-pubsub")
        assert isinstance(module, PubSubModule)
        got: list[Any] = []
        async with sdk_worker(url_of(server), "sub") as sub:
            sub.register_function("u::on", got.append)
            trig = sub.register_trigger(
                {"type": "subscribe", "function_id": "u::on", "config": {"topic": "u"}}
            )
            await wait_until(lambda: "u" in module.topics, 3, "subscription")
            await pub.publish_event("u", 1)
            await wait_until(lambda: got == [1], 3, "first message")
            trig.unregister()
            await wait_until(lambda: "u" not in module.topics, 3, "unsubscribe")
            await pub.publish_event("u", 2)
            sub.register_trigger({"type": "subscribe", "function_id": "u::on", "config": {"topic": "u"}})
            await wait_until(lambda: "u" in module.topics, 3, "second subscription")
        await wait_until(lambda: "u" not in module.topics, 3, "bindings dropped with the worker")
        await pub.publish_event("u", 3)
        await asyncio.sleep(0.2)
        assert got == [1]
        assert module.stats() == {"topics": 0, "bindings": 0, "delivered": 1}


async def test_a_failing_subscriber_misses_nothing_for_others(caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "mixed") as w:
        good: list[Any] = []

        @w.on_event("jobs", id="f::bad")
        def bad(data: Any) -> None:
            raise RuntimeError("subscriber exploded")

        @w.on_event("jobs", id="f::good")
        def ok(data: Any) -> None:
            good.append(data)

        await wait_until(lambda: len(server.module("iii-pubsub").topics.get("jobs", {})) == 2, 3, "subs")  # type: ignore[attr-defined]
        with caplog.at_level(logging.WARNING, logger="pyiii.pubsub"):
            for i in range(20):
                assert await w.publish_event("jobs", i) is None
            await wait_until(lambda: len(good) == 20, 5, "the good subscriber")
            await asyncio.sleep(0.2)
        assert sorted(good) == list(range(20))
        reports = [r for r in caplog.records if r.name == "pyiii.pubsub" and "f::bad" in r.getMessage()]
        assert len(reports) == 1  # rate-limited: one line, not twenty
        assert "subscriber exploded" in reports[0].getMessage()


async def test_bad_input(caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "bad") as w:
        for payload, code, text in (
            ({"data": 1}, "topic_not_set", "publish needs 'topic', a non-empty string; found nothing"),
            ({"topic": "", "data": 1}, "topic_not_set", "found ''"),
            ({"topic": 5, "data": 1}, "topic_not_set", "found 5"),
            ([1, 2], "deserialization_error", "expected {topic: string, data: any}"),
            ("orders", "deserialization_error", "Failed to deserialize input for publish"),
        ):
            with pytest.raises(IIIError) as info:
                await w.trigger("publish", payload)
            assert info.value.code == code and text in info.value.message, info.value
        w.register_function("b::on", lambda d: None)
        with caplog.at_level(logging.WARNING, logger="pyiii.sdk"):
            for config in ({}, {"topic": ""}, {"topic": ["a"]}, None):
                w.register_trigger({"type": "subscribe", "function_id": "b::on", "config": config})
            await wait_until(lambda: caplog.text.count("registration failed") == 4, 3, "four failures")
        assert caplog.text.count("subscribe trigger needs 'topic', a non-empty string") == 4
        assert not [t for t in server.engine.triggers.values() if t.function_id == "b::on"]
        assert await w.trigger("publish", {"topic": "fine", "data": 1}) is None


def test_config_shapes() -> None:
    def pubsub(text: str) -> PubSubConfig:
        config = parse_config(text, source="t").module_config("iii-pubsub")
        assert isinstance(config, PubSubConfig)
        return config

    assert pubsub("workers:\n  - name: pubsub\n") == PubSubConfig()
    assert pubsub("workers:\n  - name: iii-pubsub\n    config: {adapter: {name: local}}\n").adapter == "local"
    old = "modules:\n  - class: modules::pubsub::PubSubModule\n    config:\n      adapter:\n"
    got = pubsub(
        old + "        class: modules::pubsub::RedisAdapter\n        config: {redis_url: 'redis://h:1'}\n"
    )
    assert (got.adapter, got.redis_url) == ("redis", "redis://h:1")
    assert pubsub(old + "        class: modules::pubsub::LocalAdapter\n").adapter == "local"
    for bad, message in (
        ("{name: kafka}", "unknown PubSub adapter 'kafka'"),
        ("{name: local, config: {redis_url: 'redis://x'}}", "redis_url"),
        ("{name: redis, config: {redis_url: 'http://x'}}", "redis_url"),
        ("redis", "expected a mapping"),
    ):
        with pytest.raises(ConfigError, match=message):
            pubsub(f"workers:\n  - name: iii-pubsub\n    config:\n      adapter: {bad}\n")
