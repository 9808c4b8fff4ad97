"""WebSocket I/O: the only module that imports the WebSocket library.

It turns sockets into ``Connection`` objects and frames into calls of
``Engine.handle``; everything else about the protocol lives elsewhere.
Paths: ``/`` is the worker protocol, ``/otel`` takes telemetry,
``/ws/channels/{id}`` a channel's side (channel_sockets.py, which builds on
the listener base here), anything else is answered 404.

Frame-level limits live here: a message over ``max_frame_bytes`` is closed
with 1009 (picows checks each frame's header before reading its payload; we
check reassembled fragments), a text (or JSON binary) message that is not
UTF-8 with 1007, a broken fragment sequence with 1002. Every close carries a
reason. A worker that stops reading is throttled (we stop reading from it
while its unsent replies exceed the socket's high-water mark) and dropped
with 1008 once frames pile up over ``max_send_buffer_bytes`` for
``SLOW_READER_GRACE_S`` (or reach twice it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

from pyiii import errors, protocol
from pyiii.engine import rbac, telemetry
from pyiii.engine.access import Refusal
from pyiii.engine.auth_gate import AuthGate, Rejected
from pyiii.engine.connection import Connection
from pyiii.engine.engine import Engine, _LogBudget

log = logging.getLogger("pyiii.transport")


# Unsent bytes on a worker socket above which we stop reading from it, and
# below which we read again (TCP backpressure for a worker that sends calls
# faster than it reads their results).
WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024
# How long a socket we close waits for the peer's close frame before it is cut.
# Closing with the peer's frames unread would send a TCP reset, and the peer
# could lose our last frames (the error, the close reason) with it.
CLOSE_WAIT_S = 2.0
# A worker whose unsent frames stay over max_send_buffer_bytes this long (or
# reach twice it) is dropped.
SLOW_READER_GRACE_S = 5.0

# Enum members looked up once: on Python 3.11 every ``WSMsgType.X`` costs a
# class attribute lookup (~60 ns), and the frame path used six per call.
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY


@dataclass(slots=True, frozen=True)
class TransportOptions:
    max_frame_bytes: int = 16 * 1024 * 1024
    max_connections: int = 10_000
    max_send_buffer_bytes: int = 64 * 1024 * 1024
    auth_token: str | None = None
    handshake_timeout_s: float = 10.0
    # Which listener this is (for log lines), and its access control.
    name: str = "iii-worker-manager"
    rbac: rbac.RbacPolicy | None = None
    middleware_function_id: str | None = None

    @property
    def gated(self) -> bool:
        return self.rbac is not None or self.middleware_function_id is not None


def _reason(text: str) -> bytes:
    """A close reason: at most 123 bytes of UTF-8 (the frame's limit), never a split character."""
    return text.encode()[:123].decode("utf-8", "ignore").encode()


def _sendable(code: int) -> bool:
    """A close code an endpoint may put on the wire (RFC 6455 §7.4)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _is_utf8(payload: bytes) -> int | None:
    """None if ``payload`` is valid UTF-8, else the offset of the first bad byte."""
    if payload.isascii():
        return None
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


class _Reassembly:
    """Joins fragmented messages (picows hands us raw frames)."""

    __slots__ = ("limit", "parts", "size", "type")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.type: WSMsgType | None = None

    def feed(self, frame: WSFrame) -> tuple[WSMsgType, bytes] | None | tuple[WSCloseCode, str]:
        """A complete message, None while incomplete, or (close code, reason)."""
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CONTINUATION:
            if self.type is None:
                return WSCloseCode.PROTOCOL_ERROR, "continuation frame without a message to continue"
        else:
            if self.type is not None:
                return WSCloseCode.PROTOCOL_ERROR, "new message started before the previous one finished"
            if frame.fin:
                return msg_type, frame.get_payload_as_bytes()
            self.type = msg_type
        self.size += frame.payload_size
        if self.size > self.limit:
            return (
                WSCloseCode.MESSAGE_TOO_BIG,
                f"message over {self.limit} bytes (iii-worker-manager limits.max_frame_bytes)",
            )
        self.parts.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return None
        assert self.type is not None
        done = (self.type, b"".join(self.parts))
        self.parts, self.size, self.type = [], 0, None
        return done


class _Base(WSListener):
    transport: WSTransport

    def __init__(self, options: TransportOptions, live: set[WSTransport]) -> None:
        self.options = options
        self.live = live
        self.assembly = _Reassembly(options.max_frame_bytes)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.live.add(transport)

    def _close(self, code: int | WSCloseCode, reason: str) -> None:
        """Send a close frame; the socket goes when the peer answers it (or after CLOSE_WAIT_S)."""
        if not self.transport.is_close_frame_sent:
            self.transport.send_close(WSCloseCode(code), _reason(reason))
        asyncio.get_running_loop().call_later(CLOSE_WAIT_S, self.transport.disconnect)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The common frame first: a whole text message, no fragments pending,
        # no reserved bits. It takes exactly the path the checks below would.
        if (
            frame.msg_type is _TEXT
            and frame.fin
            and self.assembly.type is None
            and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
            and not transport.is_close_frame_sent
        ):
            self.on_message(_TEXT, frame.get_payload_as_bytes())
            return
        if frame.msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                # Echo the peer's code, but a close without one (picows reports
                # 0) is answered with 1000: 0 is not a valid code and Node's
                # `ws` raises on it (iii-sdk 0.9.0 then crashes in shutdown()).
                # Codes reserved for local use (1004-1006, 1015) are answered with 1000 too.
                code = frame.get_close_code()
                transport.send_close(code if _sendable(code.value) else WSCloseCode.OK)
            transport.disconnect()
            return
        if transport.is_close_frame_sent:
            # We (or picows, on a protocol error) are closing: whatever still
            # arrives is not acted on. After a parser error it may be garbage.
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._close(WSCloseCode.PROTOCOL_ERROR, "reserved bits set, but no extension was negotiated")
            return
        if frame.msg_type in (WSMsgType.PING, WSMsgType.PONG):
            return  # picows answers pings itself
        got = self.assembly.feed(frame)
        if got is None:
            return
        if isinstance(got[0], WSCloseCode):
            log.warning("closing a connection: %s", got[1])
            self._close(*got)
            return
        self.on_message(*got)  # type: ignore[arg-type]

    def _check_utf8(self, msg_type: WSMsgType, payload: bytes) -> bool:
        """False (and the connection closing with 1007) if a JSON message is not UTF-8."""
        bad = _is_utf8(payload)
        if bad is None:
            return True
        kind = "text" if msg_type is _TEXT else "binary JSON"
        log.warning("closing a connection: invalid UTF-8 at byte %d of a %s frame", bad, kind)
        self._close(WSCloseCode.INVALID_TEXT, f"invalid UTF-8 at byte {bad} of a {kind} frame")
        return False

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.live.discard(transport)
        sent = transport.close_handshake.sent if transport.close_handshake is not None else None
        if sent is not None and sent.code is WSCloseCode.MESSAGE_TOO_BIG:
            # picows refused a frame by its header; say which setting governs it.
            log.warning(
                "closed a connection with 1009 (%s); the limit is "
                "iii-worker-manager.config.limits.max_frame_bytes = %d",
                sent.reason,
                self.options.max_frame_bytes,
            )

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        """One complete message; each path's listener says what it means."""


class _WorkerListener(_Base):
    """A worker on ``/``."""

    def __init__(
        self,
        engine: Engine,
        options: TransportOptions,
        live: set[WSTransport],
        request: WSUpgradeRequest,
        granted: weakref.WeakKeyDictionary[Any, rbac.Grants] | None = None,
        workers: set[Connection] | None = None,
    ):
        super().__init__(options, live)
        self.engine = engine
        self.request = request
        self.granted = granted
        # This listener's open worker connections (limits.max_connections is per listener).
        self.workers: set[Connection] = set() if workers is None else workers
        self.conn: Connection | None = None
        # Messages read but not yet handled while the worker is not reading our
        # replies (at most what one socket read held; reading is paused meanwhile).
        self.held: deque[bytes] | None = None
        self.over_since: float | None = None  # since when unsent frames exceed max_send_buffer_bytes
        self.send_limit = options.max_send_buffer_bytes
        self.sock: Any = None  # the socket's asyncio transport, once connected

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        headers = {k.lower(): v for k, v in self.request.headers.items()}
        if self.options.auth_token is not None and not _authorized(headers, self.options.auth_token):
            self._refuse(
                errors.AUTH_ERROR,
                "missing or wrong worker token: send 'Authorization: Bearer <token>' with the token "
                "set as auth_token under iii-worker-manager in iii-config.yaml",
                "missing or wrong token (send Authorization: Bearer <token>)",
            )
            return
        if not self.engine.accepting:
            self._refuse(errors.SHUTTING_DOWN, "the engine is shutting down", "the engine is shutting down")
            return
        if len(self.workers) >= self.options.max_connections:
            limit = self.options.max_connections
            self._refuse(
                errors.LIMIT_EXCEEDED,
                f"the engine already holds {limit} worker connections; raise "
                "iii-worker-manager.config.limits.max_connections to allow more",
                f"{limit} connections open (limits.max_connections)",
            )
            return
        sock = self.sock = transport.underlying_transport
        # Throttle well before the drop limit, so a worker that reads slowly is slowed down, not dropped.
        high = min(WRITE_HIGH_WATER, self.options.max_send_buffer_bytes // 4)
        sock.set_write_buffer_limits(high=high, low=min(WRITE_LOW_WATER, high // 4))
        peer = sock.get_extra_info("peername")
        session = None
        options = self.options
        if options.gated:
            grants = self.granted.pop(sock, None) if self.granted is not None else None
            if grants is None and options.rbac is not None and options.rbac.auth_function_id is not None:
                # Cannot happen (the gate authenticated this socket); refuse rather than open it up.
                self._refuse(errors.AUTH_ERROR, "connection was not authenticated", "not authenticated")
                return
            session = rbac.Session(
                options.rbac,
                grants or rbac.OPEN_GRANTS,
                middleware_function_id=options.middleware_function_id,
                listener=options.name,
            )
        self.conn = Connection(
            self._send,
            self._close,
            ip_address=peer[0] if isinstance(peer, tuple) else None,
            headers=headers,
            session=session,
        )
        self.workers.add(self.conn)
        self.engine.connect(self.conn)

    def _close(self, code: int | WSCloseCode, reason: str) -> None:
        super()._close(code, reason)
        if self.conn is not None:
            self.engine.disconnect(self.conn)  # nothing more is routed to a closing socket

    def _refuse(self, code: str, message: str, reason: str) -> None:
        """Send an ``error`` frame with the full message, then close with a short reason."""
        log.warning("refused a worker connection: %s", message)
        frame = protocol.encode(protocol.ErrorFrame(error={"code": code, "message": message}))
        self.transport.send(WSMsgType.TEXT, frame)
        close = WSCloseCode.POLICY_VIOLATION if code == errors.AUTH_ERROR else WSCloseCode.TRY_AGAIN_LATER
        self._close(close, f"{code}: {reason}")

    def _send(self, data: bytes) -> None:
        transport = self.transport
        queued = self.sock.get_write_buffer_size()
        transport.send(_TEXT, data)
        # Judge what was queued *before* this frame: one reply larger than the
        # limit is fine; frames piling up behind unread ones are not.
        limit = self.send_limit
        if queued <= limit:
            if self.over_since is not None:
                self.over_since = None
            return
        now = time.monotonic()
        if self.over_since is None:
            self.over_since = now
        if (now - self.over_since < SLOW_READER_GRACE_S and queued <= 2 * limit) or not (
            self.conn is not None and self.conn.open
        ):
            return
        log.warning(
            "dropping worker %s: %d bytes of frames it has not read (limits.max_send_buffer_bytes = %d)",
            self.conn.name,
            queued,
            limit,
        )
        transport.send_close(
            WSCloseCode.POLICY_VIOLATION,
            _reason(f"{errors.LIMIT_EXCEEDED}: worker not reading its frames (limits.max_send_buffer_bytes)"),
        )
        transport.disconnect(graceful=False)

    def pause_writing(self) -> None:
        # The worker is not reading what we send: stop reading its requests,
        # and hold the ones already read, so replies stop growing right away.
        if self.held is None:
            self.held = deque()
            self.transport.underlying_transport.pause_reading()

    def resume_writing(self) -> None:
        held, self.held = self.held, None
        conn = self.conn
        while held and conn is not None and conn.open:
            self.engine.handle(conn, held.popleft())
            if self.held is not None:  # paused again by these replies
                self.held = held
                return
        if not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        if msg_type is _BINARY and protocol.is_telemetry(payload):
            _ingest(payload, self.engine)  # old SDKs use "/"
            return
        if not payload.isascii() and not self._check_utf8(msg_type, payload):
            return
        if self.held is not None:
            self.held.append(payload)
            return
        self.engine.handle(conn, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if self.conn is not None:
            self.workers.discard(self.conn)
            self.engine.disconnect(self.conn)


class _TelemetryListener(_Base):
    """The SDKs' telemetry socket on ``/otel``; never a worker."""

    def __init__(self, engine: Engine, options: TransportOptions, live: set[WSTransport]) -> None:
        super().__init__(options, live)
        self.engine = engine

    def on_message(self, msg_type: WSMsgType, payload: bytes) -> None:
        if msg_type is WSMsgType.BINARY:
            _ingest(payload, self.engine)


def _ingest(payload: bytes, engine: Engine) -> None:
    try:
        telemetry.ingest(payload, engine.function_for_trace)
    except Exception as exc:  # telemetry is best effort; a bad export must not cost the socket
        log.debug("ignoring an unusable telemetry frame: %r", exc)


def _authorized(headers: dict[str, str], token: str) -> bool:
    presented = headers.get("authorization", "")
    if presented.lower().startswith("bearer "):
        presented = presented[7:].strip()
    else:
        presented = headers.get("x-iii-token", "")
    return hmac.compare_digest(presented.encode(), token.encode())


async def serve(
    engine: Engine,
    host: str,
    port: int,
    options: TransportOptions,
    live: set[WSTransport] | None = None,
    *,
    start_serving: bool = True,
) -> asyncio.Server:
    """Bind and start listening; returns the server (close it to stop accepting).

    ``live`` collects the open sockets, for ``close_all`` at shutdown. With
    ``start_serving=False`` the port is bound but nothing is accepted until
    ``await server.start_serving()``.
    """
    # Imported here: channel_sockets builds on this module's listener base.
    from pyiii.engine import channel_sockets

    sockets: set[WSTransport] = set() if live is None else live
    granted: weakref.WeakKeyDictionary[Any, rbac.Grants] = weakref.WeakKeyDictionary()
    workers: set[Connection] = set()

    def route(request: WSUpgradeRequest) -> WSListener | None:
        path = request.path.split(b"?", 1)[0]
        if path == b"/":
            return _WorkerListener(engine, options, sockets, request, granted, workers)
        if path == b"/otel":
            return _TelemetryListener(engine, options, sockets)
        if path.startswith(channel_sockets.PREFIX):
            return channel_sockets.route(request, engine.channels, options, sockets)
        return None  # picows answers 404

    policy = options.rbac
    if policy is not None and policy.auth_function_id is not None:
        return await _serve_authenticating(engine, host, port, options, route, granted, policy, start_serving)
    return await ws_create_server(
        route,
        host,
        port,
        max_frame_size=options.max_frame_bytes,
        websocket_handshake_timeout=options.handshake_timeout_s,
        enable_auto_pong=True,
        logger_name="transport",
        start_serving=start_serving,
    )


async def _serve_authenticating(
    engine: Engine,
    host: str,
    port: int,
    options: TransportOptions,
    route: Any,
    granted: weakref.WeakKeyDictionary[Any, rbac.Grants],
    policy: rbac.RbacPolicy,
    start_serving: bool,
) -> asyncio.Server:
    """A listener whose upgrades to ``/`` wait for the auth function (auth_gate.py)."""
    from picows import picows as core  # the protocol class ws_create_server builds on
    from picows.api import _resolve_logger

    logger = _resolve_logger("transport", "server")
    lines = _LogBudget()

    def websocket() -> asyncio.BaseProtocol:
        # The arguments ws_create_server passes (picows 2.x), with serve()'s settings.
        proto: asyncio.BaseProtocol = core.WSProtocol(  # type: ignore[attr-defined]
            None,
            None,
            False,
            route,
            logger,
            True,
            options.handshake_timeout_s,
            False,
            20.0,
            20.0,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,
            options.max_frame_bytes,
            None,
            16 * 1024,
        )
        return proto

    async def decide(headers: dict[str, str], query: str, ip: str) -> rbac.Grants:
        if options.auth_token is not None and not _authorized(headers, options.auth_token):
            raise Rejected(
                401, f"{errors.AUTH_ERROR}: missing or wrong token (send Authorization: Bearer <token>)"
            )
        if not engine.accepting:
            raise Rejected(503, f"{errors.SHUTTING_DOWN}: the engine is shutting down")
        # Upgrades waiting on the auth function at once are bounded like connections
        # (a hanging auth function must not let waiting sockets pile up).
        if waiting[0] >= options.max_connections:
            if lines.allow():
                log.warning(
                    "refused a worker connection on %s: %d upgrades already wait for %s",
                    options.name,
                    waiting[0],
                    policy.auth_function_id,
                )
            raise Rejected(503, f"{errors.LIMIT_EXCEEDED}: too many connections waiting; try again later")
        waiting[0] += 1
        try:
            return await engine.access.authenticate(policy, rbac.auth_input(headers, query, ip))
        except Refusal as refusal:
            if lines.allow():
                log.warning(
                    "refused a worker connection on %s from %s: %s", options.name, ip or "?", refusal.detail
                )
            raise Rejected(refusal.status, f"{refusal.code}: {refusal.message}") from None
        finally:
            waiting[0] -= 1

    waiting = [0]
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: AuthGate(websocket, decide, granted, options.handshake_timeout_s),
        host,
        port,
        start_serving=start_serving,
    )


async def close_all(live: set[WSTransport], code: int, reason: str, timeout: float = CLOSE_WAIT_S) -> None:
    """Close every socket still open (workers were closed by the engine; telemetry ones are
    closed here), wait up to ``timeout`` for the peers to answer, then cut the rest."""
    for transport in list(live):
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(code), _reason(reason))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while live and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for transport in list(live):
        transport.disconnect()
    await asyncio.sleep(0)
