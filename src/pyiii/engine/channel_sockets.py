"""``/ws/channels/{id}?key=…&dir=read|write``: a channel's side over a WebSocket.

Served on every worker listener (transport.serve routes here). The access
key of the ref is the only credential; a wrong id, key or direction, or a
side already open, is answered 404 on the upgrade, the same for all.

Write side: each text frame is one message (``str``), each binary frame one
``bytes`` message. When the channel is full we stop reading the socket (TCP
backpressure reaches the writer) and hold the frames already read. The
stream ends when the writer's socket goes, with or without a close frame:
Node's ``ChannelWriter`` terminates its socket right after closing it, so the
close frame is not always delivered (the reference engine ends the stream on
any disconnect too).

Read side: messages go out in order, text as text frames and bytes as binary
frames; we stop taking from the channel while the socket's send buffer is
over its high-water mark. At the end we close with 1000; an aborted channel
is closed with 1011 and the reason. A reader that disconnects first aborts
the channel, so its writer learns the stream is unwanted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from urllib.parse import parse_qs, unquote

from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, WSUpgradeRequest

from pyiii.engine.channels import READ, WRITE, Channel, ChannelClosed, ChannelManager, Message
from pyiii.engine.transport import TransportOptions, _Base

log = logging.getLogger("pyiii.channels")

PREFIX = b"/ws/channels/"
# Unsent bytes on a reader's socket above which we stop taking messages from the channel.
READ_HIGH_WATER = 512 * 1024
READ_LOW_WATER = 128 * 1024
# Kernel buffer of a channel socket on the engine's side (SO_RCVBUF for a writer's,
# SO_SNDBUF for a reader's). picows doubles its read buffer whenever a read fills
# it, so with Linux autotuning (tcp_rmem up to 32 MiB) one read could hand us
# megabytes of frames after we paused; a fixed kernel buffer caps each read, and
# the kernel memory a channel pins.
SOCKET_BUFFER_BYTES = 256 * 1024
# An aborted channel's sockets close with 1011: to a generic client (the
# `websockets` library, browsers) a stream cut short is an error, not an end.
ABORT_CODE = WSCloseCode.INTERNAL_ERROR


def route(
    request: WSUpgradeRequest, channels: ChannelManager, options: TransportOptions, live: set[WSTransport]
) -> WSListener | None:
    """The listener for a channel upgrade, or None (404) if the ref does not open anything."""
    path, _, query = request.path.partition(b"?")
    channel_id = unquote(path[len(PREFIX) :].decode("latin-1"))
    params = parse_qs(query.decode("latin-1"))
    key = params.get("key", [""])[-1]
    direction = params.get("dir", [""])[-1]
    channel = channels.get(channel_id, key, direction)
    if channel is None:
        return None
    if channel.writer_used if direction == WRITE else channel.reader_used:
        return None  # one socket (or in-process user) per side
    if direction == WRITE:
        return _WriteSide(channel, options, live)
    return _ReadSide(channel, options, live)


def _set_buffer(transport: WSTransport, option: int) -> None:
    sock = transport.underlying_transport.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    except (OSError, AttributeError) as exc:  # not fatal: only the bound gets looser
        log.debug("could not size a channel socket's buffer: %s", exc)


class _Side(_Base):
    def __init__(
        self, channel: Channel, direction: str, options: TransportOptions, live: set[WSTransport]
    ) -> None:
        super().__init__(options, live)
        self.channel = channel
        self.direction = direction

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        # Checked again now: two upgrades for the same side may have raced.
        if not self.channel.claim(self.direction):
            self._close(WSCloseCode.POLICY_VIOLATION, f"the {self.direction} side of this channel is taken")
            return
        self.started()

    def started(self) -> None:
        """The side is ours."""


class _WriteSide(_Side):
    """Frames from the writer's socket into the channel."""

    def __init__(self, channel: Channel, options: TransportOptions, live: set[WSTransport]) -> None:
        super().__init__(channel, WRITE, options, live)
        self.held: deque[Message] = deque()  # read while the channel was full
        self.draining: asyncio.Task[None] | None = None
        self.gone = False  # the socket is gone: end the channel once held is drained
        self.owner = False

    def started(self) -> None:
        self.owner = True
        _set_buffer(self.transport, socket.SO_RCVBUF)
        self.channel.add_abort_callback(self._aborted)

    def _aborted(self, reason: str) -> None:
        self.held.clear()
        if not self.transport.is_disconnected:
            self._close(ABORT_CODE, reason)

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        if not self.owner:
            return
        if msg_type is WSMsgType.TEXT:
            if not self._check_utf8(msg_type, payload):
                self.channel.abort("the writer sent a text frame that is not UTF-8")
                return
            message: Message = payload.decode()
        elif msg_type is WSMsgType.BINARY:
            message = payload
        else:
            return
        if self.held:
            self.held.append(message)
            return
        try:
            if self.channel.offer(message):
                return
        except ChannelClosed as exc:
            self._aborted(exc.reason)
            return
        # Full: stop reading the socket until the reader makes room.
        self.held.append(message)
        self.transport.underlying_transport.pause_reading()
        self.draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self.held:
                await self.channel.put(self.held[0])
                self.held.popleft()
        except ChannelClosed as exc:
            self._aborted(exc.reason)
            return
        finally:
            self.draining = None
        if self.gone:
            self.channel.end()
        elif not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if not self.owner:
            return
        failure = _failure(transport)
        if failure is not None:
            self.channel.abort(f"the writer's socket closed with {failure}")
            return
        self.gone = True
        if self.draining is None:
            self.channel.end()


def _failure(transport: WSTransport) -> str | None:
    """How a socket's close says the stream broke, or None for a normal end.

    The peer closing with 1000/1001 (or no code, or no close frame at all) is
    an end; any other code from the peer, or a protocol error on our side
    (1002, 1007, 1009), is a failure.
    """
    hs = transport.close_handshake
    if hs is None:
        return None
    normal = (WSCloseCode.OK, WSCloseCode.GOING_AWAY, WSCloseCode.NO_INFO)
    if hs.recv is not None and (hs.sent is None or hs.recv_then_sent):
        return None if hs.recv.code in normal else f"{hs.recv.code.value} {hs.recv.reason}".strip()
    if hs.sent is not None and hs.sent.code not in normal:
        return f"{hs.sent.code.value} {hs.sent.reason}".strip()
    return None


class _ReadSide(_Side):
    """Messages from the channel out to the reader's socket."""

    def __init__(self, channel: Channel, options: TransportOptions, live: set[WSTransport]) -> None:
        super().__init__(channel, READ, options, live)
        self.pump: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def started(self) -> None:
        sock = self.transport.underlying_transport
        sock.set_write_buffer_limits(high=READ_HIGH_WATER, low=READ_LOW_WATER)
        _set_buffer(self.transport, socket.SO_SNDBUF)
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        transport = self.transport
        try:
            while True:
                if not self.writable.is_set():
                    await self.writable.wait()
                message = await self.channel.get()
                if transport.is_close_frame_sent or transport.is_disconnected:
                    return
                if message is None:
                    self._close(WSCloseCode.OK, "channel ended")
                    return
                if isinstance(message, bytes):
                    transport.send(WSMsgType.BINARY, message)
                else:
                    transport.send(WSMsgType.TEXT, message.encode())
        except ChannelClosed as exc:
            if not transport.is_disconnected:
                self._close(ABORT_CODE, exc.reason)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        if self.pump is not None and not self.channel.closed:
            self.channel.abort("the reader disconnected before the end of the stream")
