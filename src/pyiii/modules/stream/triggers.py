"""The trigger types ``stream``, ``stream:join`` and ``stream:leave``.

``stream`` bindings hear every change of a stream (optionally of one group
or one item) with the payload clients get. Delivery runs in the background
after the write is durable, with one ordered queue per binding and item
(:class:`~pyiii.stores.change_triggers.ChangeTriggers`, as State's triggers).

``stream:join`` / ``stream:leave`` bindings are called when a client joins
or leaves; a join handler that answers ``{"unauthorized": true}`` refuses it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.engine.module import TriggerProvider
from pyiii.engine.registry import Trigger
from pyiii.errors import IIIError
from pyiii.stores.change_triggers import HANDLER_TIMEOUT_S, ChangeTriggers

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.stream")


class StreamTriggerConfig(msgspec.Struct):
    stream_name: str
    group_id: str | None = None
    item_id: str | None = None
    condition_function_id: str | None = None


_config_decoder = msgspec.json.Decoder(StreamTriggerConfig)


class _JoinResult(msgspec.Struct):
    unauthorized: bool = False


_join_result = msgspec.json.Decoder(_JoinResult)


class StreamTriggers(ChangeTriggers):
    """Bindings of the ``stream`` trigger type and their delivery queues."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, "stream", log)

    def register(self, trigger: Trigger) -> None:
        try:
            config = _config_decoder.decode(trigger.config)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            detail = str(exc).replace("Object missing required field", "missing field")
            raise IIIError(
                errors.TRIGGER_REGISTRATION_FAILED,
                f"Failed to parse stream trigger config: {detail} (expected {{stream_name: string, "
                "group_id?: string, item_id?: string, condition_function_id?: string})",
            ) from None
        trigger.parsed = config
        self.bindings[trigger.id] = trigger

    def publish(self, stream_name: str, group_id: str, item_id: str | None, payload: Raw) -> None:
        """Queue ``payload`` for every matching binding. Never blocks."""
        for trig in self.bindings.values():
            cfg: StreamTriggerConfig = trig.parsed
            if (
                cfg.stream_name != stream_name
                or (cfg.group_id is not None and cfg.group_id != group_id)
                or (cfg.item_id is not None and cfg.item_id != item_id)
            ):
                continue
            self.enqueue(trig, (stream_name, group_id, item_id), payload)


class JoinLeaveTriggers(TriggerProvider):
    """Bindings of ``stream:join`` or ``stream:leave`` (no config)."""

    def __init__(self, engine: Engine, type_id: str) -> None:
        self.engine = engine
        self.type_id = type_id
        self.bindings: dict[str, Trigger] = {}

    def register(self, trigger: Trigger) -> None:
        self.bindings[trigger.id] = trigger

    def unregister(self, trigger_id: str) -> None:
        self.bindings.pop(trigger_id, None)

    async def run(self, data: bytes) -> bool:
        """Call every binding in turn; False when a (join) handler refused."""
        allowed = True
        payload = Raw(data)
        for trig in list(self.bindings.values()):
            try:
                out = await self.engine.call_within(
                    HANDLER_TIMEOUT_S,
                    trig.function_id,
                    payload,
                    namespace=trig.namespace,
                    metadata=trig.metadata,
                )
            except (IIIError, TimeoutError) as err:
                # A failing join handler does not refuse (as in the reference): it says nothing.
                log.warning("%s trigger %s -> %s failed: %s", self.type_id, trig.id, trig.function_id, err)
                continue
            except Exception:
                log.exception("%s trigger %s -> %s failed", self.type_id, trig.id, trig.function_id)
                continue
            if out is None:
                continue
            try:
                if _join_result.decode(out).unauthorized:
                    allowed = False
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass  # any other answer is not a refusal
        return allowed
