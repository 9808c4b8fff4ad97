"""The State module: ``state::*`` functions over a pluggable adapter.

Values travel as JSON text end to end: a ``state::set`` stores the bytes it
received, ``state::get`` embeds the stored bytes in its reply. Only
``state::update`` decodes a value, to run the ops on it.

Beyond the reference's functions (set, get, delete, update, list,
list_groups), every call accepts optional fields that the official SDKs
never send, so their calls behave exactly as before:

* versions and compare-and-set: ``with_meta`` (get/set/update),
  ``expect_version`` and ``expect_exists`` (set/update/delete); a failed
  precondition is ``VERSION_MISMATCH`` with ``current_version``;
* expiry: ``ttl_ms`` (set/update); an expired key fires ``state:deleted``
  with ``"expired": true``;
* listing by key: ``prefix``/``limit``/``cursor``/``with_keys`` on
  ``state::list``, and ``state::count``;

plus ``state::transaction``, ``state::get_many`` and ``state::set_many``.
Preconditions are checked inside the adapter's atomic mutation, so they hold
on every adapter (docs/decisions.md).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

from pyiii import errors
from pyiii.engine.registry import NO_RESULT, CallContext
from pyiii.errors import IIIError
from pyiii.modules.base import Module
from pyiii.modules.state import ops
from pyiii.modules.state.adapters.base import (
    KEEP,
    AdapterError,
    Entry,
    Mutation,
    MutationItem,
    PreconditionFailed,
    Put,
    StateAdapter,
    net_changes,
    now_ms,
)
from pyiii.modules.state.triggers import CREATED, DELETED, EXPIRED, UPDATED, StateTriggers

if TYPE_CHECKING:
    from pyiii.config import StateConfig
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.state")

WORKER_NAME = "iii-state"

# Codes of the functions the reference does not have.
TRANSACTION_ERROR = "TRANSACTION_ERROR"

TtlMs = Annotated[int, Meta(gt=0)]
Limit = Annotated[int, Meta(ge=1)]


class _KeyInput(msgspec.Struct):
    scope: str
    key: str


class _GetInput(msgspec.Struct):
    scope: str
    key: str
    with_meta: bool = False


class _SetInput(msgspec.Struct):
    scope: str
    key: str
    value: Raw | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    expect_version: int | None = None
    expect_exists: bool | None = None
    ttl_ms: TtlMs | None = None
    with_meta: bool = False


class _UpdateInput(msgspec.Struct):
    scope: str
    key: str
    ops: Raw
    expect_version: int | None = None
    expect_exists: bool | None = None
    ttl_ms: TtlMs | None = None
    with_meta: bool = False


class _DeleteInput(msgspec.Struct):
    scope: str
    key: str
    expect_version: int | None = None
    expect_exists: bool | None = None


class _ListInput(msgspec.Struct):
    scope: str
    prefix: str | None = None
    limit: Limit | None = None
    cursor: str | None = None
    with_keys: bool | None = None


class _CountInput(msgspec.Struct):
    scope: str
    prefix: str | None = None


class _GetManyInput(msgspec.Struct):
    scope: str
    keys: list[str]
    with_meta: bool = False


class _SetManyItem(msgspec.Struct):
    key: str
    value: Raw
    ttl_ms: TtlMs | None = None


class _SetManyInput(msgspec.Struct):
    scope: str
    items: list[_SetManyItem]
    ttl_ms: TtlMs | None = None
    with_meta: bool = False


class _TxOp(msgspec.Struct):
    op: Literal["set", "update", "delete"]
    scope: str
    key: str
    value: Raw | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    ops: Raw | UnsetType = UNSET
    expect_version: int | None = None
    expect_exists: bool | None = None
    ttl_ms: TtlMs | None = None


class _TransactionInput(msgspec.Struct):
    ops: list[_TxOp]


class _ScopeInput(msgspec.Struct):
    scope: str


class _AnyObject(msgspec.Struct):
    pass


class _PairOutput(msgspec.Struct):
    """A remote set/update result, as far as local triggers need it."""

    old_value: Raw = Raw(b"null")
    new_value: Raw = Raw(b"null")


class _ResultsOutput(msgspec.Struct):
    """A remote set_many/transaction result, as far as local triggers need it."""

    results: list[_PairOutput]


_pair_output = msgspec.json.Decoder(_PairOutput)
_results_output = msgspec.json.Decoder(_ResultsOutput)


_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t)
    for t in (
        _KeyInput,
        _GetInput,
        _SetInput,
        _UpdateInput,
        _DeleteInput,
        _ListInput,
        _CountInput,
        _GetManyInput,
        _SetManyInput,
        _TransactionInput,
        _ScopeInput,
        _AnyObject,
    )
}


def _decode(cls: type, data: Raw, function_id: str) -> Any:
    try:
        return _decoders[cls].decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _bad_input(function_id, _serde_style(str(exc))) from None


def _bad_input(function_id: str, detail: str) -> IIIError:
    return IIIError(errors.DESERIALIZATION_ERROR, f"Failed to deserialize input for {function_id}: {detail}")


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


def _check_numbers(raw: bytes, function_id: str, where: str = "value") -> None:
    """Refuse values with numbers no reader could hold (1e400 reads as Infinity)."""
    if _BIG_EXPONENT.search(raw) is None:
        return
    try:
        msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:
        raise _bad_input(
            function_id, f"{where}: {exc} (a number beyond the double range; send it as a string)"
        ) from None


def _parse_ops(raw_ops: Raw, function_id: str, where: str = "ops") -> list[ops.Op]:
    try:
        return ops.parse_ops(msgspec.json.decode(raw_ops))
    except ops.OpsDecodeError as exc:
        raise _bad_input(function_id, f"{where}: {exc.message}") from None
    except msgspec.ValidationError as exc:  # e.g. 1e400: no double holds it
        raise _bad_input(function_id, f"{where}: {exc}") from None


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


def _meta_fields(entry: Entry | None) -> bytes:
    """``,"version":N[,"expires_at_ms":T]`` for a written entry."""
    if entry is None:
        return b""
    if entry.expires_at is None:
        return b',"version":%d' % entry.version
    return b',"version":%d,"expires_at_ms":%d' % (entry.version, entry.expires_at)


def _meta(entry: Entry | None) -> bytes:
    """The ``with_meta`` form of a read: exists, value, version, expires_at_ms?"""
    if entry is None:
        return b'{"exists":false,"value":null,"version":null}'
    return b'{"exists":true,"value":' + entry.raw + _meta_fields(entry) + b"}"


# --- preconditions ------------------------------------------------------------


class _Precondition:
    """``expect_version`` / ``expect_exists``, checked against the current entry."""

    __slots__ = ("expect_exists", "expect_version", "key", "scope")

    def __init__(self, scope: str, key: str, expect_version: int | None, expect_exists: bool | None) -> None:
        self.scope, self.key = scope, key
        self.expect_version, self.expect_exists = expect_version, expect_exists

    def check(self, current: Entry | None) -> None:
        """Raise ``PreconditionFailed`` unless ``current`` satisfies every expectation."""
        found = "the key does not exist" if current is None else f"found version {current.version}"
        if self.expect_exists is True and current is None:
            self._fail(f"expected the key to exist, but {found}", current)
        if self.expect_exists is False and current is not None:
            self._fail(f"expected the key not to exist, but {found}", current)
        if self.expect_version is not None and (current is None or current.version != self.expect_version):
            self._fail(f"expected version {self.expect_version}, but {found}", current)

    def _fail(self, what: str, current: Entry | None) -> None:
        raise PreconditionFailed(
            f"state {self.scope!r}/{self.key!r}: {what}; nothing was changed",
            None if current is None else current.version,
        )


def _precondition(scope: str, key: str, inp: Any) -> _Precondition | None:
    if inp.expect_version is None and inp.expect_exists is None:
        return None
    return _Precondition(scope, key, inp.expect_version, inp.expect_exists)


def _mismatch(exc: PreconditionFailed) -> IIIError:
    details: dict[str, Any] = {"current_version": exc.current_version}
    message = exc.message
    if exc.index is not None:
        details = {"index": exc.index, **details}
        message = f"ops[{exc.index}]: {message}"
    return IIIError(errors.VERSION_MISMATCH, message, details=details)


def _with_expiry(raw: bytes, expires_at: int | None) -> bytes:
    return raw if expires_at is None else Put(raw, expires_at)


# --- mutations ------------------------------------------------------------------


def _set_fn(raw: bytes, pre: _Precondition | None, ttl_ms: int | None) -> Mutation:
    if pre is None and ttl_ms is None:
        return lambda _current: raw

    def run(current: Entry | None) -> bytes:
        if pre is not None:
            pre.check(current)
        # A set replaces the entry: without ttl_ms it never expires.
        return raw if ttl_ms is None else Put(raw, now_ms() + ttl_ms)

    return run


def _delete_fn(pre: _Precondition | None) -> Mutation:
    def run(current: Entry | None) -> bytes | None | Any:
        if pre is not None:
            pre.check(current)
        return None if current is not None else KEEP

    return run


class _UpdateRun:
    """The mutation of one update; keeps what its last run produced.

    An optimistic adapter may run it more than once: the fields describe the
    run whose result was stored.
    """

    __slots__ = ("max_bytes", "new_raw", "op_errors", "ops", "pre", "ttl_ms")

    def __init__(
        self,
        parsed: list[ops.Op],
        pre: _Precondition | None,
        ttl_ms: int | None,
        max_bytes: int | None = None,
    ) -> None:
        self.ops, self.pre, self.ttl_ms, self.max_bytes = parsed, pre, ttl_ms, max_bytes
        self.new_raw = b""
        self.op_errors: list[dict[str, Any]] = []

    def __call__(self, current: Entry | None) -> bytes:
        if self.pre is not None:
            self.pre.check(current)
        value = msgspec.json.decode(current.raw) if current is not None else None
        new_value, self.op_errors = ops.apply_ops(value, current is not None, self.ops)
        self.new_raw = msgspec.json.encode(new_value)
        if self.max_bytes is not None and len(self.new_raw) > self.max_bytes:
            # Unlike the reference, the limit holds for updates too: an append
            # loop must not grow a value without bound. Nothing is written.
            raise IIIError(
                errors.VALUE_TOO_LARGE,
                f"the updated value would be {len(self.new_raw)} bytes, over the configured "
                f"max_value_bytes limit of {self.max_bytes}",
            )
        # Without ttl_ms an update keeps the key's expiry (if any).
        if self.ttl_ms is not None:
            return Put(self.new_raw, now_ms() + self.ttl_ms)
        return _with_expiry(self.new_raw, current.expires_at if current is not None else None)

    def extra(self) -> bytes:
        return b',"errors":' + msgspec.json.encode(self.op_errors) if self.op_errors else b""

    def result(self, old: Entry | None, new: Entry | None) -> bytes:
        """The transaction item result: old/new value, errors?, version."""
        return bytes(_pair(old, self.new_raw, self.extra() + _meta_fields(new)))


class _SetResult:
    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def result(self, old: Entry | None, new: Entry | None) -> bytes:
        return bytes(_pair(old, self.raw, _meta_fields(new)))


class _DeleteResult:
    __slots__ = ()

    def result(self, old: Entry | None, new: Entry | None) -> bytes:
        return bytes(_pair(old, b"null"))


_delete_result = _DeleteResult()
_Render = _UpdateRun | _SetResult | _DeleteResult


def _indexed(index: int, fn: Mutation) -> Mutation:
    """``fn``, with the item index attached to a failed precondition."""

    def run(current: Entry | None) -> Any:
        try:
            return fn(current)
        except PreconditionFailed as exc:
            exc.index = index
            raise

    return run


def _events(
    keys: builtins.list[tuple[str, str]], pairs: builtins.list[tuple[Entry | None, Entry | None]]
) -> builtins.list[tuple[bytes, str, str, Entry | None, bytes | None]]:
    """One event per key that changed (see ``net_changes``)."""
    events: builtins.list[tuple[bytes, str, str, Entry | None, bytes | None]] = []
    for scope, key, old, new in net_changes(keys, pairs):
        kind = CREATED if old is None else DELETED if new is None else UPDATED
        events.append((kind, scope, key, old, None if new is None else new.raw))
    return events


# --- cursors --------------------------------------------------------------------

_CURSOR_MARK = "k"


def encode_cursor(key: str) -> str:
    """An opaque cursor: the last key returned (``k`` + base64url, no padding)."""
    text = base64.urlsafe_b64encode(key.encode("utf-8", "surrogatepass")).rstrip(b"=").decode("ascii")
    return _CURSOR_MARK + text


def decode_cursor(cursor: str, function_id: str) -> str:
    try:
        if not cursor.startswith(_CURSOR_MARK):
            raise ValueError(cursor)
        body = cursor[len(_CURSOR_MARK) :]
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        key = data.decode("utf-8", "surrogatepass")
        if encode_cursor(key) != cursor:
            raise ValueError(cursor)
        return key
    except (ValueError, binascii.Error):
        raise _bad_input(function_id, "cursor: not a cursor returned by state::list") from None


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
        # From here on, entries that expire (including any that expired while
        # a durable store was closed) fire state:deleted with "expired": true.
        self.adapter.on_expired(self._expired)
        eager = self.adapter.eager_safe
        functions: list[tuple[str, Callable[[Raw, CallContext], Any], str]] = [
            ("state::set", self.set, "Store a value"),
            ("state::get", self.get, "Read a value"),
            ("state::delete", self.delete, "Delete a key"),
            ("state::update", self.update, "Apply update ops atomically"),
            ("state::list", self.list, "Values of a scope"),
            ("state::list_groups", self.list_groups, "Names of all scopes"),
            ("state::count", self.count, "Number of keys of a scope"),
            ("state::get_many", self.get_many, "Read several keys of a scope"),
            ("state::set_many", self.set_many, "Store several keys of a scope in one commit"),
            ("state::transaction", self.transaction, "Apply several writes atomically"),
        ]
        for function_id, handler, description in functions:
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

    def _expired(self, scope: str, key: str, entry: Entry) -> None:
        self._publish(EXPIRED, scope, key, entry, None)

    # --- functions ----------------------------------------------------------

    async def set(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _SetInput = _decode(_SetInput, data, ctx.function_id)
        raw = self._set_value(inp.value, inp.data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::set", data, errors.SET_ERROR, "Failed to set value")
            return self._relay_pair(out, inp.scope, inp.key, errors.SET_ERROR)
        fn = _set_fn(raw, _precondition(inp.scope, inp.key, inp), inp.ttl_ms)
        try:
            old, new = await self.adapter.mutate(inp.scope, inp.key, fn)
        except AdapterError as exc:
            raise IIIError(errors.SET_ERROR, f"Failed to set value: {exc}") from None
        except PreconditionFailed as exc:
            raise _mismatch(exc) from None
        self._publish(CREATED if old is None else UPDATED, inp.scope, inp.key, old, raw)
        return _pair(old, raw, _meta_fields(new) if inp.with_meta else b"")

    def _set_value(
        self, value: Raw | UnsetType, alias: Raw | UnsetType, function_id: str, where: str = ""
    ) -> bytes:
        """The value of a set (``value`` or its alias ``data``), checked."""
        if value is not UNSET and alias is not UNSET:
            raise _bad_input(
                function_id,
                f"{where}duplicate field `value` (send either `value` or its alias `data`, not both)",
            )
        chosen = value if value is not UNSET else alias
        if chosen is UNSET:
            raise _bad_input(function_id, f"{where}missing field `value`")
        raw = bytes(chosen)  # type: ignore[arg-type]
        _check_numbers(raw, function_id, f"{where}value")
        self._check_size(raw, where)
        return raw

    def _check_size(self, raw: bytes, where: str = "") -> None:
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
                f"{where}value of {size} bytes exceeds the configured max_value_bytes limit of {limit}",
            )

    async def get(self, data: Raw, ctx: CallContext) -> Any:
        inp: _GetInput = _decode(_GetInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::get", data, errors.GET_ERROR, "Failed to get value")
            return NO_RESULT if out is None else Raw(out)
        try:
            entry = await self.adapter.get(inp.scope, inp.key)
        except AdapterError as exc:
            raise IIIError(errors.GET_ERROR, f"Failed to get value: {exc}") from None
        if inp.with_meta:
            return Raw(_meta(entry))
        return NO_RESULT if entry is None else Raw(entry.raw)

    async def delete(self, data: Raw, ctx: CallContext) -> Any:
        inp: _DeleteInput = _decode(_DeleteInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::delete", data, errors.DELETE_ERROR, "Failed to delete value")
            if out is None:
                return NO_RESULT
            self._publish(DELETED, inp.scope, inp.key, Entry(out, 0), None)
            return Raw(out)
        try:
            old, _ = await self.adapter.mutate(
                inp.scope, inp.key, _delete_fn(_precondition(inp.scope, inp.key, inp))
            )
        except AdapterError as exc:
            raise IIIError(errors.DELETE_ERROR, f"Failed to delete value: {exc}") from None
        except PreconditionFailed as exc:
            raise _mismatch(exc) from None
        if old is None:
            # Nothing changed, so nothing fires (the reference fires anyway;
            # see docs/decisions.md).
            return NO_RESULT
        self._publish(DELETED, inp.scope, inp.key, old, None)
        return Raw(old.raw)

    async def update(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _UpdateInput = _decode(_UpdateInput, data, ctx.function_id)
        parsed = _parse_ops(inp.ops, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::update", data, errors.UPDATE_ERROR, "Failed to update value")
            return self._relay_pair(out, inp.scope, inp.key, errors.UPDATE_ERROR)
        run = _UpdateRun(
            parsed, _precondition(inp.scope, inp.key, inp), inp.ttl_ms, self.max_value_bytes
        )
        try:
            old, new = await self.adapter.mutate(inp.scope, inp.key, run)
        except AdapterError as exc:
            raise IIIError(errors.UPDATE_ERROR, f"Failed to update value: {exc}") from None
        except PreconditionFailed as exc:
            raise _mismatch(exc) from None
        self._publish(CREATED if old is None else UPDATED, inp.scope, inp.key, old, run.new_raw)
        return _pair(old, run.new_raw, run.extra() + (_meta_fields(new) if inp.with_meta else b""))

    async def list(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _ListInput = _decode(_ListInput, data, ctx.function_id)
        options = (inp.prefix, inp.limit, inp.cursor, inp.with_keys)
        paged = any(option is not None for option in options)
        after = decode_cursor(inp.cursor, ctx.function_id) if inp.cursor is not None else None
        if self.adapter.remote:
            out = await self._forward("state::list", data, errors.LIST_ERROR, "Failed to list values")
            if out is None:
                return Raw(b'{"items":[],"cursor":null}' if paged else b"[]")
            return Raw(out)
        try:
            if not paged:
                entries = await self.adapter.list(inp.scope)
                return Raw(b"[" + b",".join(e.raw for e in entries) + b"]")
            rows, more = await self.adapter.list_page(inp.scope, inp.prefix or "", after, inp.limit)
        except AdapterError as exc:
            raise IIIError(errors.LIST_ERROR, f"Failed to list values: {exc}") from None
        enc = msgspec.json.encode
        if inp.with_keys:
            items = b",".join(b'{"key":' + enc(key) + b',"value":' + e.raw + b"}" for key, e in rows)
        else:
            items = b",".join(e.raw for _, e in rows)
        cursor = enc(encode_cursor(rows[-1][0])) if more and rows else b"null"
        return Raw(b'{"items":[' + items + b'],"cursor":' + cursor + b"}")

    async def count(self, data: Raw, ctx: CallContext) -> Any:
        inp: _CountInput = _decode(_CountInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::count", data, errors.LIST_ERROR, "Failed to count keys")
            return Raw(out) if out is not None else {"count": 0}
        try:
            n = await self.adapter.count(inp.scope, inp.prefix or "")
        except AdapterError as exc:
            raise IIIError(errors.LIST_ERROR, f"Failed to count keys: {exc}") from None
        return {"count": n}

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

    async def get_many(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _GetManyInput = _decode(_GetManyInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::get_many", data, errors.GET_ERROR, "Failed to get values")
            return Raw(out if out is not None else b'{"values":[]}')
        try:
            entries = await self.adapter.get_many(inp.scope, inp.keys)
        except AdapterError as exc:
            raise IIIError(errors.GET_ERROR, f"Failed to get values: {exc}") from None
        if inp.with_meta:
            values = b",".join(_meta(e) for e in entries)
        else:
            values = b",".join(b"null" if e is None else e.raw for e in entries)
        return Raw(b'{"values":[' + values + b"]}")

    async def set_many(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _SetManyInput = _decode(_SetManyInput, data, ctx.function_id)
        raws = [
            self._set_value(item.value, UNSET, ctx.function_id, f"items[{i}]: ")
            for i, item in enumerate(inp.items)
        ]
        if self.adapter.remote:
            out = await self._forward("state::set_many", data, errors.SET_ERROR, "Failed to set values")
            return self._relay_results(out, [(inp.scope, item.key) for item in inp.items], errors.SET_ERROR)
        items: list[MutationItem] = []
        for item, raw in zip(inp.items, raws, strict=True):
            ttl = item.ttl_ms if item.ttl_ms is not None else inp.ttl_ms
            items.append((inp.scope, item.key, _set_fn(raw, None, ttl)))
        try:
            pairs = await self.adapter.mutate_many(items) if items else []
        except AdapterError as exc:
            raise IIIError(errors.SET_ERROR, f"Failed to set values: {exc}") from None
        self._publish_all([(inp.scope, item.key) for item in inp.items], pairs)
        results = [
            _pair(old, raw, _meta_fields(new) if inp.with_meta else b"")
            for (old, new), raw in zip(pairs, raws, strict=True)
        ]
        return Raw(b'{"results":[' + b",".join(results) + b"]}")

    async def transaction(self, data: Raw, ctx: CallContext) -> Raw:
        inp: _TransactionInput = _decode(_TransactionInput, data, ctx.function_id)
        fid = ctx.function_id
        items: list[MutationItem] = []
        # Per item: how to render its result once the pair is known.
        render: builtins.list[_Render] = []
        for i, op in enumerate(inp.ops):
            where = f"ops[{i}]: "
            pre = _precondition(op.scope, op.key, op)
            if op.op == "set":
                raw = self._set_value(op.value, op.data, fid, where)
                fn: Mutation = _set_fn(raw, pre, op.ttl_ms)
                render.append(_SetResult(raw))
            elif op.op == "update":
                if op.ops is UNSET:
                    raise _bad_input(fid, f"{where}missing field `ops`")
                run = _UpdateRun(
                    _parse_ops(op.ops, fid, f"{where}ops"), pre, op.ttl_ms, self.max_value_bytes
                )
                fn = run
                render.append(run)
            else:
                if op.ttl_ms is not None:
                    raise _bad_input(fid, f"{where}ttl_ms is not allowed on a delete")
                fn = _delete_fn(pre)
                render.append(_delete_result)
            items.append((op.scope, op.key, _indexed(i, fn)))
        keys = [(op.scope, op.key) for op in inp.ops]
        if self.adapter.remote:
            out = await self._forward(
                "state::transaction", data, TRANSACTION_ERROR, "Failed to apply transaction"
            )
            return self._relay_results(out, keys, TRANSACTION_ERROR)
        try:
            pairs = await self.adapter.mutate_many(items) if items else []
        except AdapterError as exc:
            raise IIIError(TRANSACTION_ERROR, f"Failed to apply transaction: {exc}") from None
        except PreconditionFailed as exc:
            raise _mismatch(exc) from None
        self._publish_all(keys, pairs)
        results = [r.result(old, new) for r, (old, new) in zip(render, pairs, strict=True)]
        return Raw(b'{"results":[' + b",".join(results) + b"]}")

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

    def _relay_results(self, out: bytes | None, keys: builtins.list[tuple[str, str]], code: str) -> Raw:
        """Fire local triggers for a remote set_many/transaction and return its result.

        Through the bridge a stored null and a missing key look the same, so
        the pairs are rebuilt from the JSON texts (version 0).
        """
        if out is None:
            raise IIIError(code, "the remote engine returned no result")
        try:
            results = _results_output.decode(out).results
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise IIIError(code, f"the remote engine sent an unexpected result: {exc}") from None
        if len(results) != len(keys):
            raise IIIError(code, "the remote engine sent a result per item count that does not match")
        pairs: builtins.list[tuple[Entry | None, Entry | None]] = []
        for result in results:
            old_raw, new_raw = bytes(result.old_value), bytes(result.new_value)
            old = None if old_raw == b"null" else Entry(old_raw, 0)
            new = None if new_raw == b"null" else Entry(new_raw, 0)
            pairs.append((old, new))
        self._publish_all(keys, pairs)
        return Raw(out)

    def _publish_all(
        self, keys: builtins.list[tuple[str, str]], pairs: builtins.list[tuple[Entry | None, Entry | None]]
    ) -> None:
        for kind, scope, key, old, new in _events(keys, pairs):
            self._publish(kind, scope, key, old, new)

    def _publish(self, event_type: bytes, scope: str, key: str, old: Entry | None, new: bytes | None) -> None:
        if self.triggers is not None and self._local_events:
            self.triggers.publish(event_type, scope, key, old.raw if old is not None else None, new)
