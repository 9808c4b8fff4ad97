"""The ``state`` trigger type: calls functions when a key changes.

Delivery (in the background, one ordered queue per binding and key) is
:class:`~pyiii.stores.change_triggers.ChangeTriggers`'.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.engine.registry import Trigger
from pyiii.errors import IIIError
from pyiii.stores.change_triggers import ChangeTriggers
from pyiii.stores.events import CREATED, DELETED, EXPIRED, UPDATED

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.state")

__all__ = ["CREATED", "DELETED", "EXPIRED", "UPDATED", "StateTriggers", "encode_event"]


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


class StateTriggers(ChangeTriggers):
    """Bindings of the ``state`` trigger type and their delivery queues."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, "state", log)
        self.enabled = True

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
            self.enqueue(trig, (scope, key), event)
