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

plus ``state::transaction``, ``state::get_many`` and ``state::set_many``,
and the operator functions ``state::scopes``, ``state::keys`` and
``state::import`` (``admin.py``).
Preconditions are checked inside the adapter's atomic mutation, so they hold
on every adapter (docs/decisions.md).

The wire inputs and their checks live in ``inputs.py``, the mutations and
result rendering in ``mutations.py``, the list cursor in ``cursors.py``; this
module wires them to the adapter, the triggers and the remote engine.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from pyiii import errors
from pyiii.engine.module import Module
from pyiii.engine.registry import NO_RESULT, CallContext
from pyiii.errors import IIIError
from pyiii.modules.state.admin import StateAdmin
from pyiii.modules.state.cursors import decode_cursor, encode_cursor
from pyiii.modules.state.inputs import (
    CountInput,
    DeleteInput,
    GetInput,
    GetManyInput,
    ListInput,
    SetInput,
    SetManyInput,
    TransactionInput,
    UpdateInput,
    decode_input,
    results_output,
)
from pyiii.modules.state.triggers import CREATED, DELETED, EXPIRED, UPDATED, StateTriggers
from pyiii.stores.base import (
    AdapterError,
    Entry,
    Mutation,
    MutationItem,
    PreconditionFailed,
    StateAdapter,
)
from pyiii.stores.mutations import (
    Render,
    SetFn,
    SetResult,
    UpdateRun,
    delete_fn,
    delete_result,
    events,
    indexed,
    meta,
    meta_fields,
    mismatch,
    pair,
    precondition,
    set_fn,
)
from pyiii.stores.wire import AnyObject, bad_input, check_numbers, pair_output, parse_ops

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine
    from pyiii.modules.state.config import StateConfig


WORKER_NAME = "iii-state"

# Codes of the functions the reference does not have.
TRANSACTION_ERROR = "TRANSACTION_ERROR"


def build_adapter(config: StateConfig) -> StateAdapter:
    """The adapter the config names."""
    if config.adapter == "kv":
        if config.store_method == "file_based":
            from pyiii.stores.sqlite import SqliteAdapter

            return SqliteAdapter(config.file_path)
        from pyiii.stores.memory import MemoryAdapter

        return MemoryAdapter()
    if config.adapter == "redis":
        from pyiii.stores.redis import RedisAdapter

        adapter: StateAdapter = RedisAdapter(config.redis_url)
        return adapter
    if config.adapter == "bridge":
        from pyiii.modules.state.adapters.bridge import BridgeAdapter

        adapter = BridgeAdapter(config.bridge_url)
        return adapter
    raise IIIError(errors.INVALID_ARGUMENTS, f"unknown state adapter {config.adapter!r}")


# The one adapter method each function awaits (for ``StateAdapter.eager_methods``).
_ADAPTER_METHOD = {
    "state::set": "mutate",
    "state::delete": "mutate",
    "state::update": "mutate",
    "state::get": "get",
    "state::get_many": "get_many",
    "state::set_many": "mutate_many",
    "state::transaction": "mutate_many",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class StateModule(Module):
    """Shared scoped key/value state with atomic updates and change triggers."""

    name = WORKER_NAME

    def __init__(self, config: StateConfig, adapter: StateAdapter | None = None) -> None:
        self.config = config
        self.adapter = adapter or build_adapter(config)
        self.max_value_bytes = config.max_value_bytes
        self.triggers: StateTriggers | None = None
        self._local_events = True
        self._found = ""  # what a durable local store held at start, for the start-up log

    @property
    def adapter_label(self) -> str:
        """``kv_in_memory``, ``kv_file_based``, ``redis`` or ``bridge`` (a metrics label)."""
        cfg = self.config
        return f"kv_{cfg.store_method}" if cfg.adapter == "kv" else cfg.adapter

    def describe(self) -> str:
        cfg = self.config
        if cfg.adapter == "kv" and cfg.store_method == "file_based":
            where = os.path.abspath(getattr(self.adapter, "db_path", cfg.file_path))
            return f"kv file_based at {where}{self._found} (every write committed before it is acknowledged)"
        if cfg.adapter == "kv":
            return "kv in_memory (nothing is persisted)"
        if cfg.adapter == "redis":
            return f"redis at {cfg.redis_url}"
        return f"bridge to {cfg.bridge_url}"

    async def start(self, engine: Engine) -> None:
        await self.adapter.open()
        engine.services[self.name] = self  # the console labels state metrics with adapter_label
        if self.config.adapter == "kv" and self.config.store_method == "file_based":
            # Counted from the in-memory mirror (no disk reads); shared stores are not counted.
            scopes = await self.adapter.list_groups()
            keys = sum([await self.adapter.count(scope, "") for scope in scopes])
            self._found = f": {_plural(len(scopes), 'scope')} and {_plural(keys, 'key')} found"
        self.triggers = StateTriggers(engine)
        self.triggers.enabled = self.config.triggers_enabled
        # A shared adapter reports every change itself, ours and other engines'.
        self._local_events = not self.adapter.subscribe(self.triggers.publish)
        # From here on, entries that expire (including any that expired while
        # a durable store was closed) fire state:deleted with "expired": true.
        self.adapter.on_expired(self._expired)
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
            *StateAdmin(self).functions(),
        ]
        for function_id, handler, description in functions:
            eager = self.adapter.eager_safe or (
                not self.adapter.remote and _ADAPTER_METHOD.get(function_id) in self.adapter.eager_methods
            )
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

    # One key's write, with the adapter's failures as the function's errors: on
    # the adapter's memory at once (``_mutate_now``) or waiting for it.

    def _mutate_now(
        self, scope: str, key: str, fn: Mutation, code: str, what: str
    ) -> tuple[Entry | None, Entry | None]:
        try:
            return self.adapter.mutate_now(scope, key, fn)
        except AdapterError as exc:
            raise IIIError(code, f"{what}: {exc}") from None
        except PreconditionFailed as exc:
            raise mismatch(exc) from None

    async def _mutate(
        self, scope: str, key: str, fn: Mutation, code: str, what: str
    ) -> tuple[Entry | None, Entry | None]:
        try:
            return await self.adapter.mutate(scope, key, fn)
        except AdapterError as exc:
            raise IIIError(code, f"{what}: {exc}") from None
        except PreconditionFailed as exc:
            raise mismatch(exc) from None

    # get, set, update and delete return their result at once when the adapter
    # holds the entry in memory (``sync_reads``/``sync_writes``), and a
    # coroutine only when they have to wait: the engine answers either.

    def set(self, data: Raw, ctx: CallContext) -> Raw | Coroutine[Any, Any, Raw]:
        inp: SetInput = decode_input(SetInput, data, ctx.function_id)
        raw = self._set_value(inp.value, inp.data, ctx.function_id)
        adapter = self.adapter
        if adapter.remote:
            return self._set_remote(inp, data)
        fn = SetFn(raw, precondition(inp.scope, inp.key, inp), inp.ttl_ms)
        if not adapter.sync_writes:
            return self._set_wait(inp, raw, fn)
        old, new = self._mutate_now(inp.scope, inp.key, fn, errors.SET_ERROR, "Failed to set value")
        return self._set_done(inp, raw, old, new)

    async def _set_wait(self, inp: SetInput, raw: bytes, fn: Mutation) -> Raw:
        old, new = await self._mutate(inp.scope, inp.key, fn, errors.SET_ERROR, "Failed to set value")
        return self._set_done(inp, raw, old, new)

    def _set_done(self, inp: SetInput, raw: bytes, old: Entry | None, new: Entry | None) -> Raw:
        self._publish(CREATED if old is None else UPDATED, inp.scope, inp.key, old, raw)
        return pair(old, raw, meta_fields(new) if inp.with_meta else b"")

    async def _set_remote(self, inp: SetInput, data: Raw) -> Raw:
        out = await self._forward("state::set", data, errors.SET_ERROR, "Failed to set value")
        return self._relay_pair(out, inp.scope, inp.key, errors.SET_ERROR)

    def _set_value(
        self, value: Raw | UnsetType, alias: Raw | UnsetType, function_id: str, where: str = ""
    ) -> bytes:
        """The value of a set (``value`` or its alias ``data``), checked."""
        if value is not UNSET and alias is not UNSET:
            raise bad_input(
                function_id,
                f"{where}duplicate field `value` (send either `value` or its alias `data`, not both)",
            )
        chosen = value if value is not UNSET else alias
        if chosen is UNSET:
            raise bad_input(function_id, f"{where}missing field `value`")
        raw = bytes(chosen)  # type: ignore[arg-type]
        check_numbers(raw, function_id, f"{where}value")
        limit = self.max_value_bytes
        if limit is not None and len(raw) * 8 > limit:  # see _check_size
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

    def get(self, data: Raw, ctx: CallContext) -> Any:
        inp: GetInput = decode_input(GetInput, data, ctx.function_id)
        adapter = self.adapter
        if not adapter.sync_reads:
            return self._get_wait(inp, data)
        try:
            entry = adapter.get_now(inp.scope, inp.key)
        except AdapterError as exc:
            raise IIIError(errors.GET_ERROR, f"Failed to get value: {exc}") from None
        return _got(inp, entry)

    async def _get_wait(self, inp: GetInput, data: Raw) -> Any:
        if self.adapter.remote:
            out = await self._forward("state::get", data, errors.GET_ERROR, "Failed to get value")
            return NO_RESULT if out is None else Raw(out)
        try:
            entry = await self.adapter.get(inp.scope, inp.key)
        except AdapterError as exc:
            raise IIIError(errors.GET_ERROR, f"Failed to get value: {exc}") from None
        return _got(inp, entry)

    async def delete(self, data: Raw, ctx: CallContext) -> Any:
        inp: DeleteInput = decode_input(DeleteInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::delete", data, errors.DELETE_ERROR, "Failed to delete value")
            if out is None:
                return NO_RESULT
            self._publish(DELETED, inp.scope, inp.key, Entry(out, 0), None)
            return Raw(out)
        fn = delete_fn(precondition(inp.scope, inp.key, inp))
        old, _ = await self._mutate(inp.scope, inp.key, fn, errors.DELETE_ERROR, "Failed to delete value")
        if old is None:
            # Nothing changed, so nothing fires (the reference fires anyway;
            # see docs/decisions.md).
            return NO_RESULT
        self._publish(DELETED, inp.scope, inp.key, old, None)
        return Raw(old.raw)

    def update(self, data: Raw, ctx: CallContext) -> Raw | Coroutine[Any, Any, Raw]:
        inp: UpdateInput = decode_input(UpdateInput, data, ctx.function_id)
        parsed = parse_ops(inp.ops, ctx.function_id)
        adapter = self.adapter
        if adapter.remote:
            return self._update_remote(inp, data)
        run = UpdateRun(parsed, precondition(inp.scope, inp.key, inp), inp.ttl_ms, self.max_value_bytes)
        if not adapter.sync_writes:
            return self._update_wait(inp, run)
        old, new = self._mutate_now(inp.scope, inp.key, run, errors.UPDATE_ERROR, "Failed to update value")
        return self._update_done(inp, run, old, new)

    async def _update_wait(self, inp: UpdateInput, run: UpdateRun) -> Raw:
        old, new = await self._mutate(inp.scope, inp.key, run, errors.UPDATE_ERROR, "Failed to update value")
        return self._update_done(inp, run, old, new)

    def _update_done(self, inp: UpdateInput, run: UpdateRun, old: Entry | None, new: Entry | None) -> Raw:
        self._publish(CREATED if old is None else UPDATED, inp.scope, inp.key, old, run.new_raw)
        extra = run.extra() if run.op_errors else b""
        return pair(old, run.new_raw, extra + meta_fields(new) if inp.with_meta else extra)

    async def _update_remote(self, inp: UpdateInput, data: Raw) -> Raw:
        out = await self._forward("state::update", data, errors.UPDATE_ERROR, "Failed to update value")
        return self._relay_pair(out, inp.scope, inp.key, errors.UPDATE_ERROR)

    async def list(self, data: Raw, ctx: CallContext) -> Raw:
        inp: ListInput = decode_input(ListInput, data, ctx.function_id)
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
        inp: CountInput = decode_input(CountInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::count", data, errors.LIST_ERROR, "Failed to count keys")
            return Raw(out) if out is not None else {"count": 0}
        try:
            n = await self.adapter.count(inp.scope, inp.prefix or "")
        except AdapterError as exc:
            raise IIIError(errors.LIST_ERROR, f"Failed to count keys: {exc}") from None
        return {"count": n}

    async def list_groups(self, data: Raw, ctx: CallContext) -> Any:
        decode_input(AnyObject, data, ctx.function_id)
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
        inp: GetManyInput = decode_input(GetManyInput, data, ctx.function_id)
        if self.adapter.remote:
            out = await self._forward("state::get_many", data, errors.GET_ERROR, "Failed to get values")
            return Raw(out if out is not None else b'{"values":[]}')
        try:
            entries = await self.adapter.get_many(inp.scope, inp.keys)
        except AdapterError as exc:
            raise IIIError(errors.GET_ERROR, f"Failed to get values: {exc}") from None
        if inp.with_meta:
            values = b",".join(meta(e) for e in entries)
        else:
            values = b",".join(b"null" if e is None else e.raw for e in entries)
        return Raw(b'{"values":[' + values + b"]}")

    async def set_many(self, data: Raw, ctx: CallContext) -> Raw:
        inp: SetManyInput = decode_input(SetManyInput, data, ctx.function_id)
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
            items.append((inp.scope, item.key, set_fn(raw, None, ttl)))
        try:
            pairs = await self.adapter.mutate_many(items) if items else []
        except AdapterError as exc:
            raise IIIError(errors.SET_ERROR, f"Failed to set values: {exc}") from None
        self._publish_all([(inp.scope, item.key) for item in inp.items], pairs)
        results = [
            pair(old, raw, meta_fields(new) if inp.with_meta else b"")
            for (old, new), raw in zip(pairs, raws, strict=True)
        ]
        return Raw(b'{"results":[' + b",".join(results) + b"]}")

    async def transaction(self, data: Raw, ctx: CallContext) -> Raw:
        inp: TransactionInput = decode_input(TransactionInput, data, ctx.function_id)
        fid = ctx.function_id
        items: list[MutationItem] = []
        # Per item: how to render its result once the pair is known.
        render: builtins.list[Render] = []
        for i, op in enumerate(inp.ops):
            where = f"ops[{i}]: "
            pre = precondition(op.scope, op.key, op)
            if op.op == "set":
                raw = self._set_value(op.value, op.data, fid, where)
                fn: Mutation = set_fn(raw, pre, op.ttl_ms)
                render.append(SetResult(raw))
            elif op.op == "update":
                if op.ops is UNSET:
                    raise bad_input(fid, f"{where}missing field `ops`")
                run = UpdateRun(parse_ops(op.ops, fid, f"{where}ops"), pre, op.ttl_ms, self.max_value_bytes)
                fn = run
                render.append(run)
            else:
                if op.ttl_ms is not None:
                    raise bad_input(fid, f"{where}ttl_ms is not allowed on a delete")
                fn = delete_fn(pre)
                render.append(delete_result)
            items.append((op.scope, op.key, indexed(i, fn)))
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
            raise mismatch(exc) from None
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
        sent = pair_output.decode(out)
        old_raw = bytes(sent.old_value)
        old = None if old_raw == b"null" else Entry(old_raw, 0)
        self._publish(CREATED if old is None else UPDATED, scope, key, old, bytes(sent.new_value))
        return Raw(out)

    def _relay_results(self, out: bytes | None, keys: builtins.list[tuple[str, str]], code: str) -> Raw:
        """Fire local triggers for a remote set_many/transaction and return its result.

        Through the bridge a stored null and a missing key look the same, so
        the pairs are rebuilt from the JSON texts (version 0).
        """
        if out is None:
            raise IIIError(code, "the remote engine returned no result")
        try:
            results = results_output.decode(out).results
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
        for kind, scope, key, old, new in events(keys, pairs):
            self._publish(kind, scope, key, old, new)

    def _publish(self, event_type: bytes, scope: str, key: str, old: Entry | None, new: bytes | None) -> None:
        triggers = self.triggers
        # No binding, no event: skip the call (publish checks again, for other callers).
        if triggers is not None and triggers.bindings and self._local_events:
            triggers.publish(event_type, scope, key, old.raw if old is not None else None, new)


def _got(inp: GetInput, entry: Entry | None) -> Any:
    """What ``state::get`` answers for ``entry``: the value, its metadata too, or nothing."""
    if inp.with_meta:
        return Raw(meta(entry))
    return NO_RESULT if entry is None else Raw(entry.raw)
