"""WebSocket I/O: the only module that imports the WebSocket library.

It turns sockets into ``Connection`` objects and frames into calls of
``Engine.handle``; everything else about the protocol lives elsewhere.
Paths: ``/`` is the worker protocol, ``/otel`` takes telemetry, anything
else is answered 404.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

from pyiii import errors, protocol
from pyiii.engine import telemetry
from pyiii.engine.connection import Connection
from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.transport")


@dataclass(slots=True, frozen=True)
class TransportOptions:
    max_frame_bytes: int = 16 * 1024 * 1024
    max_connections: int = 10_000
    auth_token: str | None = None
    handshake_timeout_s: float = 10.0


class _Reassembly:
    """Joins fragmented messages (picows hands us raw frames)."""

    __slots__ = ("limit", "parts", "size", "type")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.type: WSMsgType | None = None

    def feed(self, frame: WSFrame) -> tuple[WSMsgType, bytes] | None | str:
        """A complete message, None while incomplete, or a reason to close."""
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CONTINUATION:
            if self.type is None:
                return "continuation frame without a message to continue"
        else:
            if self.type is not None:
                return "new message started before the previous one finished"
            if frame.fin:
                return msg_type, frame.get_payload_as_bytes()
            self.type = msg_type
        self.size += frame.payload_size
        if self.size > self.limit:
            return f"message larger than the {self.limit}-byte limit"
        self.parts.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return None
        assert self.type is not None
        done = (self.type, b"".join(self.parts))
        self.parts, self.size, self.type = [], 0, None
        return done


class _Base(WSListener):
    transport: WSTransport

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.assembly = _Reassembly(options.max_frame_bytes)

    def _close(self, code: int | WSCloseCode, reason: str) -> None:
        if not self.transport.is_close_frame_sent:
            self.transport.send_close(WSCloseCode(code), reason.encode()[:120])
        self.transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type in (WSMsgType.PING, WSMsgType.PONG):
            return  # picows answers pings itself
        got = self.assembly.feed(frame)
        if got is None:
            return
        if isinstance(got, str):
            self._close(WSCloseCode.PROTOCOL_ERROR, got)
            return
        self.on_message(*got)

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        raise NotImplementedError  # each path's listener defines it


class _WorkerListener(_Base):
    """A worker on ``/``."""

    def __init__(self, engine: Engine, options: TransportOptions, request: WSUpgradeRequest):
        super().__init__(options)
        self.engine = engine
        self.request = request
        self.conn: Connection | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        headers = {k.lower(): v for k, v in self.request.headers.items()}
        if self.options.auth_token is not None and not _authorized(headers, self.options.auth_token):
            self._refuse(
                errors.AUTH_ERROR,
                "missing or wrong worker token: send "
                "'Authorization: Bearer <token>' with the token set in iii-config.yaml",
            )
            return
        if not self.engine.accepting:
            self._refuse(errors.SHUTTING_DOWN, "the engine is shutting down")
            return
        if len(self.engine.connections) >= self.options.max_connections:
            self._refuse(
                errors.LIMIT_EXCEEDED,
                f"the engine already holds "
                f"{self.options.max_connections} connections (limits.max_connections)",
            )
            return
        peer = transport.underlying_transport.get_extra_info("peername")
        self.conn = Connection(
            self._send,
            self._close,
            ip_address=peer[0] if isinstance(peer, tuple) else None,
            headers=headers,
        )
        self.engine.connect(self.conn)

    def _refuse(self, code: str, message: str) -> None:
        log.warning("refused a worker connection: %s", message)
        frame = protocol.encode(protocol.ErrorFrame(error={"code": code, "message": message}))
        self.transport.send(WSMsgType.TEXT, frame)
        close = WSCloseCode.POLICY_VIOLATION if code == errors.AUTH_ERROR else WSCloseCode(1013)
        self._close(close, f"{code}: {message}")

    def _send(self, data: bytes) -> None:
        self.transport.send(WSMsgType.TEXT, data)

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        if msg_type is WSMsgType.BINARY and protocol.is_telemetry(payload):
            telemetry.ingest(payload, self.engine.function_for_trace)  # old SDKs use "/"
            return
        self.engine.handle(conn, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.conn is not None:
            self.engine.disconnect(self.conn)


class _TelemetryListener(_Base):
    """The SDKs' telemetry socket on ``/otel``; never a worker."""

    def __init__(self, engine: Engine, options: TransportOptions) -> None:
        super().__init__(options)
        self.engine = engine

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        if msg_type is WSMsgType.BINARY:
            telemetry.ingest(payload, self.engine.function_for_trace)


def _authorized(headers: dict[str, str], token: str) -> bool:
    presented = headers.get("authorization", "")
    if presented.lower().startswith("bearer "):
        presented = presented[7:].strip()
    else:
        presented = headers.get("x-iii-token", "")
    return hmac.compare_digest(presented.encode(), token.encode())


async def serve(engine: Engine, host: str, port: int, options: TransportOptions) -> asyncio.Server:
    """Start listening; returns the server (close it to stop accepting)."""

    def route(request: WSUpgradeRequest) -> WSListener | None:
        path = request.path.split(b"?", 1)[0]
        if path == b"/":
            return _WorkerListener(engine, options, request)
        if path == b"/otel":
            return _TelemetryListener(engine, options)
        return None  # picows answers 404

    return await ws_create_server(
        route,
        host,
        port,
        max_frame_size=options.max_frame_bytes,
        websocket_handshake_timeout=options.handshake_timeout_s,
        enable_auto_pong=True,
        logger_name="transport",
    )
