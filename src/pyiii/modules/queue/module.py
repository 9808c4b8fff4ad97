"""The Queue module: functions, trigger types and the enqueue hook over a ``QueueStore``.

Both API generations are served at once:

* current SDKs: ``iii::durable::publish {topic, data}`` (``queue`` is an
  alias of ``topic``) and trigger type ``durable:subscriber {topic,
  queue_config?, condition_function_id?}``; the ``{"type":"enqueue",
  "queue":Q}`` action of any invocation (through ``Engine.enqueue_handler``);
* older clients (Motia 1.0.x, iii-sdk <= 0.13): ``enqueue {topic, data}`` and
  trigger type ``queue {topic, ...}``, the same thing under older names.

Topics fan out: a publish puts one job in the lane of every distinct
function subscribed to the topic (on any engine of a shared store); a
subscription is durable, so messages keep arriving in its lane while its
worker is away, and it ends when the trigger is unregistered (not when the
worker disconnects). A publish to a topic nobody subscribes to is dropped.
Named queues (``queue_configs``) carry ``enqueue`` actions to their target
function. Delivery rules live in ``delivery.py``, storage in ``adapters/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw

from pyiii import errors
from pyiii.engine.module import Module, TriggerProvider
from pyiii.engine.registry import NO_RESULT, CallContext, EnqueueRequest, Trigger
from pyiii.errors import IIIError
from pyiii.modules.queue.adapters.base import QueueStore, StoreError
from pyiii.modules.queue.config import DEFAULT_QUEUE, QueueConfig, QueueSettings
from pyiii.modules.queue.delivery import LaneConsumer, Slots
from pyiii.modules.queue.inputs import (
    DlqPage,
    MessageRef,
    PublishInput,
    QueueRef,
    SubscriberConfig,
    TopicRef,
    decode,
    name_of,
)
from pyiii.modules.queue.jobs import NULL, DeadLetter, Delivery, Job, Lane, group_value, new_id, now_ms

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.queue")

WORKER_NAME = "iii-queue"
SUBSCRIBER_TYPES = {
    "durable:subscriber": "Durable topic subscription: each subscribed function gets every message",
    "queue": "Topic subscription (older name of durable:subscriber)",
}
# How often an engine on a shared store looks for lanes other engines made
# and re-asserts its subscriptions (they survive a Redis restart that lost them).
REFRESH_S = 2.0
DRAIN_S = 2.0


def build_store(config: QueueConfig) -> QueueStore:
    """The store the config names."""
    if config.adapter == "redis":
        from pyiii.modules.queue.adapters.redis import RedisQueueStore

        return RedisQueueStore(
            config.redis_url, visibility_timeout_ms=config.visibility_timeout_ms, prefix=config.key_prefix
        )
    if config.store_method == "file_based":
        from pyiii.modules.queue.adapters.sqlite import SqliteQueueStore

        return SqliteQueueStore(config.file_path, synchronous=config.synchronous.upper())
    from pyiii.modules.queue.adapters.memory import MemoryQueueStore

    return MemoryQueueStore()


def queue_delivery(settings: QueueSettings) -> Delivery:
    return Delivery(
        max_attempts=max(settings.max_retries, 1),
        backoff_ms=settings.backoff_ms,
        concurrency=settings.concurrency,
        fifo=settings.type == "fifo",
        group_field=settings.message_group_field,
        handler_timeout_ms=settings.handler_timeout_ms,
        poll_interval_ms=settings.poll_interval_ms,
    )


def subscriber_delivery(base: QueueSettings, queue_config: dict[str, Any] | None) -> Delivery:
    """A subscription's delivery: the ``default`` queue, overridden by its ``queue_config``.

    ``maxRetries`` counts retries after the first delivery (the reference's
    meaning for subscriptions); ``visibilityTimeout`` (seconds) is the
    handler timeout; ``messageGroupField`` (pyiii) orders a fifo subscription
    by that field instead of as one line.
    """
    delivery = queue_delivery(base)
    if not queue_config:
        return delivery
    cfg = queue_config

    def number(key: str, minimum: int) -> int | None:
        value = cfg.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise IIIError(
                errors.TRIGGER_REGISTRATION_FAILED,
                f"queue_config.{key} must be a number >= {minimum}, found {value!r}",
            )
        return int(value)

    kind = cfg.get("type")
    if kind not in (None, "standard", "fifo"):
        raise IIIError(
            errors.TRIGGER_REGISTRATION_FAILED,
            f"queue_config.type must be 'standard' or 'fifo', found {kind!r}",
        )
    group_field = cfg.get("messageGroupField")
    if group_field is not None and not isinstance(group_field, str):
        raise IIIError(errors.TRIGGER_REGISTRATION_FAILED, "queue_config.messageGroupField must be a string")
    retries = number("maxRetries", 0)
    concurrency = number("concurrency", 1)
    backoff = number("backoffDelayMs", 0)
    visibility = number("visibilityTimeout", 1)
    fifo = delivery.fifo if kind is None else kind == "fifo"
    return Delivery(
        max_attempts=delivery.max_attempts if retries is None else retries + 1,
        backoff_ms=delivery.backoff_ms if backoff is None else backoff,
        concurrency=delivery.concurrency if concurrency is None else concurrency,
        fifo=fifo,
        group_field=(group_field or "") if fifo else None,
        handler_timeout_ms=delivery.handler_timeout_ms if visibility is None else visibility * 1000,
        poll_interval_ms=delivery.poll_interval_ms,
    )


@dataclass(slots=True)
class _Subscription:
    """A lane consumed here for a topic, and the triggers that asked for it."""

    topic: str
    lane: Lane
    delivery: Delivery
    consumer: LaneConsumer
    triggers: set[str] = field(default_factory=set)


class QueueModule(Module):
    """Durable queues and topics (see module docstring)."""

    name = WORKER_NAME

    def __init__(self, config: QueueConfig, store: QueueStore | None = None) -> None:
        self.config = config
        self.store = store or build_store(config)
        self.engine: Engine | None = None
        self.subscriptions: dict[str, _Subscription] = {}  # lane key -> subscription
        self.bindings: dict[str, tuple[str, Trigger]] = {}  # trigger id -> (lane key, trigger)
        self.queue_consumers: dict[str, LaneConsumer] = {}  # lane key -> consumer (named queues)
        self.queue_slots = {name: Slots(s.concurrency) for name, s in config.queues.items()}
        self._reconcile_wanted = False
        self._reconciling: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # The last store write (subscribe / unsubscribe) of each subscription, by lane key.
        self._lane_writes: dict[str, asyncio.Task[Any]] = {}
        self._warned_lanes: set[str] = set()
        self._stopped = False

    def describe(self) -> str:
        queues = ", ".join(sorted(self.config.queues))
        return f"{self.store.describe()}; queues: {queues}"

    # --- lifecycle ----------------------------------------------------------------

    async def start(self, engine: Engine) -> None:
        await self.store.open()
        self.engine = engine
        functions = {
            "iii::durable::publish": (self._publish, "Publish a message to a topic (durable, fan-out)"),
            "enqueue": (self._publish, "Publish a message to a topic (older name of iii::durable::publish)"),
            "iii::queue::redrive": (self._redrive, "Move a queue's dead letters back into it"),
            "iii::queue::redrive_message": (self._redrive_message, "Move one dead letter back"),
            "iii::queue::discard_message": (self._discard_message, "Delete one dead letter"),
            "engine::queue::list_topics": (self._list_topics, "List topics and named queues"),
            "engine::queue::topic_stats": (self._topic_stats, "Depth, consumers and DLQ depth of a topic"),
            "engine::queue::dlq_topics": (self._dlq_topics, "Dead-letter counts per topic and queue"),
            "engine::queue::dlq_messages": (self._dlq_messages, "Browse a dead-letter queue"),
        }
        for function_id, (handler, description) in functions.items():
            engine.register_builtin(function_id, handler, worker_name=WORKER_NAME, description=description)
        provider = _SubscriberTriggers(self)
        for type_id, description in SUBSCRIBER_TYPES.items():
            engine.register_trigger_type(type_id, description, provider, worker_name=WORKER_NAME)
        engine.enqueue_handler = self._enqueue
        engine.on_functions_changed.append(self._functions_changed)
        self._functions_changed()
        if self.store.broker_type != "builtin":
            self._refresher = asyncio.ensure_future(self._refresh_loop())

    async def stop(self) -> None:
        self._stopped = True
        engine = self.engine
        if engine is not None:
            if engine.enqueue_handler == self._enqueue:
                engine.enqueue_handler = None
            if self._functions_changed in engine.on_functions_changed:
                engine.on_functions_changed.remove(self._functions_changed)
        for task in (self._refresher, self._reconciling):
            if task is not None:
                task.cancel()
        consumers = [s.consumer for s in self.subscriptions.values()] + list(self.queue_consumers.values())
        await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)
        await asyncio.gather(*(c.drain(DRAIN_S) for c in consumers), return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=DRAIN_S)
        await self.store.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _in_order(self, lane_key: str, coro: Any) -> None:
        """Run a subscription's store writes one after another: a subscribe still on its way
        must not land after the unsubscribe that followed it (the subscription would stay)."""
        previous = self._lane_writes.get(lane_key)

        async def after_previous() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await coro

        task = self._spawn(after_previous())
        self._lane_writes[lane_key] = task

        def forget(done: asyncio.Task[Any]) -> None:
            if self._lane_writes.get(lane_key) is done:
                del self._lane_writes[lane_key]

        task.add_done_callback(forget)

    def _engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def _poll_s(self, delivery: Delivery) -> float | None:
        # A shared store cannot tell us when another engine's retries come due.
        return None if self.store.broker_type == "builtin" else max(delivery.poll_interval_ms / 1000, 0.05)

    # --- publish (topics) ---------------------------------------------------------------

    async def _publish(self, data: Raw, ctx: CallContext) -> Any:
        inp: PublishInput = decode(data, PublishInput, ctx.function_id)
        topic = inp.topic if inp.topic else inp.queue
        if not topic:
            raise IIIError("topic_not_set", "Topic is not set: publish needs {topic, data}")
        try:
            subscribers = await self.store.subscribers(topic)
        except StoreError as exc:
            raise IIIError("publish_failed", f"could not publish to topic '{topic}': {exc}") from None
        # This engine's own subscriptions count at once, even while their
        # write to the store is still on its way.
        known = {lane.key for lane, _ in subscribers}
        subscribers += [
            (sub.lane, _order(sub.delivery))
            for sub in self.subscriptions.values()
            if sub.topic == topic and sub.lane.key not in known
        ]
        if not subscribers:
            log.debug("publish to topic %r with no subscriber: dropped", topic)
            return NO_RESULT
        base = self.config.queues[DEFAULT_QUEUE]
        receipt = new_id()
        now = now_ms()
        decoded: Any = _UNDECODED
        items: list[tuple[Lane, Job]] = []
        for lane, group_field in subscribers:
            group: str | None = None
            if group_field is not None:
                if group_field:
                    if decoded is _UNDECODED:
                        decoded = msgspec.json.decode(inp.data)
                    group = group_value(decoded, group_field) or ""
                else:
                    group = ""
            items.append(
                (
                    lane,
                    Job(
                        id=new_id(),
                        queue=topic,
                        function_id=lane.function_id,
                        namespace=lane.namespace,
                        data=inp.data,
                        max_attempts=max(base.max_retries, 1),
                        backoff_delay_ms=base.backoff_ms,
                        created_at=now,
                        group_id=group,
                        message_id=receipt,
                    ),
                )
            )
        try:
            await self.store.push(items)
        except StoreError as exc:
            raise IIIError("publish_failed", f"could not publish to topic '{topic}': {exc}") from None
        return NO_RESULT

    # --- enqueue action (named queues) ----------------------------------------------

    async def _enqueue(self, req: EnqueueRequest) -> str:
        settings = self.config.queues.get(req.queue)
        if settings is None:
            configured = ", ".join(sorted(self.config.queues))
            raise IIIError(
                errors.ENQUEUE_ERROR,
                f"queue '{req.queue}' is not configured: add it to the iii-queue config as"
                f" queue_configs.{req.queue} (configured queues: {configured})",
            )
        lane = Lane("queue", req.queue, req.namespace, req.function_id)
        group: str | None = None
        if settings.type == "fifo":
            field_name = settings.message_group_field or ""
            group = group_value(msgspec.json.decode(req.data), field_name)
            if group is None:
                raise IIIError(
                    errors.ENQUEUE_ERROR,
                    f"queue '{req.queue}' is fifo and orders messages by '{field_name}', but this"
                    f" message has no '{field_name}' (or it is null); add it to the payload",
                )
        engine = self._engine()
        local = (req.namespace, req.function_id) in engine.functions
        try:
            if not local and lane not in await self.store.lanes():
                raise IIIError(
                    errors.ENQUEUE_ERROR,
                    f"Function {req.function_id} not found in namespace {req.namespace}:"
                    " no worker serves it, so nothing would run the message",
                )
            receipt = new_id()
            job = Job(
                id=new_id(),
                queue=req.queue,
                function_id=req.function_id,
                namespace=req.namespace,
                data=req.data,
                max_attempts=max(settings.max_retries, 1),
                backoff_delay_ms=settings.backoff_ms,
                created_at=now_ms(),
                group_id=group,
                message_id=receipt,
                traceparent=req.traceparent,
                baggage=req.baggage,
                metadata=NULL if req.metadata is UNSET else req.metadata,  # type: ignore[arg-type]
            )
            await self.store.push([(lane, job)])
        except StoreError as exc:
            raise IIIError(errors.ENQUEUE_ERROR, f"could not enqueue to queue '{req.queue}': {exc}") from None
        if local and lane.key not in self.queue_consumers:
            self._start_queue_consumer(lane)
        return receipt

    # --- named-queue consumers -----------------------------------------------------------

    def _functions_changed(self) -> None:
        # Sync callback from the engine: reconcile in the background, once.
        self._reconcile_wanted = True
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = asyncio.ensure_future(self._reconcile())

    async def _reconcile(self) -> None:
        while self._reconcile_wanted and not self._stopped:
            self._reconcile_wanted = False
            try:
                lanes = await self.store.lanes()
            except StoreError as exc:
                log.warning("queue: cannot list lanes (%s); retrying", exc)
                await asyncio.sleep(1.0)
                self._reconcile_wanted = True
                continue
            engine = self._engine()
            wanted = {
                lane.key: lane
                for lane in lanes
                if lane.kind == "queue" and (lane.namespace, lane.function_id) in engine.functions
            }
            for key, lane in wanted.items():
                if key not in self.queue_consumers:
                    self._start_queue_consumer(lane)
            for key in [k for k in self.queue_consumers if k not in wanted]:
                consumer = self.queue_consumers.pop(key)
                self._spawn(consumer.stop())

    def _start_queue_consumer(self, lane: Lane) -> None:
        settings = self.config.queues.get(lane.name)
        if settings is None:
            if lane.key not in self._warned_lanes:
                self._warned_lanes.add(lane.key)
                log.warning(
                    "queue %r holds messages for %s but is no longer in queue_configs; they wait"
                    " until it is configured again",
                    lane.name,
                    lane.function_id,
                )
            return
        delivery = queue_delivery(settings)
        consumer = LaneConsumer(
            self._engine(),
            self.store,
            lane,
            delivery,
            self.queue_slots[lane.name],
            idle_poll_s=self._poll_s(delivery),
        )
        self.queue_consumers[lane.key] = consumer
        consumer.start()

    async def _refresh_loop(self) -> None:
        while not self._stopped:
            await asyncio.sleep(REFRESH_S)
            self._functions_changed()
            for sub in list(self.subscriptions.values()):
                # A failure is logged by the consumer loop, which hits the same store.
                with contextlib.suppress(StoreError):
                    await self.store.subscribe(sub.topic, sub.lane, _order(sub.delivery))

    # --- subscriptions (trigger types) ------------------------------------------------

    def subscribe(self, trigger: Trigger) -> None:
        try:
            cfg = msgspec.json.decode(trigger.config, type=SubscriberConfig)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise IIIError(
                errors.TRIGGER_REGISTRATION_FAILED,
                f"Failed to parse trigger config: {exc} (expected {{topic: string, queue_config?:"
                " object, condition_function_id?: string}})",
            ) from None
        if not cfg.topic:
            raise IIIError(
                errors.TRIGGER_REGISTRATION_FAILED,
                f"{trigger.trigger_type} trigger for {trigger.function_id} has no topic; set config.topic",
            )
        delivery = subscriber_delivery(self.config.queues[DEFAULT_QUEUE], cfg.queue_config)
        lane = Lane("topic", cfg.topic, trigger.namespace, trigger.function_id)
        sub = self.subscriptions.get(lane.key)
        if sub is None:
            consumer = LaneConsumer(
                self._engine(),
                self.store,
                lane,
                delivery,
                Slots(delivery.concurrency),
                condition_function_id=cfg.condition_function_id,
                idle_poll_s=self._poll_s(delivery),
            )
            sub = self.subscriptions[lane.key] = _Subscription(cfg.topic, lane, delivery, consumer)
            consumer.start()
            self._in_order(lane.key, self._persist_subscription(sub))
        sub.triggers.add(trigger.id)
        self.bindings[trigger.id] = (lane.key, trigger)

    async def _persist_subscription(self, sub: _Subscription) -> None:
        backoff = 0.05
        while not self._stopped and self.subscriptions.get(sub.lane.key) is sub:
            try:
                await self.store.subscribe(sub.topic, sub.lane, _order(sub.delivery))
                return
            except StoreError as exc:
                if backoff == 0.05:
                    log.warning("queue: cannot record the subscription to %r (%s); retrying", sub.topic, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def unsubscribe(self, trigger_id: str) -> None:
        bound = self.bindings.pop(trigger_id, None)
        if bound is None:
            return
        key, trigger = bound
        sub = self.subscriptions.get(key)
        if sub is None:
            return
        sub.triggers.discard(trigger_id)
        if sub.triggers:
            return
        del self.subscriptions[key]
        self._spawn(sub.consumer.stop())
        # A worker that disconnected keeps its durable subscription (messages
        # wait for it); an explicit unregister ends it.
        if trigger.owner is None or trigger.owner.open:
            self._in_order(sub.lane.key, self._end_subscription(sub))

    async def _end_subscription(self, sub: _Subscription) -> None:
        try:
            await self.store.unsubscribe(sub.topic, sub.lane)
        except StoreError as exc:
            log.warning("queue: could not end the subscription to %r: %s", sub.topic, exc)

    # --- management ------------------------------------------------------------------

    async def _lanes_of(self, name: str) -> list[Lane]:
        """The lanes a management call's name stands for: a named queue's, else a topic's."""
        kind = "queue" if name in self.config.queues else "topic"
        try:
            return [lane for lane in await self.store.lanes() if lane.kind == kind and lane.name == name]
        except StoreError as exc:
            raise IIIError("queue_store_error", str(exc)) from None

    async def _redrive(self, data: Raw, ctx: CallContext) -> Any:
        ref: QueueRef = decode(data, QueueRef, ctx.function_id)
        name = name_of(ref.queue, ref.topic, code="queue_not_set", what="queue")
        total = 0
        try:
            for lane in await self._lanes_of(name):
                total += await self.store.redrive(lane, None)
        except StoreError as exc:
            raise IIIError("redrive_failed", f"Failed to redrive DLQ for queue '{name}': {exc}") from None
        return {"queue": name, "redriven": total}

    async def _one_message(self, data: Raw, ctx: CallContext, discard: bool) -> Any:
        ref: MessageRef = decode(data, MessageRef, ctx.function_id)
        name = name_of(ref.queue, ref.topic, code="queue_not_set", what="queue")
        if not ref.message_id:
            raise IIIError("message_id_not_set", "message_id is required")
        found = 0
        try:
            for lane in await self._lanes_of(name):
                if discard:
                    found = int(await self.store.discard(lane, ref.message_id))
                else:
                    found = await self.store.redrive(lane, ref.message_id)
                if found:
                    break
        except StoreError as exc:
            code = "discard_message_failed" if discard else "redrive_message_failed"
            raise IIIError(code, f"Failed on DLQ message '{ref.message_id}' of '{name}': {exc}") from None
        out: dict[str, Any] = {"queue": name, "message_id": ref.message_id, "redriven": found}
        if discard:
            out["discarded"] = found
        return out

    async def _redrive_message(self, data: Raw, ctx: CallContext) -> Any:
        return await self._one_message(data, ctx, discard=False)

    async def _discard_message(self, data: Raw, ctx: CallContext) -> Any:
        return await self._one_message(data, ctx, discard=True)

    def _local_consumers(self, topic: str) -> int:
        return sum(len(s.triggers) for s in self.subscriptions.values() if s.topic == topic)

    async def _list_topics(self, data: Raw, ctx: CallContext) -> Any:
        try:
            lanes = await self.store.lanes()
        except StoreError as exc:
            raise IIIError("list_topics_failed", f"Failed to list topics: {exc}") from None
        topics = sorted({lane.name for lane in lanes if lane.kind == "topic"})
        out: list[dict[str, Any]] = [
            {"name": t, "broker_type": self.store.broker_type, "subscriber_count": self._local_consumers(t)}
            for t in topics
        ]
        for name, settings in sorted(self.config.queues.items()):
            out.append(
                {"name": name, "broker_type": "function_queue", "subscriber_count": settings.concurrency}
            )
        return out

    async def _topic_stats(self, data: Raw, ctx: CallContext) -> Any:
        ref: TopicRef = decode(data, TopicRef, ctx.function_id)
        name = name_of(ref.topic, ref.queue, code="topic_required", what="topic")
        depth = dead = 0
        try:
            for lane in await self._lanes_of(name):
                depth += await self.store.depth(lane)
                dead += await self.store.dead_count(lane)
        except StoreError as exc:
            raise IIIError("topic_stats_failed", f"Failed to get topic stats: {exc}") from None
        settings = self.config.queues.get(name)
        return {
            "depth": depth,
            "consumer_count": settings.concurrency if settings is not None else self._local_consumers(name),
            "dlq_depth": dead,
            "config": settings.describe() if settings is not None else None,
        }

    async def _dlq_topics(self, data: Raw, ctx: CallContext) -> Any:
        counts: dict[tuple[str, str], int] = {}
        try:
            for lane in await self.store.lanes():
                kind = "function_queue" if lane.kind == "queue" else self.store.broker_type
                key = (lane.name, kind)
                counts[key] = counts.get(key, 0) + await self.store.dead_count(lane)
        except StoreError as exc:
            raise IIIError("dlq_topics_failed", f"Failed to list DLQ topics: {exc}") from None
        for name in self.config.queues:
            counts.setdefault((name, "function_queue"), 0)
        return [{"topic": n, "broker_type": k, "message_count": c} for (n, k), c in sorted(counts.items())]

    async def _dlq_messages(self, data: Raw, ctx: CallContext) -> Any:
        page: DlqPage = decode(data, DlqPage, ctx.function_id)
        name = name_of(page.topic, page.queue, code="topic_required", what="topic")
        offset, limit = max(page.offset, 0), max(page.limit, 0)
        letters: list[DeadLetter] = []
        try:
            for lane in await self._lanes_of(name):
                letters.extend(await self.store.dead_letters(lane, 0, offset + limit))
        except StoreError as exc:
            raise IIIError("dlq_messages_failed", f"Failed to browse DLQ messages: {exc}") from None
        letters.sort(key=lambda d: d.failed_at, reverse=True)
        return [_dlq_view(letter) for letter in letters[offset : offset + limit]]


def _dlq_view(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as ``engine::queue::dlq_messages`` shows it (the reference's fields, plus ``job``)."""
    job = letter.job
    body = msgspec.json.encode(letter)
    return {
        "id": job.id,
        "payload": job.data,
        "error": letter.error,
        "failed_at": letter.failed_at // 1000,
        "failed_at_ms": letter.failed_at,
        "retries": job.attempts_made,
        "size_bytes": len(body),
        "function_id": job.function_id,
        "job": job,
    }


def _order(delivery: Delivery) -> str | None:
    """How a subscription orders its lane: None (standard), "" (fifo as one line), or a field."""
    return (delivery.group_field or "") if delivery.fifo else None


_UNDECODED = object()


class _SubscriberTriggers(TriggerProvider):
    """``durable:subscriber`` and ``queue`` bindings."""

    def __init__(self, module: QueueModule) -> None:
        self.module = module

    def register(self, trigger: Trigger) -> None:
        self.module.subscribe(trigger)

    def unregister(self, trigger_id: str) -> None:
        self.module.unsubscribe(trigger_id)


__all__: Sequence[str] = ("QueueModule",)
