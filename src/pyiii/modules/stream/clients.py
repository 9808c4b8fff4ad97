"""The client WebSocket: browsers and apps join streams and get their changes.

Frames a client sends (text, or binary holding JSON)::

    {"type": "join",  "data": {"subscriptionId", "streamName", "groupId", "id"?}}
    {"type": "leave", "data": {"subscriptionId", ...}}

Answers: a ``sync`` of the item (``id`` given) or of the whole group, then
one frame per change (``create`` / ``update`` / ``delete`` / ``event``),
each ``{"type": "stream", timestamp, streamName, groupId, id, event}``; a
refused join gets ``event: {"type": "unauthorized"}`` and nothing else. A
frame that is not JSON or not a known message is answered with
``{"type": "error", "error": {code, message}}`` and changes nothing else.

Until a join's sync has been sent, the changes for it are held, so a client
never sees a change before the state it applies to (it may see a change the
sync already holds: each change carries the whole item, so it is harmless).

A client that does not read is dropped (1008) once its unsent frames pass
``max_send_buffer_bytes``: the engine holds at most that much per client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import msgspec
from msgspec import Raw
from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from pyiii import errors
from pyiii.engine.transport import TransportOptions, _Base, _reason
from pyiii.errors import IIIError

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.stream")

INVALID_MESSAGE = "invalid_message"
# Frames read but not handled yet above which we stop reading the client's socket
# (a client that sends joins faster than they are served is slowed down, not buffered).
INBOX_HIGH = 256
INBOX_LOW = 64
_EXPECTED = (
    'expected {"type": "join" | "leave", "data": {"subscriptionId": string, '
    '"streamName": string, "groupId": string, "id"?: string}}'
)


class _Data(msgspec.Struct):
    subscriptionId: str
    streamName: str
    groupId: str
    id: str | None = None


class _Join(msgspec.Struct, tag="join", tag_field="type"):
    data: _Data


class _Leave(msgspec.Struct, tag="leave", tag_field="type"):
    data: _Data


_message = msgspec.json.Decoder(_Join | _Leave)
_enc = msgspec.json.encode


def frame(stream_name: str, group_id: str, item_id: str | None, event: bytes) -> bytes:
    """One ``{"type":"stream",...}`` frame around an already encoded ``event`` object."""
    return b"".join(
        (
            b'{"type":"stream","timestamp":%d,"streamName":' % (time.time_ns() // 1_000_000),
            _enc(stream_name),
            b',"groupId":',
            _enc(group_id),
            b',"id":',
            _enc(item_id),
            b',"event":',
            event,
            b"}",
        )
    )


def error_frame(code: str, message: str) -> bytes:
    return _enc({"type": "error", "error": {"code": code, "message": message}})


@dataclass(slots=True, eq=False)
class Subscription:
    client: Client
    subscription_id: str
    stream_name: str
    group_id: str
    item_id: str | None
    # Frames held until the join's sync is sent (None once it is).
    held: list[bytes] | None = field(default_factory=list)


class Hub:
    """Who is subscribed to what, and the fan-out of one change to them."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], set[Subscription]] = {}
        self.clients: set[Client] = set()

    def add(self, sub: Subscription) -> None:
        self.groups.setdefault((sub.stream_name, sub.group_id), set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        key = (sub.stream_name, sub.group_id)
        subs = self.groups.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.groups[key]

    def broadcast(self, stream_name: str, group_id: str, item_id: str | None, data: bytes) -> int:
        """Send ``data`` to every subscription it concerns; how many got it."""
        subs = self.groups.get((stream_name, group_id))
        if not subs:
            return 0
        n = 0
        for sub in list(subs):
            if sub.item_id is not None and sub.item_id != item_id:
                continue
            if sub.held is not None:
                sub.held.append(data)
            else:
                sub.client.send(data)
            n += 1
        return n


# What the module offers the sockets: reads for a sync, join/leave hooks, auth.
Reader = Callable[[str, str, str | None], Awaitable[bytes]]
JoinHook = Callable[[bytes], Awaitable[bool]]


@dataclass(slots=True)
class Services:
    engine: Engine
    hub: Hub
    read: Reader
    on_join: JoinHook
    on_leave: JoinHook
    auth_function: str | None
    max_send_buffer_bytes: int
    options: TransportOptions
    live: set[WSTransport]


class Client(_Base):
    """One client connection on the stream port."""

    def __init__(self, services: Services, request: WSUpgradeRequest) -> None:
        super().__init__(services.options, services.live)
        self.services = services
        self.request = request
        self.subs: dict[str, Subscription] = {}
        self.context: Raw | None = None
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.gone = False
        self.paused = False  # reading paused: too many frames not handled yet

    # --- lifecycle --------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self._send = transport.send
        self._buffered = transport.underlying_transport.get_write_buffer_size
        self._limit = self.services.max_send_buffer_bytes
        self.services.hub.clients.add(self)
        # One task per client handles its frames in order (auth first), so a
        # join's sync always precedes the answers to its later frames.
        self.worker = asyncio.get_running_loop().create_task(self._run())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        self._gone()

    def _gone(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.services.hub.clients.discard(self)
        subs = list(self.subs.values())
        self.subs.clear()
        for sub in subs:
            self.services.hub.remove(sub)
        self.inbox.put_nowait(None)
        if subs:
            self.services.engine.spawn(self._leave_all(subs))

    async def _leave_all(self, subs: list[Subscription]) -> None:
        for sub in subs:
            await self.services.on_leave(
                self._event(sub.subscription_id, sub.stream_name, sub.group_id, sub.item_id)
            )

    # --- sending ------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        # The hot path of every change (once per subscribed client): bound methods, no lookups.
        if self.gone:
            return
        self._send(WSMsgType.TEXT, data)
        if self._buffered() > self._limit:
            self._drop()

    def _drop(self) -> None:
        transport = self.transport
        log.warning(
            "dropping a stream client: %d bytes of frames it has not read"
            " (iii-stream max_send_buffer_bytes = %d)",
            self._buffered(),
            self._limit,
        )
        transport.send_close(
            WSCloseCode.POLICY_VIOLATION,
            _reason(f"{errors.LIMIT_EXCEEDED}: client not reading its frames (max_send_buffer_bytes)"),
        )
        transport.disconnect(graceful=False)
        self._gone()

    def _error(self, code: str, message: str) -> None:
        self.send(error_frame(code, message))

    # --- receiving ------------------------------------------------------------------

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        if self.gone or not self._check_utf8(msg_type, payload):
            return
        self.inbox.put_nowait(payload)
        if not self.paused and self.inbox.qsize() > INBOX_HIGH:
            self.paused = True
            self.transport.underlying_transport.pause_reading()

    async def _run(self) -> None:
        try:
            if self.services.auth_function is not None and not await self._authenticate():
                return
            while (payload := await self.inbox.get()) is not None:
                if self.paused and self.inbox.qsize() < INBOX_LOW and not self.gone:
                    self.paused = False
                    self.transport.underlying_transport.resume_reading()
                await self._handle(payload)
        except Exception:
            log.exception("stream client failed")
            if not self.transport.is_close_frame_sent:
                self._close(WSCloseCode.INTERNAL_ERROR, "internal error")

    async def _authenticate(self) -> bool:
        req = self.request
        path, _, query = req.path.decode("latin-1").partition("?")
        peer = self.transport.underlying_transport.get_extra_info("peername")
        auth_input = {
            "headers": {str(k).lower(): str(v) for k, v in req.headers.items()},
            "path": unquote(path),
            "query_params": parse_qs(query, keep_blank_values=True),
            "addr": f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "",
        }
        fn = self.services.auth_function
        assert fn is not None
        try:
            out = await self.services.engine.call(fn, auth_input)
        except IIIError as err:
            log.info("stream client refused by %s: %s", fn, err)
            self._error(errors.AUTH_ERROR, f"refused by auth_function {fn}: {err.code}: {err.message}")
            self._close(WSCloseCode.POLICY_VIOLATION, f"{errors.AUTH_ERROR}: refused by the auth function")
            return False
        if out is not None:
            try:
                value = msgspec.json.decode(out)
            except msgspec.DecodeError:
                value = None
            if isinstance(value, dict) and value.get("context") is not None:
                self.context = Raw(_enc(value["context"]))
        return True

    async def _handle(self, payload: bytes) -> None:
        if not payload.strip():
            return
        try:
            msg = _message.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._error(INVALID_MESSAGE, f"{exc}; {_EXPECTED}")
            return
        if isinstance(msg, _Join):
            await self._join(msg.data)
        else:
            await self._leave(msg.data)

    def _event(self, sub_id: str, stream_name: str, group_id: str, item_id: str | None) -> bytes:
        return _enc(
            {
                "subscription_id": sub_id,
                "stream_name": stream_name,
                "group_id": group_id,
                "id": item_id,
                "context": self.context,
            }
        )

    async def _join(self, d: _Data) -> None:
        svc = self.services
        allowed = await svc.on_join(self._event(d.subscriptionId, d.streamName, d.groupId, d.id))
        if self.gone:
            return
        if not allowed:
            self.send(frame(d.streamName, d.groupId, d.id, b'{"type":"unauthorized"}'))
            return
        old = self.subs.pop(d.subscriptionId, None)
        if old is not None:
            svc.hub.remove(old)
        sub = Subscription(self, d.subscriptionId, d.streamName, d.groupId, d.id)
        self.subs[d.subscriptionId] = sub
        svc.hub.add(sub)
        try:
            current = await svc.read(d.streamName, d.groupId, d.id)
        except IIIError as err:
            self.subs.pop(d.subscriptionId, None)
            svc.hub.remove(sub)
            self._error(err.code, f"join {d.subscriptionId}: {err.message}")
            return
        held, sub.held = sub.held, None
        self.send(frame(d.streamName, d.groupId, d.id, b'{"type":"sync","data":' + current + b"}"))
        for data in held or ():
            self.send(data)

    async def _leave(self, d: _Data) -> None:
        sub = self.subs.pop(d.subscriptionId, None)
        if sub is None:
            return
        self.services.hub.remove(sub)
        await self.services.on_leave(
            self._event(sub.subscription_id, sub.stream_name, sub.group_id, sub.item_id)
        )


async def serve(services: Services, host: str, port: int) -> asyncio.Server:
    def route(request: WSUpgradeRequest) -> WSListener:
        return Client(services, request)

    return await ws_create_server(
        route,
        host,
        port,
        max_frame_size=services.options.max_frame_bytes,
        websocket_handshake_timeout=services.options.handshake_timeout_s,
        enable_auto_pong=True,
        logger_name="stream",
    )


def describe(hub: Hub) -> dict[str, Any]:
    return {"clients": len(hub.clients), "subscriptions": sum(len(s) for s in hub.groups.values())}
