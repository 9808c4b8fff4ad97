"""Streaming channels for the Python SDK: a writer and a reader over the engine.

``await worker.create_channel()`` returns a ``Channel`` (``writer``,
``reader`` and their wire refs). Pass a ref in a payload to another worker,
which opens it with ``worker.open_channel(ref)``. Any SDK can be on the
other end: a text message is one WebSocket text frame (by convention JSON),
bytes are binary frames, and closing the writer ends the stream.

Each side connects on first use, on the loop it is used from. Sending waits
while the engine is not taking more (the channel is full), so a writer can
never outrun its reader by more than the channel's buffer.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from pyiii import errors
from pyiii.errors import IIIError

__all__ = ["Channel", "ChannelClosed", "ChannelReader", "ChannelWriter", "channel_url", "is_channel_ref"]

# Binary sends are cut into frames of this size: the official Python SDK's
# reader refuses messages over 1 MiB, and the other SDKs cut at 64 KiB too.
FRAME_BYTES = 64 * 1024
# A reader holds at most this many unread bytes before it stops reading its socket.
READ_AHEAD_BYTES = 1024 * 1024
CLOSE_WAIT_S = 10.0


class ChannelClosed(IIIError):
    """The channel was closed before its end: the other side went away, or it expired."""

    def __init__(self, message: str) -> None:
        super().__init__(errors.CHANNEL_CLOSED, message)


def is_channel_ref(value: Any) -> bool:
    """Whether ``value`` is a channel ref as found in payloads (``{channel_id, access_key, direction}``)."""
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("channel_id"), str)
        and isinstance(value.get("access_key"), str)
        and value.get("direction") in ("read", "write")
    )


def channel_url(engine_url: str, ref: Mapping[str, Any]) -> str:
    """The WebSocket URL that opens ``ref``'s side on the engine at ``engine_url``."""
    parts = urllib.parse.urlsplit(engine_url)
    query = urllib.parse.urlencode({"key": ref["access_key"], "dir": ref["direction"]})
    path = f"/ws/channels/{urllib.parse.quote(ref['channel_id'], safe='')}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class _Socket(WSListener):
    """One channel socket: frames in, flow control, how it closed."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.messages: deque[tuple[str | bytes, int]] = deque()  # (message, its size on the wire)
        self.unread = 0
        self.paused = False
        self.arrived = asyncio.Event()  # a message, or the close
        self.writable = asyncio.Event()
        self.writable.set()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()
        self._parts: list[bytes] = []
        self._kind: WSMsgType | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.CLOSE:
            if self.close_code is None:
                self.close_code = frame.get_close_code().value
                self.close_reason = frame.get_close_reason()
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        if kind is WSMsgType.CONTINUATION:
            if self._kind is None:
                return
            self._parts.append(frame.get_payload_as_bytes())
        elif kind in (WSMsgType.TEXT, WSMsgType.BINARY):
            self._kind, self._parts = kind, [frame.get_payload_as_bytes()]
        else:
            return  # ping/pong: picows answers pings
        if not frame.fin:
            return
        payload = b"".join(self._parts)
        message: str | bytes = payload.decode() if self._kind is WSMsgType.TEXT else payload
        self._kind, self._parts = None, []
        self.messages.append((message, len(payload)))
        self.unread += len(payload)
        self.arrived.set()
        if self.unread > READ_AHEAD_BYTES and not self.paused:
            self.paused = True
            transport.underlying_transport.pause_reading()

    def take(self) -> str | bytes:
        message, size = self.messages.popleft()
        self.unread -= size
        if not self.messages:
            self.arrived.clear()
        if self.paused and self.unread <= READ_AHEAD_BYTES // 2 and self.transport is not None:
            self.paused = False
            if not self.transport.is_disconnected:
                self.transport.underlying_transport.resume_reading()
        return message

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.arrived.set()
        self.writable.set()
        self.closed.set()

    def why_closed(self) -> str:
        if self.close_code is None:
            return "the connection to the engine was lost"
        return (
            f"closed by the engine ({self.close_code}{': ' + self.close_reason if self.close_reason else ''})"
        )


class _Side:
    def __init__(
        self,
        engine_url: str,
        ref: Mapping[str, Any],
        direction: str,
        headers: Mapping[str, str] | None,
        max_frame_bytes: int,
    ) -> None:
        if not is_channel_ref(ref):
            raise ValueError(f"not a channel ref: {ref!r}")
        if ref["direction"] != direction:
            raise ValueError(f"this ref opens the {ref['direction']} side, not the {direction} side")
        self.ref: dict[str, str] = {k: ref[k] for k in ("channel_id", "access_key", "direction")}
        self.url = channel_url(engine_url, ref)
        self._headers = dict(headers) if headers else None
        self._max_frame = max_frame_bytes
        self._socket: _Socket | None = None
        self._connecting: asyncio.Future[_Socket] | None = None

    async def _open(self) -> _Socket:
        if self._socket is not None:
            return self._socket
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Socket:
        try:
            _transport, listener = await ws_connect(
                _Socket,
                self.url,
                extra_headers=self._headers,
                websocket_handshake_timeout=10,
                max_frame_size=self._max_frame,
                logger_name="pyiii.sdk.channels",
            )
        except Exception as exc:
            # The engine answers 404 to a wrong ref, an expired channel, or a side already open.
            raise ChannelClosed(f"cannot open the channel {self.ref['channel_id']}: {exc}") from None
        assert isinstance(listener, _Socket)
        self._socket = listener
        return listener


class ChannelWriter(_Side):
    """The write side: ``send_text``/``send_json``/``send_bytes``, then ``close``."""

    def __init__(
        self,
        engine_url: str,
        ref: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        max_frame_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(engine_url, ref, "write", headers, max_frame_bytes)
        self._closed = False

    async def _ready(self) -> _Socket:
        if self._closed:
            raise ChannelClosed("this writer is closed")
        sock = await self._open()
        if sock.closed.is_set():
            raise ChannelClosed(sock.why_closed())
        if not sock.writable.is_set():
            await sock.writable.wait()  # the engine is not reading: the channel is full
            if sock.closed.is_set():
                raise ChannelClosed(sock.why_closed())
        return sock

    async def send_text(self, text: str) -> None:
        """Send one text message (one text frame)."""
        sock = await self._ready()
        assert sock.transport is not None
        sock.transport.send(WSMsgType.TEXT, text.encode())

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as one JSON text message."""
        sock = await self._ready()
        assert sock.transport is not None
        sock.transport.send(WSMsgType.TEXT, msgspec.json.encode(value))

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send bytes, cut into binary frames of at most 64 KiB; waits while the channel is full."""
        view = memoryview(data).cast("B")
        if not view:
            return
        for start in range(0, len(view), FRAME_BYTES):
            sock = await self._ready()
            assert sock.transport is not None
            sock.transport.send(WSMsgType.BINARY, view[start : start + FRAME_BYTES])

    async def close(self) -> None:
        """End the stream: the reader gets what was sent, then the end. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            sock = await self._open()  # never opened: open it, so the reader still sees an end
        except ChannelClosed:
            return
        if sock.transport is not None and not sock.transport.is_close_frame_sent:
            sock.transport.send_close(WSCloseCode.OK, b"channel_close")
        # The engine answers our close once it has read everything before it,
        # which waits for a slow reader; past CLOSE_WAIT_S we stop waiting (a
        # graceful disconnect still delivers what is queued, and the engine
        # takes a disconnect without a close frame as the end too).
        try:
            await asyncio.wait_for(sock.closed.wait(), CLOSE_WAIT_S)
        except TimeoutError:
            if sock.transport is not None:
                sock.transport.disconnect()

    async def __aenter__(self) -> ChannelWriter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class ChannelReader(_Side):
    """The read side: ``async for message in reader`` yields ``str`` (text) or ``bytes``."""

    def __init__(
        self,
        engine_url: str,
        ref: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        max_frame_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(engine_url, ref, "read", headers, max_frame_bytes)

    async def get(self) -> str | bytes | None:
        """The next message, or None at the end of the stream.

        Raises ChannelClosed if the stream was cut before its end (the engine
        closed the socket with anything but 1000, or the connection was lost).
        """
        sock = await self._open()
        while not sock.messages:
            if sock.closed.is_set():
                if sock.close_code == WSCloseCode.OK.value:
                    return None
                raise ChannelClosed(sock.why_closed())
            await sock.arrived.wait()
        return sock.take()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        while (message := await self.get()) is not None:
            yield message

    async def read_all(self, on_text: Callable[[str], Any] | None = None) -> bytes:
        """Every binary message joined, until the end; text messages go to ``on_text`` (if given)."""
        chunks: list[bytes] = []
        async for message in self:
            if isinstance(message, bytes):
                chunks.append(message)
            elif on_text is not None:
                on_text(message)
        return b"".join(chunks)

    async def close(self) -> None:
        """Stop reading: the engine drops the rest and the writer's sends fail."""
        sock = self._socket
        if sock is None or sock.transport is None:
            return
        if not sock.transport.is_close_frame_sent:
            sock.transport.send_close(WSCloseCode.OK, b"channel_close")
        try:
            await asyncio.wait_for(sock.closed.wait(), 5)
        except TimeoutError:
            sock.transport.disconnect()


@dataclass(frozen=True, slots=True)
class Channel:
    """A new channel: both sides, and the refs to hand to other workers."""

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: dict[str, str]
    reader_ref: dict[str, str]
