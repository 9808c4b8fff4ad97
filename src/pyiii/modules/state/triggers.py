"""The ``state`` trigger type: calls functions when a key changes.

Delivery runs in the background after the write is durable, so a slow or
failing handler never delays a writer. Each binding has its own ordered
queue per key: events of one key reach one binding in write order, and a
slow binding only delays itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.engine.module import TriggerProvider
from pyiii.engine.registry import Trigger
from pyiii.errors import IIIError
from pyiii.stores.events import CREATED, DELETED, EXPIRED, UPDATED

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.state")

__all__ = ["CREATED", "DELETED", "EXPIRED", "UPDATED", "StateTriggers", "encode_event"]

HANDLER_TIMEOUT_S = 60.0


class StateTriggerConfig(msgspec.Struct):
    scope: str | None = None
    key: str | None = None
    condition_function_id: str | None = None


_config_decoder = msgspec.json.Decoder(StateTriggerConfig | None)


def encode_event(event_type: bytes, scope: str, key: str, old: bytes | None, new: bytes | None) -> Raw:
    """The event payload, assembled from stored JSON text without re-encoding it."""
    enc = msgspec.json.encode
    expired = event_type == EXPIRED
    return Raw(
        b"".join(
            (
                b'{"type":"state","event_type":"',
                DELETED if expired else event_type,
                b'","scope":',
                enc(scope),
                b',"key":',
                enc(key),
                b',"old_value":',
                old if old is not None else b"null",
                b',"new_value":',
                new if new is not None else b"null",
                b',"expired":true}' if expired else b"}",
            )
        )
    )


class StateTriggers(TriggerProvider):
    """Bindings of the ``state`` trigger type and their delivery queues."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.enabled = True
        self.bindings: dict[str, Trigger] = {}
        # Keyed by the binding object, not its id: re-registering an id makes a
        # new binding that must not inherit the old one's queue.
        self._queues: dict[tuple[int, str, str], deque[Raw]] = {}

    def register(self, trigger: Trigger) -> None:
        try:
            config = _config_decoder.decode(trigger.config) or StateTriggerConfig()
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise IIIError(
                errors.TRIGGER_REGISTRATION_FAILED,
                f"Failed to parse trigger config: {exc} (expected "
                "{scope?: string, key?: string, condition_function_id?: string})",
            ) from None
        trigger.parsed = config
        self.bindings[trigger.id] = trigger

    def unregister(self, trigger_id: str) -> None:
        self.bindings.pop(trigger_id, None)

    def publish(self, event_type: bytes, scope: str, key: str, old: bytes | None, new: bytes | None) -> None:
        """Queue the event for every matching binding. Never blocks."""
        if not self.enabled or not self.bindings:
            return
        event: Raw | None = None
        for trig in self.bindings.values():
            cfg: StateTriggerConfig = trig.parsed
            if (cfg.scope is not None and cfg.scope != scope) or (cfg.key is not None and cfg.key != key):
                continue
            if event is None:
                event = encode_event(event_type, scope, key, old, new)
            qkey = (id(trig), scope, key)
            queue = self._queues.get(qkey)
            if queue is None:
                queue = self._queues[qkey] = deque()
                queue.append(event)
                self.engine.spawn(self._drain(trig, qkey, queue))
            else:
                queue.append(event)

    async def _drain(self, trig: Trigger, qkey: tuple[int, str, str], queue: deque[Raw]) -> None:
        try:
            while queue:
                await self._deliver(trig, queue[0])
                queue.popleft()
        finally:
            self._queues.pop(qkey, None)

    async def _deliver(self, trig: Trigger, event: Raw) -> None:
        if self.bindings.get(trig.id) is not trig:
            return  # unregistered or replaced since the event was queued
        cfg: StateTriggerConfig = trig.parsed
        try:
            if cfg.condition_function_id is not None:
                verdict = await asyncio.wait_for(
                    self.engine.call(
                        cfg.condition_function_id, event, namespace=trig.namespace, metadata=trig.metadata
                    ),
                    HANDLER_TIMEOUT_S,
                )
                if verdict is not None and bytes(verdict).strip() == b"false":
                    return
            await asyncio.wait_for(
                self.engine.call(trig.function_id, event, namespace=trig.namespace, metadata=trig.metadata),
                HANDLER_TIMEOUT_S,
            )
        except IIIError as err:
            log.warning("state trigger %s -> %s failed: %s", trig.id, trig.function_id, err)
        except TimeoutError:
            log.warning(
                "state trigger %s -> %s gave no answer in %.0f s; moving on",
                trig.id,
                trig.function_id,
                HANDLER_TIMEOUT_S,
            )
        except Exception:
            log.exception("state trigger %s -> %s failed", trig.id, trig.function_id)

    def pending(self) -> int:
        """Events queued and not yet delivered (for tests and stats)."""
        return sum(len(q) for q in self._queues.values())

    def describe(self) -> dict[str, Any]:
        return {"bindings": len(self.bindings), "queued": self.pending()}
