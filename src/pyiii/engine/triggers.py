"""Trigger types and triggers: the engine's binding registry.

Holds ``TriggerRegistry``: the tables of trigger types (built-in providers
and worker-provided ones) and of triggers (bindings of a function to a
type), the handling of ``registertriggertype`` / ``registertrigger`` /
``unregistertrigger`` / ``triggerregistrationresult`` frames, and the
parking of bindings whose type is unknown (or was lost with its provider)
until the type is registered again, when they are replayed.

It lives apart from ``engine.py`` because binding bookkeeping is its own
concern: it never routes invocations or touches pending calls, it only
talks to connections through ``send``. The ``Engine`` owns one instance,
points ``Engine.triggers`` / ``Engine.trigger_types`` at its dicts, and
dispatches the trigger frames to it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from msgspec import UNSET, Raw

from pyiii import errors, protocol
from pyiii.engine.connection import Connection
from pyiii.engine.module import TriggerProvider
from pyiii.engine.registry import Trigger, TriggerType
from pyiii.errors import IIIError
from pyiii.protocol import (
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from pyiii.trigger_providers import missing_type_hint

log = logging.getLogger("pyiii.engine")

DEFAULT_NS = "default"  # namespace when a frame names none (re-exported by engine.py)


class TriggerRegistry:
    """Trigger types, triggers, and the parking/replay of bindings."""

    def __init__(self) -> None:
        self.trigger_types: dict[str, TriggerType] = {}
        self.triggers: dict[str, Trigger] = {}
        # (type, function id) already warned about as unfireable; a type's
        # entries go when it is registered. Keeps a replay on reconnect quiet.
        self._warned: set[tuple[str, str]] = set()

    def register_trigger_type(
        self, type_id: str, description: str, provider: TriggerProvider, *, worker_name: str
    ) -> None:
        """Expose a built-in trigger type and activate bindings parked for it."""
        self.trigger_types[type_id] = TriggerType(
            id=type_id, description=description, builtin=provider, worker_name=worker_name
        )
        self._forget_warnings(type_id)
        for trig in list(self.triggers.values()):
            if trig.trigger_type == type_id and not trig.active:
                self._activate(trig)

    def on_register_trigger_type(self, conn: Connection, msg: RegisterTriggerType, frame: bytes) -> None:
        previous = self.trigger_types.get(msg.id)
        if previous is not None and previous.builtin is not None:
            log.warning("worker %s tried to replace built-in trigger type %s", conn.name, msg.id)
            return
        if previous is not None and previous.provider is not None:
            previous.provider.trigger_types.discard(msg.id)
        self.trigger_types[msg.id] = TriggerType(id=msg.id, description=msg.description or "", provider=conn)
        self._forget_warnings(msg.id)
        conn.trigger_types.add(msg.id)
        for trig in list(self.triggers.values()):
            if trig.trigger_type == msg.id:
                trig.active = False
                self._activate(trig)

    def on_register_trigger(self, conn: Connection, msg: RegisterTrigger, frame: bytes) -> None:
        ns = msg.namespace if isinstance(msg.namespace, str) else DEFAULT_NS
        if not ns.strip() or (isinstance(msg.trigger_namespace, str) and not msg.trigger_namespace.strip()):
            self._trigger_error(
                conn,
                msg.id,
                msg.trigger_type,
                msg.function_id,
                IIIError(errors.INVALID_NAMESPACE, "namespace must not be blank"),
            )
            return
        if msg.id in self.triggers:
            self._remove_trigger(msg.id)
        trig = Trigger(
            id=msg.id,
            trigger_type=msg.trigger_type,
            function_id=msg.function_id,
            config=msg.config,
            metadata=msg.metadata,
            namespace=ns,
            owner=conn,
        )
        self.triggers[msg.id] = trig
        conn.triggers.add(msg.id)
        self._activate(trig)

    def add_trigger(
        self, trigger_type: str, function_id: str, config: Any, *, metadata: Any = None
    ) -> Trigger:
        """Create an engine-owned binding (``engine::register_trigger``)."""
        trig = Trigger(
            id=str(uuid.uuid4()),
            trigger_type=trigger_type,
            function_id=function_id,
            config=Raw(protocol.encode(config)),
            metadata=Raw(protocol.encode(metadata)) if metadata is not None else UNSET,
        )
        self.triggers[trig.id] = trig
        err = self._activate(trig)
        if err is not None:
            del self.triggers[trig.id]
            raise err
        return trig

    def _activate(self, trig: Trigger) -> IIIError | None:
        """Hand a binding to its provider; park it when the type is unknown."""
        tt = self.trigger_types.get(trig.trigger_type)
        if tt is None:
            self._warn_parked(trig)
            return None  # parked until someone registers the type
        if tt.builtin is not None:
            try:
                tt.builtin.register(trig)
            except IIIError as err:
                self.triggers.pop(trig.id, None)
                if trig.owner is not None:
                    trig.owner.triggers.discard(trig.id)
                    self._trigger_error(trig.owner, trig.id, trig.trigger_type, trig.function_id, err)
                return err
            trig.active = True
            return None
        assert tt.provider is not None
        tt.provider.send(
            protocol.encode(
                RegisterTrigger(
                    id=trig.id,
                    trigger_type=tt.wire_id or trig.trigger_type,
                    function_id=trig.function_id,
                    config=trig.config,
                    metadata=trig.metadata,
                    namespace=trig.namespace if trig.namespace != DEFAULT_NS else UNSET,
                )
            )
        )
        trig.active = True
        return None

    def _warn_parked(self, trig: Trigger) -> None:
        key = (trig.trigger_type, trig.function_id)
        if key in self._warned:
            return
        self._warned.add(key)
        owner = f"worker {trig.owner.name!r}" if trig.owner is not None else "the engine"
        log.warning(
            "trigger %s for %s (from %s) will not fire: no module or worker provides trigger type %r; %s",
            trig.id,
            trig.function_id,
            owner,
            trig.trigger_type,
            missing_type_hint(trig.trigger_type),
        )

    def _forget_warnings(self, type_id: str) -> None:
        self._warned = {key for key in self._warned if key[0] != type_id}

    def drop_connection(self, conn: Connection) -> None:
        """Remove the bindings ``conn`` owned; park those on types it provided."""
        for trigger_id in list(conn.triggers):
            self._remove_trigger(trigger_id)
        for type_id in conn.trigger_types:
            tt = self.trigger_types.get(type_id)
            if tt is not None and tt.provider is conn:
                del self.trigger_types[type_id]
                for trig in self.triggers.values():
                    if trig.trigger_type == type_id:
                        trig.active = False
        conn.trigger_types.clear()

    def on_unregister_trigger(self, conn: Connection, msg: UnregisterTrigger, frame: bytes) -> None:
        self._remove_trigger(msg.id)

    def remove_trigger(self, trigger_id: str) -> bool:
        """Remove any binding by id; True if it existed."""
        return self._remove_trigger(trigger_id)

    def _remove_trigger(self, trigger_id: str) -> bool:
        trig = self.triggers.pop(trigger_id, None)
        if trig is None:
            return False
        if trig.owner is not None:
            trig.owner.triggers.discard(trigger_id)
        tt = self.trigger_types.get(trig.trigger_type)
        if tt is not None and trig.active:
            if tt.builtin is not None:
                tt.builtin.unregister(trigger_id)
            elif tt.provider is not None and tt.provider.open:
                tt.provider.send(
                    protocol.encode(
                        UnregisterTrigger(id=trigger_id, trigger_type=tt.wire_id or trig.trigger_type)
                    )
                )
        return True

    def on_trigger_registration_result(
        self, conn: Connection, msg: TriggerRegistrationResult, frame: bytes
    ) -> None:
        if msg.error is UNSET or protocol.raw_is_null(msg.error):
            return
        trig = self.triggers.get(msg.id)
        if trig is None:
            return
        trig.active = False  # parked: replayed if the type is registered again
        if trig.owner is not None and trig.owner.open:
            trig.owner.send(frame)

    @staticmethod
    def _trigger_error(
        conn: Connection, trigger_id: str, trigger_type: str, function_id: str, err: IIIError
    ) -> None:
        conn.send(
            protocol.encode(
                TriggerRegistrationResult(
                    id=trigger_id,
                    trigger_type=trigger_type,
                    function_id=function_id,
                    error=Raw(protocol.encode(err.to_body())),
                )
            )
        )
