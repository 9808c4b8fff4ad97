"""Queue semantics through real sockets, on every store (in_memory, file_based, redis).

Workers are pyiii SDK workers; everything a test checks is what a user sees:
which handler got which payload, when, how often, and what the management
functions report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pyiii import IIIError, Worker, connect

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A handler that records payloads (and when they came) and can fail or sleep on demand."""

    def __init__(self, *, fail: Callable[[Any], bool] | None = None, sleep_s: float = 0.0) -> None:
        self.calls: list[tuple[float, Any]] = []
        self.fail = fail
        self.sleep_s = sleep_s
        self.running = 0
        self.max_running = 0
        self._changed = asyncio.Event()

    async def __call__(self, data: Any) -> Any:
        self.calls.append((time.monotonic(), data))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self._changed.set()
        try:
            if self.sleep_s:
                await asyncio.sleep(self.sleep_s)
            if self.fail is not None and self.fail(data):
                raise RuntimeError(f"boom {data.get('n') if isinstance(data, dict) else data}")
            return {"ok": True}
        finally:
            self.running -= 1

    @property
    def payloads(self) -> list[Any]:
        return [strip(d) for _, d in self.calls]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.calls)} calls, wanted {count}: {self.payloads}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


def strip(data: Any) -> Any:
    """The payload without the engine's ``_caller_worker_id`` (added to enqueued objects)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k != "_caller_worker_id"}
    return data


async def worker(url: str) -> Worker:
    return await connect(url, name=f"q-{uuid.uuid4().hex[:6]}", invocation_timeout_ms=10_000)


async def settle(w: Worker) -> None:
    """Wait until the engine has seen everything the worker sent (a round trip)."""
    await w.trigger("engine::functions::list", {})


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await _truthy(check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _truthy(value: Any) -> bool:
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


# --- publish / subscribe ----------------------------------------------------------------


async def test_publish_reaches_every_subscribed_function_once(queue_engine: Any) -> None:
    eng = await queue_engine()
    w = await worker(eng.url)
    billing, shipping = Recorder(), Recorder()
    w.subscriber("orders", id="billing::on_order")(billing)
    w.subscriber("orders", id="shipping::on_order")(shipping)
    # The older trigger type name reaches the same topic.
    audit = Recorder()
    w.register_function("audit::on_order", audit)
    w.register_trigger({"type": "queue", "function_id": "audit::on_order", "config": {"topic": "orders"}})
    await settle(w)
    await w.publish("orders", {"id": 1, "items": [1, 2.5, "x", None, {"deep": [True]}]})
    await w.trigger("enqueue", {"topic": "orders", "data": {"id": 2}})  # the older publish name
    for rec in (billing, shipping, audit):
        await rec.wait_for(2)
    await asyncio.sleep(0.2)
    for rec in (billing, shipping, audit):
        assert sorted(rec.payloads, key=lambda d: d["id"]) == [
            {"id": 1, "items": [1, 2.5, "x", None, {"deep": [True]}]},
            {"id": 2},
        ]
    await w.shutdown()


async def test_a_busy_subscription_handles_each_message_once(queue_engine: Any) -> None:
    eng = await queue_engine()
    a, b = await worker(eng.url), await worker(eng.url)
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def handler(name: str) -> Callable[[Any], Any]:
        async def handle(data: Any) -> None:
            seen[name].append(data["n"])
            await asyncio.sleep(0.01)

        return handle

    # Handlers run side by side (concurrency 4); consumers on several engines
    # compete the same way (test_queue_redis.py). Each message is handled once.
    a.subscriber("jobs", id="shared::handle", queue_config={"concurrency": 4})(handler("a"))
    await settle(a)
    for n in range(50):
        await b.publish("jobs", {"n": n})
    await until(lambda: len(seen["a"]) + len(seen["b"]) >= 50)
    await asyncio.sleep(0.2)
    assert sorted(seen["a"] + seen["b"]) == list(range(50))
    await a.shutdown()
    await b.shutdown()


async def test_publish_to_a_topic_without_subscribers_is_accepted(queue_engine: Any) -> None:
    eng = await queue_engine()
    w = await worker(eng.url)
    assert await w.trigger("iii::durable::publish", {"topic": "nobody", "data": 1}) is None
    with pytest.raises(IIIError) as err:
        await w.trigger("iii::durable::publish", {"data": 1})
    assert err.value.code == "topic_not_set"
    with pytest.raises(IIIError) as err:
        await w.trigger("iii::durable::publish", {"topic": "t"})
    assert err.value.code == "deserialization_error"
    await w.shutdown()


async def test_a_durable_subscription_keeps_messages_while_its_worker_is_away(queue_engine: Any) -> None:
    eng = await queue_engine()
    pub = await worker(eng.url)
    first = await worker(eng.url)
    rec = Recorder()
    first.subscriber("events", id="ev::handle")(rec)
    await settle(first)
    await pub.publish("events", {"n": 0})
    await rec.wait_for(1)
    await first.shutdown()  # disconnects: the subscription stays
    await asyncio.sleep(0.1)
    for n in (1, 2, 3):
        await pub.publish("events", {"n": n})
    stats = await pub.trigger("engine::queue::topic_stats", {"topic": "events"})
    assert stats["depth"] == 3 and stats["consumer_count"] == 0
    second = await worker(eng.url)
    second.subscriber("events", id="ev::handle")(rec)
    await rec.wait_for(4)
    assert sorted(d["n"] for d in rec.payloads) == [0, 1, 2, 3]
    # An explicit unregister ends it: later messages go nowhere.
    await second.shutdown()
    third = await worker(eng.url)
    third.register_function("ev::handle", rec)
    trig = third.register_trigger(
        {"type": "durable:subscriber", "function_id": "ev::handle", "config": {"topic": "events"}}
    )
    await settle(third)
    trig.unregister()
    await settle(third)
    await asyncio.sleep(0.1)
    await pub.publish("events", {"n": 4})
    await asyncio.sleep(0.3)
    assert len(rec.calls) == 4
    assert (await pub.trigger("engine::queue::topic_stats", {"topic": "events"}))["depth"] == 0
    await third.shutdown()
    await pub.shutdown()


async def test_a_condition_function_filters_messages(queue_engine: Any) -> None:
    eng = await queue_engine()
    w = await worker(eng.url)
    rec = Recorder()
    w.register_function("big::only", lambda d: d["amount"] > 10)
    w.subscriber("pay", id="pay::big", condition_function_id="big::only")(rec)
    await settle(w)
    for amount in (5, 50, 7, 70):
        await w.publish("pay", {"amount": amount})
    await rec.wait_for(2)
    await asyncio.sleep(0.2)
    assert sorted(d["amount"] for d in rec.payloads) == [50, 70]
    await w.shutdown()


async def test_bad_subscriber_configs_fail_registration(queue_engine: Any) -> None:
    eng = await queue_engine()
    w = await worker(eng.url)
    w.register_function("x::y", lambda d: None)
    for config in ({}, {"topic": ""}, {"topic": "t", "queue_config": {"type": "lifo"}}):
        w.register_trigger({"type": "durable:subscriber", "function_id": "x::y", "config": config})
    await settle(w)
    assert eng.module.subscriptions == {}
    await w.shutdown()


# --- named queues (the enqueue action) ---------------------------------------------------


async def test_enqueue_action_returns_a_receipt_and_runs_the_target(queue_engine: Any) -> None:
    eng = await queue_engine({"payments": {"max_retries": 2}})
    w = await worker(eng.url)
    rec = Recorder()
    w.register_function("pay::charge", rec)
    await settle(w)
    receipt = await w.enqueue("pay::charge", {"amount": 5}, queue="payments")
    assert str(uuid.UUID(receipt)) == receipt
    default = await w.trigger("pay::charge", {"amount": 6}, action={"type": "enqueue", "queue": "default"})
    assert set(default) == {"messageReceiptId"}
    await rec.wait_for(2)
    assert sorted(d["amount"] for d in rec.payloads) == [5, 6]
    await w.shutdown()


async def test_enqueue_runs_a_function_of_the_engine_itself(queue_engine: Any) -> None:
    kv = {"name": "kv", "config": {"store_method": "in_memory"}}
    state = {"name": "iii-state", "config": {"adapter": kv}}
    eng = await queue_engine({"writes": {"handler_timeout_ms": 2000}}, others=(state,))
    w = await worker(eng.url)
    item = {"scope": "orders", "key": "o1", "value": {"total": 5}}
    await w.enqueue("state::set", item, queue="writes")
    await until(lambda: w.trigger("state::get", {"scope": "orders", "key": "o1"}), timeout=5)
    assert await w.trigger("state::get", {"scope": "orders", "key": "o1"}) == {"total": 5}
    assert await w.trigger("engine::queue::dlq_messages", {"topic": "writes"}) == []
    await w.shutdown()


async def test_enqueue_to_an_unconfigured_queue_names_it_and_the_config_key(queue_engine: Any) -> None:
    eng = await queue_engine({"payments": {}})
    w = await worker(eng.url)
    w.register_function("pay::charge", lambda d: None)
    await settle(w)
    with pytest.raises(IIIError) as err:
        await w.enqueue("pay::charge", {}, queue="paymnets")
    assert err.value.code == "enqueue_error"
    assert "'paymnets'" in err.value.message and "queue_configs.paymnets" in err.value.message
    assert "payments" in err.value.message  # the configured ones are listed
    with pytest.raises(IIIError) as err:
        await w.enqueue("nobody::serves", {}, queue="payments")
    assert err.value.code == "enqueue_error" and "nobody::serves" in err.value.message
    await w.shutdown()


async def test_failures_retry_with_exponential_backoff_then_dead_letter(queue_engine: Any) -> None:
    eng = await queue_engine({"jobs": {"max_retries": 4, "backoff_ms": 100, "concurrency": 1}})
    w = await worker(eng.url)
    rec = Recorder(fail=lambda d: True)
    w.register_function("job::fail", rec)
    await settle(w)
    await w.enqueue("job::fail", {"n": 1, "blob": {"a": [1, 2]}}, queue="jobs")
    await rec.wait_for(4, timeout=10)
    times = [t for t, _ in rec.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # backoff_ms * 2^(attempt-1): 100, 200, 400 ms (plus delivery time).
    for gap, expected in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert expected * 0.9 <= gap <= expected + 0.35, gaps
    await until(lambda: _dlq(w, "jobs"))
    await asyncio.sleep(0.3)
    assert len(rec.calls) == 4  # max_retries deliveries in all
    [letter] = await w.trigger("engine::queue::dlq_messages", {"topic": "jobs"})
    assert strip(letter["payload"]) == {"n": 1, "blob": {"a": [1, 2]}}
    assert letter["retries"] == 4 and "boom 1" in letter["error"]
    assert abs(letter["failed_at"] - time.time()) < 30
    job = letter["job"]
    assert job["attempts_made"] == 4 and job["max_attempts"] == 4 and job["function_id"] == "job::fail"
    stats = await w.trigger("engine::queue::topic_stats", {"queue": "jobs"})
    assert stats["depth"] == 0 and stats["dlq_depth"] == 1 and stats["config"]["max_retries"] == 4
    topics = await w.trigger("engine::queue::dlq_topics", {})
    assert {"topic": "jobs", "broker_type": "function_queue", "message_count": 1} in topics
    await w.shutdown()


async def _dlq(w: Worker, name: str) -> bool:
    return bool(await w.trigger("engine::queue::dlq_messages", {"topic": name}))


async def test_redrive_discard_and_redrive_message(queue_engine: Any) -> None:
    eng = await queue_engine({"jobs": {"max_retries": 1, "backoff_ms": 0}})
    w = await worker(eng.url)
    healthy = {"on": False}
    rec = Recorder(fail=lambda d: not healthy["on"])
    w.register_function("job::flaky", rec)
    await settle(w)
    for n in range(3):
        await w.enqueue("job::flaky", {"n": n}, queue="jobs")
    await until(lambda: _count_dlq(w, "jobs", 3))
    letters = await w.trigger("engine::queue::dlq_messages", {"topic": "jobs", "offset": 0, "limit": 10})
    by_n = {strip(x["payload"])["n"]: x["id"] for x in letters}
    page = await w.trigger("engine::queue::dlq_messages", {"topic": "jobs", "offset": 1, "limit": 1})
    assert [x["id"] for x in page] == [letters[1]["id"]]  # newest first, paged
    gone = await w.trigger("iii::queue::discard_message", {"queue": "jobs", "message_id": by_n[0]})
    assert gone["redriven"] == 1 and gone["discarded"] == 1
    again = await w.trigger("iii::queue::discard_message", {"queue": "jobs", "message_id": by_n[0]})
    assert again["redriven"] == 0
    healthy["on"] = True
    one = await w.trigger("iii::queue::redrive_message", {"queue": "jobs", "message_id": by_n[1]})
    assert one == {"queue": "jobs", "message_id": by_n[1], "redriven": 1}
    await until(lambda: any(strip(d) == {"n": 1} for d in rec.payloads[3:]))
    rest = await w.trigger("iii::queue::redrive", {"queue": "jobs"})
    assert rest == {"queue": "jobs", "redriven": 1}
    await until(lambda: any(strip(d) == {"n": 2} for d in rec.payloads[3:]))
    await asyncio.sleep(0.2)
    assert await w.trigger("engine::queue::dlq_messages", {"topic": "jobs"}) == []
    with pytest.raises(IIIError) as err:
        await w.trigger("iii::queue::redrive", {})
    assert err.value.code == "queue_not_set"
    with pytest.raises(IIIError) as err:
        await w.trigger("iii::queue::redrive_message", {"queue": "jobs"})
    assert err.value.code == "message_id_not_set"
    await w.shutdown()


async def _count_dlq(w: Worker, name: str, n: int) -> bool:
    return len(await w.trigger("engine::queue::dlq_messages", {"topic": name})) >= n


async def test_a_handler_that_times_out_is_retried_then_dead_lettered(queue_engine: Any) -> None:
    eng = await queue_engine({"slow": {"max_retries": 2, "backoff_ms": 10, "handler_timeout_ms": 200}})
    w = await worker(eng.url)
    rec = Recorder(sleep_s=1.0)
    w.register_function("job::slow", rec)
    await settle(w)
    await w.enqueue("job::slow", {"n": 1}, queue="slow")
    await until(lambda: _dlq(w, "slow"), timeout=10)
    [letter] = await w.trigger("engine::queue::dlq_messages", {"topic": "slow"})
    assert "did not finish within 200 ms" in letter["error"] and letter["retries"] == 2
    assert len(rec.calls) == 2
    # The engine forgot both timed-out invocations; the handler's late answers are dropped.
    assert eng.server.engine.pending == {}
    await until(lambda: rec.running == 0, timeout=5)
    await settle(w)
    assert eng.server.engine.pending == {} and len(rec.calls) == 2
    assert len(await w.trigger("engine::queue::dlq_messages", {"topic": "slow"})) == 1
    await w.shutdown()


async def test_concurrency_bounds_the_handlers_of_a_queue(queue_engine: Any) -> None:
    eng = await queue_engine({"bounded": {"concurrency": 3}})
    w = await worker(eng.url)
    first, second = Recorder(sleep_s=0.05), Recorder(sleep_s=0.05)
    w.register_function("b::one", first)
    w.register_function("b::two", second)
    await settle(w)
    await asyncio.gather(
        *(w.enqueue("b::one" if n % 2 else "b::two", {"n": n}, queue="bounded") for n in range(24))
    )
    await first.wait_for(12)
    await second.wait_for(12)
    # Two functions, one queue: the bound is the queue's.
    assert first.max_running + second.max_running >= 3
    peak = max(first.max_running, second.max_running)
    assert peak <= 3
    await w.shutdown()


async def test_fifo_keeps_order_per_group_and_a_poison_message_blocks_only_its_group(
    queue_engine: Any,
) -> None:
    eng = await queue_engine(
        {
            "ledger": {
                "type": "fifo",
                "message_group_field": "account",
                "max_retries": 3,
                "backoff_ms": 150,
                "concurrency": 4,
            },
            "other": {"concurrency": 2},
        }
    )
    w = await worker(eng.url)
    rec = Recorder(fail=lambda d: d.get("poison", False), sleep_s=0.005)
    other = Recorder()
    w.register_function("ledger::apply", rec)
    w.register_function("other::run", other)
    await settle(w)
    # Account "a" starts with a poison message; "b" and "c" are healthy.
    await w.enqueue("ledger::apply", {"account": "a", "n": 0, "poison": True}, queue="ledger")
    for n in range(1, 6):
        for account in ("a", "b", "c"):
            await w.enqueue("ledger::apply", {"account": account, "n": n}, queue="ledger")
    await w.enqueue("other::run", {"n": 1}, queue="other")
    # b and c finish (and the other queue runs) while a is still stuck on its poison message.
    await until(lambda: sum(1 for d in rec.payloads if d["account"] in "bc") == 10, timeout=5)
    await other.wait_for(1)
    assert [d["n"] for d in rec.payloads if d["account"] == "a"] == [0]
    for account in "bc":
        assert [d["n"] for d in rec.payloads if d["account"] == account] == [1, 2, 3, 4, 5]
    # After 3 failed deliveries (150 + 300 ms of backoff) it is dead and a continues, in order.
    await until(lambda: len([d for d in rec.payloads if d["account"] == "a"]) == 8, timeout=5)
    assert [d["n"] for d in rec.payloads if d["account"] == "a"] == [0, 0, 0, 1, 2, 3, 4, 5]
    [letter] = await w.trigger("engine::queue::dlq_messages", {"queue": "ledger"})
    assert strip(letter["payload"])["poison"] is True
    with pytest.raises(IIIError) as err:
        await w.enqueue("ledger::apply", {"n": 9}, queue="ledger")
    assert err.value.code == "enqueue_error" and "'account'" in err.value.message
    await w.shutdown()


async def test_fifo_subscription_keeps_publish_order(queue_engine: Any) -> None:
    eng = await queue_engine()
    w = await worker(eng.url)
    rec = Recorder(sleep_s=0.002)
    w.subscriber("seq", id="seq::fifo", queue_config={"type": "fifo", "concurrency": 8})(rec)
    await settle(w)
    for n in range(30):
        await w.publish("seq", {"n": n})
    await rec.wait_for(30)
    assert [d["n"] for d in rec.payloads] == list(range(30))
    assert rec.max_running == 1
    await w.shutdown()


async def test_subscriber_queue_config_sets_retries(queue_engine: Any) -> None:
    eng = await queue_engine({"default": {"backoff_ms": 10}})
    w = await worker(eng.url)
    rec = Recorder(fail=lambda d: True)
    # maxRetries counts retries after the first delivery (the reference's meaning).
    w.subscriber("t", id="t::fail", queue_config={"maxRetries": 2, "backoffDelayMs": 20})(rec)
    await settle(w)
    await w.publish("t", {"n": 1})
    await until(lambda: _dlq(w, "t"))
    assert len(rec.calls) == 3
    listing = await w.trigger("engine::queue::list_topics", {})
    assert {"name": "t", "broker_type": eng.module.store.broker_type, "subscriber_count": 1} in listing
    await w.shutdown()


async def test_management_functions_accept_both_field_names(queue_engine: Any) -> None:
    eng = await queue_engine({"q": {}})
    w = await worker(eng.url)
    a = await w.trigger("engine::queue::topic_stats", {"topic": "q"})
    b = await w.trigger("engine::queue::topic_stats", {"queue": "q"})
    assert a == b and a["config"]["concurrency"] == 10 and a["consumer_count"] == 10
    with pytest.raises(IIIError) as err:
        await w.trigger("engine::queue::topic_stats", {})
    assert err.value.code == "topic_required"
    assert await w.trigger("iii::queue::redrive", {"topic": "nothing"}) == {"queue": "nothing", "redriven": 0}
    await w.shutdown()
