"""The Streams module: ``stream::*`` functions over a store, and the client port.

A stream item is stored data with a different address (see ``inputs``):
writes go through the same adapters and mutations as State (atomic update
ops, durable commits on ``file_based``, versions, Redis transactions), and
every committed change becomes one event, delivered to the subscribed
clients and to the ``stream`` triggers of this engine.

On ``kv`` the module delivers its own writes. On ``redis`` the adapter
reports every change of every engine on the shared server (in commit order
per group), so a client joined on engine B hears a write made through A,
and ``stream::send`` events travel the same channel without being stored.

A function a worker registers as ``stream::get(<name>)`` (likewise ``set``,
``delete``, ``list``, ``list_groups``, ``update``) serves that stream
instead of the store; the changes it reports are delivered as if stored.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from pyiii.engine.module import Module
from pyiii.engine.registry import NO_RESULT, CallContext
from pyiii.engine.transport import TransportOptions, close_all
from pyiii.errors import ConfigError, IIIError
from pyiii.modules.stream import clients
from pyiii.modules.stream.bridge import StreamBridge
from pyiii.modules.stream.inputs import (
    GroupInput,
    ItemInput,
    SendInput,
    SetInput,
    StreamInput,
    UpdateInput,
    decode_input,
    old_output,
    scope_of,
    split_scope,
    stream_prefix,
)
from pyiii.modules.stream.triggers import JoinLeaveTriggers, StreamTriggers
from pyiii.stores.base import AdapterError, Entry, StateAdapter
from pyiii.stores.events import CREATED, DELETED, EXPIRED, UPDATED
from pyiii.stores.mutations import UpdateRun, delete_fn, pair, set_fn
from pyiii.stores.wire import AnyObject, bad_input, check_numbers, pair_output, parse_ops

if TYPE_CHECKING:
    from picows import WSTransport

    from pyiii.engine.engine import Engine
    from pyiii.modules.stream.config import StreamConfig

log = logging.getLogger("pyiii.stream")

WORKER_NAME = "iii-stream"
DEFAULT_NS = "default"
# The kind of an event that is delivered but not stored (stream::send).
SENT = b"stream:event"

SET_ERROR = "STREAM_SET_ERROR"
GET_ERROR = "STREAM_GET_ERROR"
DELETE_ERROR = "STREAM_DELETE_ERROR"
UPDATE_ERROR = "STREAM_UPDATE_ERROR"
LIST_ERROR = "STREAM_GET_GROUP_ERROR"
LIST_GROUPS_ERROR = "STREAM_LIST_GROUPS_ERROR"
LIST_ALL_ERROR = "STREAM_LIST_ALL_ERROR"
SEND_ERROR = "STREAM_SEND_ERROR"
OVERRIDE_ERROR = "JSON_ERROR"


class _Sent(msgspec.Struct):
    type: str
    data: Raw
    id: str | None = None


_sent = msgspec.json.Decoder(_Sent)
_enc = msgspec.json.encode


def build_adapter(config: StreamConfig) -> StateAdapter | None:
    """The store the config names (one of the shared State adapters; None for the bridge)."""
    if config.adapter == "bridge":
        return None
    if config.adapter == "redis":
        from pyiii.modules.stream.config import REDIS_PREFIX
        from pyiii.stores.redis import RedisAdapter

        return RedisAdapter(config.redis_url, prefix=REDIS_PREFIX)
    if config.store_method == "file_based":
        from pyiii.stores.sqlite import SqliteAdapter

        # A directory (the reference's file_path) may hold State's file too.
        return SqliteAdapter(config.file_path, file_name="pyiii-stream.sqlite3")
    from pyiii.stores.memory import MemoryAdapter

    return MemoryAdapter()


def _event(kind: bytes, data: bytes) -> bytes:
    return b'{"type":"' + kind + b'","data":' + data + b"}"


class _NoStore(StateAdapter):
    """The store of a bridged module: never reached (calls are forwarded first)."""

    async def get(self, scope: str, key: str) -> Entry | None:
        raise AdapterError("a bridged stream module has no store")

    async def mutate(self, scope: str, key: str, fn: Any) -> tuple[Entry | None, Entry | None]:
        raise AdapterError("a bridged stream module has no store")

    async def list(self, scope: str) -> builtins.list[Entry]:
        raise AdapterError("a bridged stream module has no store")

    async def list_groups(self, prefix: str = "") -> builtins.list[str]:
        raise AdapterError("a bridged stream module has no store")


class _FrameHead(msgspec.Struct):
    streamName: str
    groupId: str
    id: str | None = None


_frame_head = msgspec.json.Decoder(_FrameHead)


class StreamModule(Module):
    """Stored items clients watch: functions, triggers and the client WebSocket."""

    name = WORKER_NAME

    def __init__(self, config: StreamConfig, adapter: StateAdapter | None = None) -> None:
        self.config = config
        store = adapter or build_adapter(config)
        self.bridge = StreamBridge(config.bridge_url) if store is None else None
        # A bridged module has no store of its own: every call goes through self.bridge first.
        self.adapter: StateAdapter = store if store is not None else _NoStore()
        self.hub = clients.Hub()
        self.live: set[WSTransport] = set()
        self.server: Any = None
        self.engine: Engine | None = None
        self.triggers: StreamTriggers | None = None
        self.joins: JoinLeaveTriggers | None = None
        self.leaves: JoinLeaveTriggers | None = None
        self._shared = False  # the adapter reports every change itself

    @property
    def port(self) -> int:
        """The port the client listener is bound to (the real one when configured with 0)."""
        if self.server is None:
            raise RuntimeError("iii-stream is not started")
        return int(self.server.sockets[0].getsockname()[1])

    def describe(self) -> str:
        cfg = self.config
        if cfg.adapter == "bridge":
            store = f"bridge to {cfg.bridge_url}"
        elif cfg.adapter == "redis":
            store = f"redis at {cfg.redis_url}"
        elif cfg.store_method == "file_based":
            store = f"kv file_based at {os.path.abspath(getattr(self.adapter, 'db_path', cfg.file_path))}"
        else:
            store = "kv in_memory (nothing is persisted)"
        where = f"ws://{cfg.host}:{self.port if self.server is not None else cfg.port}"
        return f"{store}; clients on {where}"

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        if self.bridge is not None:
            await self.bridge.open(self._bridged)
        else:
            await self.adapter.open()
        engine.services[self.name] = self  # the console's Streams page follows groups through watch()
        self.triggers = StreamTriggers(engine)
        self.joins = JoinLeaveTriggers(engine, "stream:join")
        self.leaves = JoinLeaveTriggers(engine, "stream:leave")
        self._shared = self.adapter.subscribe(self._changed)
        # Changes committed while a shared store's feed was down never reached our clients.
        self.adapter.on_resumed(self._resumed)
        functions: list[tuple[str, Callable[[Raw, CallContext], Any], str]] = [
            ("stream::set", self.set, "Set a value in a stream"),
            ("stream::get", self.get, "Get a value from a stream"),
            ("stream::delete", self.delete, "Delete a value from a stream"),
            ("stream::update", self.update, "Atomically update a stream value with update ops"),
            ("stream::list", self.list, "List all items in a stream group"),
            ("stream::list_groups", self.list_groups, "List all groups in a stream"),
            ("stream::list_all", self.list_all, "List all streams with their groups"),
            ("stream::send", self.send, "Send an event to a group's subscribers without storing it"),
        ]
        for function_id, handler, description in functions:
            engine.register_builtin(function_id, handler, worker_name=WORKER_NAME, description=description)
        engine.register_trigger_type(
            "stream", "Fires when a stream item changes", self.triggers, worker_name=WORKER_NAME
        )
        engine.register_trigger_type(
            "stream:join", "Fires when a client joins a stream", self.joins, worker_name=WORKER_NAME
        )
        engine.register_trigger_type(
            "stream:leave", "Fires when a client leaves a stream", self.leaves, worker_name=WORKER_NAME
        )
        services = clients.Services(
            engine=engine,
            hub=self.hub,
            read=self._read,
            on_join=self.joins.run,
            on_leave=self.leaves.run,
            auth_function=self.config.auth_function,
            max_send_buffer_bytes=self.config.max_send_buffer_bytes,
            options=TransportOptions(),
            live=self.live,
        )
        try:
            self.server = await clients.serve(services, self.config.host, self.config.port)
        except OSError as exc:
            await self._close_store()
            raise ConfigError(
                f"iii-stream: cannot listen on {self.config.host}:{self.config.port}"
                f" ({exc.strerror or exc}); "
                "choose another port in the iii-stream config (port: ...)"
            ) from None

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await close_all(self.live, 1001, "the engine is shutting down", timeout=1.0)
        await self._close_store()

    async def _close_store(self) -> None:
        if self.bridge is not None:
            await self.bridge.close()
        else:
            await self.adapter.close()

    # --- events -------------------------------------------------------------------

    def _changed(self, kind: bytes, scope: str, key: str, old: bytes | None, new: bytes | None) -> None:
        """One committed change (or sent event) of the store: to clients and triggers."""
        names = split_scope(scope)
        if names is None:
            return
        stream_name, group_id = names
        item_id: str | None = key
        if kind == SENT:
            if new is None:
                return
            try:
                sent = _sent.decode(new)
            except (msgspec.ValidationError, msgspec.DecodeError):
                log.warning("ignoring an undecodable stream event on %r", scope)
                return
            item_id = sent.id
            event = b'{"type":"event","event":{"type":' + _enc(sent.type) + b',"data":' + sent.data + b"}}"
        elif kind == CREATED:
            event = _event(b"create", new or b"null")
        elif kind == UPDATED:
            event = _event(b"update", new or b"null")
        elif kind in (DELETED, EXPIRED):
            event = _event(b"delete", old or b"null")
        else:
            return
        self._deliver(stream_name, group_id, item_id, clients.frame(stream_name, group_id, item_id, event))

    def _deliver(self, stream_name: str, group_id: str, item_id: str | None, data: bytes) -> None:
        self.hub.broadcast(stream_name, group_id, item_id, data)
        if self.triggers is not None and self.triggers.bindings:
            self.triggers.publish(stream_name, group_id, item_id, Raw(data))

    def _bridged(self, data: bytes) -> None:
        """The frame of a change some bridged engine made, from the backend's topic."""
        try:
            head = _frame_head.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("ignoring an undecodable stream event from the bridge: %.200r", data)
            return
        self._deliver(head.streamName, head.groupId, head.id, data)

    async def _forward(self, function_id: str, data: Raw, code: str, failure: str) -> bytes | None:
        assert self.bridge is not None
        try:
            return await self.bridge.call(function_id, bytes(data))
        except AdapterError as exc:
            raise IIIError(code, f"{failure}: {exc}") from None

    async def _share(self, stream_name: str, group_id: str, item_id: str | None, event: bytes) -> None:
        """A change made through the bridge: to every engine bridged to the backend."""
        assert self.bridge is not None
        data = clients.frame(stream_name, group_id, item_id, event)
        try:
            await self.bridge.publish(data)
        except (AdapterError, IIIError) as exc:
            log.warning("stream change not shared through the bridge (%s); delivered here only", exc)
            self._deliver(stream_name, group_id, item_id, data)

    async def _share_pair(self, out: bytes | None, inp: Any, code: str) -> Raw:
        if out is None:
            raise IIIError(code, f"the engine at {self.config.bridge_url} returned no result")
        old_raw, new_raw = self._pair_of(Raw(out), "the bridged engine", code)
        kind = b"create" if old_raw is None else b"update"
        await self._share(inp.stream_name, inp.group_id, inp.item_id, _event(kind, new_raw))
        return Raw(out)

    async def _emit_override(
        self, kind: bytes, scope: str, key: str, old: bytes | None, new: bytes | None
    ) -> None:
        """A change a function serving the stream made: the store never saw it."""
        if self._shared:
            try:
                if await self.adapter.publish(kind, scope, key, old, new):
                    return
            except AdapterError as exc:
                log.warning("stream change of %r not shared with other engines: %s", scope, exc)
        self._changed(kind, scope, key, old, new)

    def _resumed(self) -> None:
        assert self.engine is not None
        self.engine.spawn(self._resync())

    async def _resync(self) -> None:
        """Send every subscription a fresh ``sync`` (after the store's feed was lost)."""
        subs = [sub for subs in self.hub.groups.values() for sub in subs if sub.held is None]
        log.warning("stream: change feed restored; sending %d subscription(s) a fresh sync", len(subs))
        for sub in subs:
            watcher = sub.client if isinstance(sub.client, _Watcher) else None
            try:
                if watcher is not None:  # the console: a view that names the items, as watch() gives
                    event = await self._read_named(sub.stream_name, sub.group_id, watcher.limit)
                else:
                    current = await self._read(sub.stream_name, sub.group_id, sub.item_id)
                    event = b'{"type":"sync","data":' + current + b"}"
            except IIIError as err:
                log.warning("stream: no fresh sync for %s: %s", sub.subscription_id or "a watcher", err)
                continue
            sub.client.send(clients.frame(sub.stream_name, sub.group_id, sub.item_id, event))

    # --- reads for a client's sync ----------------------------------------------------

    async def _read(self, stream_name: str, group_id: str, item_id: str | None) -> bytes:
        if item_id is not None:
            payload = Raw(_enc({"stream_name": stream_name, "group_id": group_id, "item_id": item_id}))
            out = await self.get(payload, CallContext(caller=None, function_id="stream::get"))
            return b"null" if out is NO_RESULT else bytes(out)
        payload = Raw(_enc({"stream_name": stream_name, "group_id": group_id}))
        return bytes(await self.list(payload, CallContext(caller=None, function_id="stream::list")))

    # --- an in-process watcher (the console) ------------------------------------------

    async def watch(
        self, stream_name: str, group_id: str, send: Callable[[bytes], None], limit: int
    ) -> Callable[[], None]:
        """Follow one group from inside the engine; returns the function that stops it.

        ``send`` gets what a joined client gets, in the same order: first a
        ``sync`` frame, then one frame per change. This sync also names the
        items: ``{"type": "sync", "data": [values], "ids": [ids], "more": bool}``
        (at most ``limit`` items; an id is null where the store cannot tell
        it, as for a stream a worker serves). Not a client join: neither the
        ``auth_function`` nor the ``stream:join`` triggers run (the caller
        checks who may watch). Store errors raise IIIError, nothing follows.
        """
        sub = clients.Subscription(_Watcher(send, limit), "", stream_name, group_id, None)
        self.hub.add(sub)
        try:
            items = await self._read_named(stream_name, group_id, limit)
        except BaseException:
            self.hub.remove(sub)
            raise
        held, sub.held = sub.held, None
        send(clients.frame(stream_name, group_id, None, items))
        for data in held or ():
            send(data)
        return lambda: self.hub.remove(sub)

    async def _read_named(self, stream_name: str, group_id: str, limit: int) -> bytes:
        """A group's items with their ids: the watcher's ``sync`` event."""
        if self.bridge is None and self._override("list", stream_name) is None:
            try:
                pairs, more = await self.adapter.list_page(scope_of(stream_name, group_id), "", None, limit)
            except AdapterError as exc:
                raise IIIError(LIST_ERROR, f"Failed to get group: {exc}") from None
            return b"".join(
                (
                    b'{"type":"sync","data":[',
                    b",".join(entry.raw for _, entry in pairs),
                    b'],"ids":',
                    _enc([key for key, _ in pairs]),
                    b',"more":true}' if more else b',"more":false}',
                )
            )
        # Served elsewhere: only values come back; an item's own "id" field names it if it has one.
        values = msgspec.json.decode(await self._read(stream_name, group_id, None))
        values = values if isinstance(values, builtins.list) else []
        ids = [v.get("id") if isinstance(v, dict) and isinstance(v.get("id"), str) else None for v in values]
        body = {"type": "sync", "data": values[:limit], "ids": ids[:limit], "more": len(values) > limit}
        return _enc(body)

    # --- functions --------------------------------------------------------------------

    def _override(self, op: str, stream_name: str) -> str | None:
        assert self.engine is not None
        function_id = f"stream::{op}({stream_name})"
        return function_id if (DEFAULT_NS, function_id) in self.engine.functions else None

    async def _call_override(self, function_id: str, data: Raw) -> Raw | None:
        assert self.engine is not None
        return await self.engine.call(function_id, data)

    def _pair_of(self, out: Raw | None, function_id: str, code: str) -> tuple[bytes | None, bytes]:
        if out is None:
            raise IIIError(code, f"{function_id} returned no result (expected {{old_value, new_value}})")
        try:
            got = pair_output.decode(out)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise IIIError(OVERRIDE_ERROR, f"Failed to convert result of {function_id}: {exc}") from None
        old = bytes(got.old_value)
        return (None if old == b"null" else old), bytes(got.new_value)

    async def set(self, data: Raw, ctx: CallContext) -> Raw:
        inp: SetInput = decode_input(SetInput, data, ctx.function_id)
        raw = bytes(inp.data)
        check_numbers(raw, ctx.function_id, "data")
        scope = scope_of(inp.stream_name, inp.group_id)
        override = self._override("set", inp.stream_name)
        if override is not None:
            old_raw, new_raw = self._pair_of(await self._call_override(override, data), override, SET_ERROR)
            kind = CREATED if old_raw is None else UPDATED
            await self._emit_override(kind, scope, inp.item_id, old_raw, new_raw)
            return pair(None if old_raw is None else Entry(old_raw, 0), new_raw)
        if self.bridge is not None:
            out = await self._forward("stream::set", data, SET_ERROR, "Failed to set value")
            return await self._share_pair(out, inp, SET_ERROR)
        try:
            old, _ = await self.adapter.mutate(scope, inp.item_id, set_fn(raw, None, None))
        except AdapterError as exc:
            raise IIIError(SET_ERROR, f"Failed to set value: {exc}") from None
        if not self._shared:
            self._changed(
                CREATED if old is None else UPDATED, scope, inp.item_id, old.raw if old else None, raw
            )
        return pair(old, raw)

    async def get(self, data: Raw, ctx: CallContext) -> Any:
        inp: ItemInput = decode_input(ItemInput, data, ctx.function_id)
        override = self._override("get", inp.stream_name)
        if override is not None:
            out = await self._call_override(override, data)
            return NO_RESULT if out is None else out
        if self.bridge is not None:
            got = await self._forward("stream::get", data, GET_ERROR, "Failed to get value")
            return NO_RESULT if got is None else Raw(got)
        try:
            entry = await self.adapter.get(scope_of(inp.stream_name, inp.group_id), inp.item_id)
        except AdapterError as exc:
            raise IIIError(GET_ERROR, f"Failed to get value: {exc}") from None
        return NO_RESULT if entry is None else Raw(entry.raw)

    async def delete(self, data: Raw, ctx: CallContext) -> Raw:
        inp: ItemInput = decode_input(ItemInput, data, ctx.function_id)
        scope = scope_of(inp.stream_name, inp.group_id)
        override = self._override("delete", inp.stream_name)
        if override is not None:
            out = await self._call_override(override, data)
            old_raw = b"null"
            if out is not None:
                try:
                    old_raw = bytes(old_output.decode(out).old_value)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise IIIError(OVERRIDE_ERROR, f"Failed to convert result of {override}: {exc}") from None
            if old_raw != b"null":
                await self._emit_override(DELETED, scope, inp.item_id, old_raw, None)
            return Raw(b'{"old_value":' + old_raw + b"}")
        if self.bridge is not None:
            got = await self._forward("stream::delete", data, DELETE_ERROR, "Failed to delete value")
            old_raw = b"null"
            if got is not None:
                try:
                    old_raw = bytes(old_output.decode(got).old_value)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise IIIError(
                        DELETE_ERROR, f"the bridged engine sent an unexpected result: {exc}"
                    ) from None
            if old_raw != b"null":
                await self._share(inp.stream_name, inp.group_id, inp.item_id, _event(b"delete", old_raw))
            return Raw(b'{"old_value":' + old_raw + b"}")
        try:
            old, _ = await self.adapter.mutate(scope, inp.item_id, delete_fn(None))
        except AdapterError as exc:
            raise IIIError(DELETE_ERROR, f"Failed to delete value: {exc}") from None
        if old is not None and not self._shared:
            self._changed(DELETED, scope, inp.item_id, old.raw, None)
        return Raw(b'{"old_value":' + (old.raw if old is not None else b"null") + b"}")

    async def update(self, data: Raw, ctx: CallContext) -> Raw:
        inp: UpdateInput = decode_input(UpdateInput, data, ctx.function_id)
        parsed = parse_ops(inp.ops, ctx.function_id)
        scope = scope_of(inp.stream_name, inp.group_id)
        override = self._override("update", inp.stream_name)
        if override is not None:
            old_raw, new_raw = self._pair_of(
                await self._call_override(override, data), override, UPDATE_ERROR
            )
            kind = CREATED if old_raw is None else UPDATED
            await self._emit_override(kind, scope, inp.item_id, old_raw, new_raw)
            return pair(None if old_raw is None else Entry(old_raw, 0), new_raw)
        if self.bridge is not None:
            out = await self._forward("stream::update", data, UPDATE_ERROR, "Failed to update value")
            return await self._share_pair(out, inp, UPDATE_ERROR)
        run = UpdateRun(parsed, None, None, None)
        try:
            old, _ = await self.adapter.mutate(scope, inp.item_id, run)
        except AdapterError as exc:
            raise IIIError(UPDATE_ERROR, f"Failed to update value: {exc}") from None
        if not self._shared:
            kind = CREATED if old is None else UPDATED
            self._changed(kind, scope, inp.item_id, old.raw if old else None, run.new_raw)
        return pair(old, run.new_raw, run.extra())

    async def list(self, data: Raw, ctx: CallContext) -> Raw:
        inp: GroupInput = decode_input(GroupInput, data, ctx.function_id)
        override = self._override("list", inp.stream_name)
        if override is not None:
            out = await self._call_override(override, data)
            return Raw(b"[]") if out is None else out
        if self.bridge is not None:
            got = await self._forward("stream::list", data, LIST_ERROR, "Failed to get group")
            return Raw(b"[]" if got is None else got)
        try:
            entries = await self.adapter.list(scope_of(inp.stream_name, inp.group_id))
        except AdapterError as exc:
            raise IIIError(LIST_ERROR, f"Failed to get group: {exc}") from None
        return Raw(b"[" + b",".join(e.raw for e in entries) + b"]")

    async def _groups(self, stream_name: str) -> builtins.list[str]:
        prefix = stream_prefix(stream_name)
        return [scope[len(prefix) :] for scope in await self.adapter.list_groups(prefix)]

    async def list_groups(self, data: Raw, ctx: CallContext) -> Any:
        inp: StreamInput = decode_input(StreamInput, data, ctx.function_id)
        override = self._override("list_groups", inp.stream_name)
        if override is not None:
            out = await self._call_override(override, data)
            return Raw(b"[]") if out is None else out
        if self.bridge is not None:
            got = await self._forward("stream::list_groups", data, LIST_GROUPS_ERROR, "Failed to list groups")
            return Raw(b"[]" if got is None else got)
        try:
            return await self._groups(inp.stream_name)
        except AdapterError as exc:
            raise IIIError(LIST_GROUPS_ERROR, f"Failed to list groups: {exc}") from None

    async def list_all(self, data: Raw, ctx: CallContext) -> Any:
        decode_input(AnyObject, data, ctx.function_id)
        if self.bridge is not None:
            got = await self._forward("stream::list_all", data, LIST_ALL_ERROR, "Failed to list stream")
            return Raw(b'{"stream":[],"count":0}' if got is None else got)
        try:
            scopes = await self.adapter.list_groups()
        except AdapterError as exc:
            raise IIIError(LIST_ALL_ERROR, f"Failed to list stream: {exc}") from None
        streams: dict[str, builtins.list[str]] = {}
        for scope in scopes:
            names = split_scope(scope)
            if names is not None:
                streams.setdefault(names[0], []).append(names[1])
        listed = [{"id": name, "groups": sorted(groups)} for name, groups in sorted(streams.items())]
        return {"stream": listed, "count": len(listed)}

    async def send(self, data: Raw, ctx: CallContext) -> Any:
        inp: SendInput = decode_input(SendInput, data, ctx.function_id)
        check_numbers(bytes(inp.data), ctx.function_id, "data")
        if not inp.event_type:
            raise bad_input(ctx.function_id, "`type` must be a non-empty string")
        scope = scope_of(inp.stream_name, inp.group_id)
        body = b"".join(
            (b'{"type":', _enc(inp.event_type), b',"data":', bytes(inp.data), b',"id":', _enc(inp.id), b"}")
        )
        if self.bridge is not None:
            event = (
                b'{"type":"event","event":{"type":'
                + _enc(inp.event_type)
                + b',"data":'
                + bytes(inp.data)
                + b"}}"
            )
            await self._share(inp.stream_name, inp.group_id, inp.id, event)
            return NO_RESULT
        if self._shared:
            try:
                if await self.adapter.publish(SENT, scope, inp.id or "", None, body):
                    return NO_RESULT
            except AdapterError as exc:
                raise IIIError(SEND_ERROR, f"Failed to send event: {exc}") from None
        self._changed(SENT, scope, inp.id or "", None, body)
        return NO_RESULT

    def stats(self) -> dict[str, Any]:
        return {**clients.describe(self.hub), **(self.triggers.describe() if self.triggers else {})}


class _Watcher:
    """The sink of an in-process watcher: its frames go to a plain callback."""

    __slots__ = ("limit", "send")

    def __init__(self, send: Callable[[bytes], None], limit: int) -> None:
        self.send = send
        self.limit = limit
