"""The PubSub module: ``publish {topic, data}`` and the ``subscribe {topic}`` trigger type.

Every binding subscribed to a topic gets each message published to it
once, with ``data`` exactly as published (no envelope). Delivery is
fire-and-forget: ``publish`` answers null once the adapter has taken the
message, subscribers run in the background, nothing is kept, and a
subscriber that fails or is not connected just misses the message (its
failure is logged). Order between messages is not guaranteed.

With the ``redis`` adapter every engine's subscribers get the message,
including the publishing engine's (which hears it back from Redis, so a
local subscriber is not called twice).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.engine.module import Module, TriggerProvider
from pyiii.errors import IIIError
from pyiii.modules.pubsub.adapters.base import PublishFailed, PubSubAdapter

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine
    from pyiii.engine.registry import CallContext, Trigger
    from pyiii.modules.pubsub.config import PubSubConfig

log = logging.getLogger("pyiii.pubsub")

WORKER_NAME = "iii-pubsub"
TRIGGER_TYPE = "subscribe"
TOPIC_NOT_SET = "topic_not_set"  # the reference's code for a missing topic
PUBLISH_ERROR = "PUBLISH_ERROR"
HANDLER_TIMEOUT_S = 60.0
FAILURE_LOG_INTERVAL_S = 10.0  # per binding: a failing subscriber logs at most this often
_NULL = Raw(b"null")


class PublishInput(msgspec.Struct):
    topic: Any = None
    data: Raw = _NULL


class SubscribeConfig(msgspec.Struct):
    topic: Any = None


_publish_decoder = msgspec.json.Decoder(PublishInput)
_config_decoder = msgspec.json.Decoder(SubscribeConfig | None)


def build_adapter(config: PubSubConfig) -> PubSubAdapter:
    """The adapter the config names."""
    if config.adapter == "redis":
        from pyiii.modules.pubsub.adapters.redis import RedisAdapter

        return RedisAdapter(config.redis_url)
    from pyiii.modules.pubsub.adapters.local import LocalAdapter

    return LocalAdapter()


class PubSubModule(Module, TriggerProvider):
    """Topic broadcast to the functions bound with ``subscribe`` triggers."""

    name = WORKER_NAME

    def __init__(self, config: PubSubConfig, adapter: PubSubAdapter | None = None) -> None:
        self.config = config
        self.adapter = adapter or build_adapter(config)
        self.engine: Engine | None = None
        self.topics: dict[str, dict[str, Trigger]] = {}  # topic -> trigger id -> binding
        self._topic_of: dict[str, str] = {}  # trigger id -> topic
        self._failures: dict[str, tuple[float, int]] = {}  # trigger id -> (last logged, unlogged)
        self.delivered = 0  # subscriber calls started (for tests and stats)

    def describe(self) -> str:
        return self.adapter.describe()

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        await self.adapter.open(self._deliver)
        engine.register_builtin(
            "publish",
            self.publish,
            worker_name=WORKER_NAME,
            description="Publish {topic, data} to every subscriber of the topic",
            eager=self.adapter.eager_safe,
        )
        engine.register_trigger_type(
            TRIGGER_TYPE,
            "Call a function for every message published to a topic",
            self,
            worker_name=WORKER_NAME,
        )

    async def stop(self) -> None:
        await self.adapter.close()

    # --- publish ---------------------------------------------------------------

    async def publish(self, data: Raw, ctx: CallContext) -> None:
        try:
            inp = _publish_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for publish: {exc} (expected {{topic: string, data: any}})",
            ) from None
        topic = inp.topic
        if not isinstance(topic, str) or not topic:
            found = "nothing" if topic is None else repr(topic)
            raise IIIError(TOPIC_NOT_SET, f"publish needs 'topic', a non-empty string; found {found}")
        try:
            await self.adapter.publish(topic, bytes(inp.data))
        except PublishFailed as exc:
            raise IIIError(PUBLISH_ERROR, f"Failed to publish to topic {topic!r}: {exc}") from None

    # --- bindings ----------------------------------------------------------------

    def register(self, trigger: Trigger) -> None:
        try:
            cfg = _config_decoder.decode(trigger.config) or SubscribeConfig()
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise IIIError(
                errors.TRIGGER_REGISTRATION_FAILED,
                f"subscribe trigger config must be an object like {{topic: 'orders.shipped'}}: {exc}",
            ) from None
        topic = cfg.topic
        if not isinstance(topic, str) or not topic:
            found = "nothing" if topic is None else repr(topic)
            raise IIIError(
                errors.TRIGGER_REGISTRATION_FAILED,
                f"subscribe trigger needs 'topic', a non-empty string; found {found}",
            )
        bindings = self.topics.get(topic)
        if bindings is None:
            bindings = self.topics[topic] = {}
            self.adapter.subscribe(topic)
        bindings[trigger.id] = trigger
        self._topic_of[trigger.id] = topic

    def unregister(self, trigger_id: str) -> None:
        topic = self._topic_of.pop(trigger_id, None)
        if topic is None:
            return
        self._failures.pop(trigger_id, None)
        bindings = self.topics.get(topic, {})
        bindings.pop(trigger_id, None)
        if not bindings:
            self.topics.pop(topic, None)
            self.adapter.unsubscribe(topic)

    # --- delivery ------------------------------------------------------------------

    def _deliver(self, topic: str, payload: bytes) -> None:
        engine = self.engine
        bindings = self.topics.get(topic)
        if engine is None or not bindings or not engine.accepting:
            return
        raw = Raw(payload)
        for trigger in list(bindings.values()):
            self.delivered += 1
            engine.spawn(self._call(engine, trigger, raw))

    async def _call(self, engine: Engine, trigger: Trigger, data: Raw) -> None:
        try:
            await engine.call_within(
                HANDLER_TIMEOUT_S,
                trigger.function_id,
                data,
                namespace=trigger.namespace,
                metadata=trigger.metadata,
            )
        except IIIError as err:
            self._failed(trigger, str(err))
        except TimeoutError:
            self._failed(trigger, f"no answer within {HANDLER_TIMEOUT_S:g} s")

    def _failed(self, trigger: Trigger, why: str) -> None:
        now = time.monotonic()
        last, unlogged = self._failures.get(trigger.id, (0.0, 0))
        if now - last < FAILURE_LOG_INTERVAL_S:
            self._failures[trigger.id] = (last, unlogged + 1)
            return
        more = f" ({unlogged} more failures since the last report)" if unlogged else ""
        log.warning(
            "subscriber %s of topic %r failed: %s%s",
            trigger.function_id,
            self._topic_of.get(trigger.id, "?"),
            why,
            more,
        )
        self._failures[trigger.id] = (now, 0)

    def stats(self) -> dict[str, int]:
        return {"topics": len(self.topics), "bindings": len(self._topic_of), "delivered": self.delivered}
