"""The State module: ``state::*`` functions over a pluggable adapter.

Values travel as JSON text end to end: a ``state::set`` stores the bytes it
received, ``state::get`` embeds the stored bytes in its reply. Only
``state::update`` decodes a value, to run the ops on it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from pyiii import errors
from pyiii.engine.registry import NO_RESULT, CallContext
from pyiii.errors import IIIError
from pyiii.modules.base import Module
from pyiii.modules.state import ops
from pyiii.modules.state.adapters.base import KEEP, AdapterError, Entry, StateAdapter
from pyiii.modules.state.triggers import CREATED, DELETED, UPDATED, StateTriggers

if TYPE_CHECKING:
    from pyiii.config import StateConfig
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.state")

WORKER_NAME = "iii-state"


class _KeyInput(msgspec.Struct):
    scope: str
    key: str


class _SetInput(msgspec.Struct):
    scope: str
    key: str
    value: Raw | UnsetType = UNSET
    data: Raw | UnsetType = UNSET


class _UpdateInput(msgspec.Struct):
    scope: str
    key: str
    ops: Raw


class _ScopeInput(msgspec.Struct):
    scope: str


class _AnyObject(msgspec.Struct):
    pass


class _PairOutput(msgspec.Struct):
    """A remote set/update result, as far as local triggers need it."""

    old_value: Raw = Raw(b"null")
    new_value: Raw = Raw(b"null")


_pair_output = msgspec.json.Decoder(_PairOutput)


_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t) for t in (_KeyInput, _SetInput, _UpdateInput, _ScopeInput, _AnyObject)
}


def _decode(cls: type, data: Raw, function_id: str) -> Any:
    try:
        return _decoders[cls].decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise IIIError(
            errors.DESERIALIZATION_ERROR,
            f"Failed to deserialize input for {function_id}: {_serde_style(str(exc))}",
        ) from None


def _serde_style(text: str) -> str:
    # msgspec says "Object missing required field `scope`"; keep it readable.
    return text.replace("Object missing required field", "missing field")


def build_adapter(config: StateConfig) -> StateAdapter:
    """The adapter the config names."""
    if config.adapter == "kv":
        if config.store_method == "file_based":
            from pyiii.modules.state.adapters.sqlite import SqliteAdapter

            return SqliteAdapter(config.file_path)
        from pyiii.modules.state.adapters.memory import MemoryAdapter

        return MemoryAdapter()
    if config.adapter == "redis":
        from pyiii.modules.state.adapters.redis import RedisAdapter

        adapter: StateAdapter = RedisAdapter(config.redis_url)
        return adapter
    if config.adapter == "bridge":
        from pyiii.modules.state.adapters.bridge import BridgeAdapter

        adapter = BridgeAdapter(config.bridge_url)
        return adapter
    raise IIIError(errors.INVALID_ARGUMENTS, f"unknown state adapter {config.adapter!r}")


# An exponent of three digits or more: the only way a JSON number can be
# too large for a double (msgspec keeps big integers exact).
_BIG_EXPONENT = re.compile(rb"[eE][+-]?[0-9]{3}")


def _check_numbers(raw: bytes, function_id: str) -> None:
    """Refuse values with numbers no reader could hold (1e400 reads as Infinity)."""
    if _BIG_EXPONENT.search(raw) is None:
        return
    try:
        msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:
        raise IIIError(
            errors.DESERIALIZATION_ERROR,
            f"Failed to deserialize input for {function_id}: value: {exc} "
            "(a number beyond the double range; send it as a string)",
        ) from None


def _pair(old: Entry | None, new_raw: bytes, extra: bytes = b"") -> Raw:
    return Raw(
        b"".join(
            (
                b'{"old_value":',
                old.raw if old is not None else b"null",
                b',"new_value":',
                new_raw,
                extra,
                b"}",
            )
        )
    )


class StateModule(Module):
    """Shared scoped key/value state with atomic updates and change triggers."""

    name = WORKER_NAME

    def __init__(self, config: StateConfig, adapter: StateAdapter | None = None) -> None:
        self.config = config
        self.adapter = adapter or build_adapter(config)
        self.max_value_bytes = config.max_value_bytes
        self.triggers: StateTriggers | None = None
        self._local_events = True

    def describe(self) -> str:
        cfg = self.config
        if cfg.adapter == "kv" and cfg.store_method == "file_based":
            where = getattr(self.adapter, "db_path", cfg.file_path)
            return f"kv file_based at {where} (every write committed before it is acknowledged)"
        if cfg.adapter == "kv":
            return "kv in_memory (nothing is persisted)"
        if cfg.adapter == "redis":
            return f"redis at {cfg.redis_url}"
        return f"bridge to {cfg.bridge_url}"

    async def start(self, engine: Engine) -> None:
        await self.adapter.open()
        self.triggers = StateTriggers(engine)
        self.triggers.enabled = self.config.triggers_enabled
        # A shared adapter reports every change itself, ours and other engines'.
        self._local_events = not self.adapter.subscribe(self.triggers.publish)
        eager = self.adapter.eager_safe
        for function_id, handler, description in (
            ("state::set", self.set, "Store a value"),
            ("state::get", self.get, "Read a value"),
            ("state::delete", self.delete, "Delete a key"),
            ("state::update", self.update, "Apply update ops atomically"),
            ("state::list", self.list, "Values of a scope"),
            ("state::list_groups", self.list_groups, "Names of all scopes"),
        ):
            engine.register_builtin(
                function_id, handler, worker_name=WORKER_NAME, description=description, eager=eager
            )
        engine.register_trigger_type(
            "state",
            "Fires when a state key is created, updated or deleted",
            self.triggers,
            worker_name=WORKER_NAME,
        )

    async def stop(self) -> None:
        await self.adapter.close()

    # --- functions ----------------------------------------------------------

    async def set(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _SetInput = _decode(_SetInput, data, ctx.function_id)
        if inp.value is not UNSET and inp.data is not UNSET:
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for {ctx.function_id}: duplicate field `value` "
                "(send either `value` or its alias `data`, not both)",
            )
        value = inp.value if inp.value is not UNSET else inp.data
        if value is UNSET:
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for {ctx.function_id}: missing field `value`",
            )
        raw = bytes(value)  # type: ignore[arg-type]
        _check_numbers(raw, ctx.function_id)
        self._check_size(raw)
        if self.adapter.remote:
            out = await self._forward("state::set", data, errors.SET_ERROR, "Failed to set value")
            return self._relay_pair(out, inp.scope, inp.key, errors.SET_ERROR)
        try:
            old, _ = await self.adapter.mutate(inp.scope, inp.key, lambda _old: raw)
        except AdapterError as exc:
            raise IIIError(errors.SET_ERROR, f"Failed to set value: {exc}") from None
        self._publish(CREATED if old is None else UPDATED, inp.scope, inp.key, old, raw)
        return _pair(old, raw)

    def _check_size(self, raw: bytes) -> None:
        limit = self.max_value_bytes
        # The limit is on the compact encoding. The text we received can be
        # longer (whitespace) or shorter: "1E15" is 4 bytes but encodes as
        # 1000000000000000.0, 18. No number token grows more than 8-fold, so
        # texts under limit/8 cannot exceed it and skip the re-encoding.
        if limit is None or len(raw) * 8 <= limit:
            return
        size = len(msgspec.json.encode(msgspec.json.decode(raw)))
        if size > limit:
            raise IIIError(
                errors.VALUE_TOO_LARGE,
                f"value of {size} bytes exceeds the configured max_value_bytes limit of {limit}",
            )

    async def get(self, data: Raw, ctx: CallContext) -> Any:
        inp: _KeyInput = _decode(_KeyInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::get", data, errors.GET_ERROR, "Failed to get value")
            return NO_RESULT if out is None else Raw(out)
        try:
            entry = await self.adapter.get(inp.scope, inp.key)
        except AdapterError as exc:
            raise IIIError(errors.GET_ERROR, f"Failed to get value: {exc}") from None
        return NO_RESULT if entry is None else Raw(entry.raw)

    async def delete(self, data: Raw, ctx: CallContext) -> Any:
        inp: _KeyInput = _decode(_KeyInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::delete", data, errors.DELETE_ERROR, "Failed to delete value")
            if out is None:
                return NO_RESULT
            self._publish(DELETED, inp.scope, inp.key, Entry(out, 0), None)
            return Raw(out)
        try:
            old, _ = await self.adapter.mutate(
                inp.scope, inp.key, lambda cur: None if cur is not None else KEEP
            )
        except AdapterError as exc:
            raise IIIError(errors.DELETE_ERROR, f"Failed to delete value: {exc}") from None
        if old is None:
            # Nothing changed, so nothing fires (the reference fires anyway;
            # see docs/decisions.md).
            return NO_RESULT
        self._publish(DELETED, inp.scope, inp.key, old, None)
        return Raw(old.raw)

    async def update(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _UpdateInput = _decode(_UpdateInput, data, ctx.function_id)
        try:
            parsed = ops.parse_ops(msgspec.json.decode(inp.ops))
        except ops.OpsDecodeError as exc:
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for {ctx.function_id}: ops: {exc.message}",
            ) from None
        except msgspec.ValidationError as exc:  # e.g. 1e400: no double holds it
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for {ctx.function_id}: ops: {exc}",
            ) from None
        if self.adapter.remote:
            out = await self._forward("state::update", data, errors.UPDATE_ERROR, "Failed to update value")
            return self._relay_pair(out, inp.scope, inp.key, errors.UPDATE_ERROR)
        op_errors: list[dict[str, Any]] = []
        new_raw = b""

        def run(current: Entry | None) -> bytes:
            nonlocal op_errors, new_raw
            value = msgspec.json.decode(current.raw) if current is not None else None
            new_value, op_errors = ops.apply_ops(value, current is not None, parsed)
            new_raw = msgspec.json.encode(new_value)
            return new_raw

        try:
            old, _ = await self.adapter.mutate(inp.scope, inp.key, run)
        except AdapterError as exc:
            raise IIIError(errors.UPDATE_ERROR, f"Failed to update value: {exc}") from None
        self._publish(CREATED if old is None else UPDATED, inp.scope, inp.key, old, new_raw)
        extra = b',"errors":' + msgspec.json.encode(op_errors) if op_errors else b""
        return _pair(old, new_raw, extra)

    async def list(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _ScopeInput = _decode(_ScopeInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::list", data, errors.LIST_ERROR, "Failed to list values")
            return Raw(out if out is not None else b"[]")
        try:
            entries = await self.adapter.list(inp.scope)
        except AdapterError as exc:
            raise IIIError(errors.LIST_ERROR, f"Failed to list values: {exc}") from None
        return Raw(b"[" + b",".join(e.raw for e in entries) + b"]")

    async def list_groups(self, data: Raw, ctx: CallContext) -> Any:
        _decode(_AnyObject, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward(
                "state::list_groups", data, errors.LIST_GROUPS_ERROR, "Failed to list groups"
            )
            return Raw(out) if out is not None else {"groups": []}
        try:
            groups = await self.adapter.list_groups()
        except AdapterError as exc:
            raise IIIError(errors.LIST_GROUPS_ERROR, f"Failed to list groups: {exc}") from None
        return {"groups": groups}

    # --- remote adapters (bridge) ----------------------------------------------

    async def _forward(self, function_id: str, data: Raw, code: str, failure: str) -> bytes | None:
        """Run the call on the remote engine; its own State errors pass through."""
        try:
            return await self.adapter.call(function_id, bytes(data))
        except AdapterError as exc:
            raise IIIError(code, f"{failure}: {exc}") from None

    def _relay_pair(self, out: bytes | None, scope: str, key: str, code: str) -> Raw:
        """Fire local triggers for a remote set/update and return its result."""
        if out is None:
            raise IIIError(code, "the remote engine returned no result")
        pair = _pair_output.decode(out)
        old_raw = bytes(pair.old_value)
        old = None if old_raw == b"null" else Entry(old_raw, 0)
        self._publish(CREATED if old is None else UPDATED, scope, key, old, bytes(pair.new_value))
        return Raw(out)

    def _publish(self, event_type: bytes, scope: str, key: str, old: Entry | None, new: bytes | None) -> None:
        if self.triggers is not None and self._local_events:
            self.triggers.publish(event_type, scope, key, old.raw if old is not None else None, new)
