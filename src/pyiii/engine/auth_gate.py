"""Authenticate a WebSocket upgrade before it is answered (listeners with an auth function).

The WebSocket library decides an upgrade synchronously, but an auth
function is a call to a worker. So on such a listener every TCP connection
starts with :class:`AuthGate`: it reads the HTTP request head, and for the
worker path (``/``) awaits ``decide``; a refusal is answered with a plain
HTTP status (401/403/503/500) and the socket closed, an acceptance hands the
socket, with the bytes read so far, to the WebSocket protocol, which then
answers ``101``. Other paths (channels, ``/otel``) are handed over at once.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import unquote

# Largest request head accepted (request line + headers).
MAX_HEAD_BYTES = 32 * 1024
# Bytes a client may send after its head while its auth is running.
MAX_EARLY_BYTES = 64 * 1024

Decide = Callable[[dict[str, str], str, str], Awaitable[Any]]
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Rejected(Exception):
    """``decide`` refuses the upgrade: the HTTP status and a one-line body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]] | None:
    """(path, query, headers with lower-case names) of an HTTP request head, or None."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    target = parts[1]
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return unquote(path), query, headers


class AuthGate(asyncio.Protocol):
    """The first protocol of a connection on an authenticating listener."""

    def __init__(
        self,
        inner: Callable[[], asyncio.BaseProtocol],
        decide: Decide,
        stash: weakref.WeakKeyDictionary[Any, Any],
        head_timeout_s: float,
    ) -> None:
        self.inner = inner
        self.decide = decide
        self.stash = stash
        self.head_timeout_s = head_timeout_s
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.handed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(self.head_timeout_s, self._expire)

    def _expire(self) -> None:
        if not self.handed and self.task is None:
            self._answer(408, "no complete upgrade request in time")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is not None:
            if len(self.buffer) > MAX_HEAD_BYTES + MAX_EARLY_BYTES:
                self._answer(400, "data sent before the upgrade was answered")
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._answer(431, "request head too large")
            return
        parsed = parse_head(bytes(self.buffer[:end]))
        if parsed is None:
            self._answer(400, "malformed HTTP request")
            return
        path, query, headers = parsed
        if path != "/":
            self._hand_over(None)
            return
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        self.transport.pause_reading()
        self.task = asyncio.ensure_future(self._authenticate(headers, query, ip))

    async def _authenticate(self, headers: dict[str, str], query: str, ip: str) -> None:
        try:
            granted = await self.decide(headers, query, ip)
        except Rejected as rejected:
            self._answer(rejected.status, rejected.body)
            return
        if self.transport is None or self.transport.is_closing():
            return
        self._hand_over(granted)

    def _hand_over(self, granted: Any) -> None:
        transport = self.transport
        assert transport is not None
        self.handed = True
        if self.timer is not None:
            self.timer.cancel()
        if granted is not None:
            self.stash[transport] = granted
        protocol = self.inner()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data, self.buffer = bytes(self.buffer), bytearray()
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buf = memoryview(protocol.get_buffer(len(view)))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        elif data:
            protocol.data_received(data)  # type: ignore[attr-defined]
        transport.resume_reading()

    def _answer(self, status: int, body: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        payload = (body.replace("\r", " ").replace("\n", " ") + "\n").encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        transport.write(head.encode() + payload)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport = None
        self.buffer = bytearray()
