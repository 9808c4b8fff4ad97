"""Logger: structured log lines that reach the engine's console.

Like the official SDKs, records travel as OTLP/JSON over a second WebSocket to
``<engine url>/otel``, one binary frame per export: ASCII ``LOGS`` followed by
an ``ExportLogsServiceRequest``. The socket belongs to a worker (one
``TelemetrySink`` per worker, opened on the first log line); a ``Logger``
uses the most recently created live worker. With no worker, with telemetry
disabled (``OTEL_ENABLED=false``) or while the engine is unreachable, lines go
to Python ``logging`` instead so nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections import defaultdict
from typing import Any, Final

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

__all__ = ["Logger", "TelemetrySink", "current_function_id"]

log = logging.getLogger("pyiii.sdk.logger")
_fallback = logging.getLogger("pyiii.log")

#: The id of the function whose handler is running; set by the worker.
current_function_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pyiii_current_function_id", default=None
)

FLUSH_DELAY_S: Final = 0.05
RETRY_AFTER_S: Final = 5.0
MAX_BUFFERED: Final = 10_000

# OTel severity numbers (logs data model): DEBUG=5, INFO=9, WARN=13, ERROR=17.
_LEVELS: Final = {
    "DEBUG": (5, logging.DEBUG),
    "INFO": (9, logging.INFO),
    "WARN": (13, logging.WARNING),
    "ERROR": (17, logging.ERROR),
}
_json = msgspec.json.Encoder(enc_hook=str)  # never fail a log line on an odd value

Record = dict[str, Any]


def _otel_enabled() -> bool:
    return os.environ.get("OTEL_ENABLED", "").strip().lower() not in ("false", "0", "no", "off")


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _to_logging(record: Record, service: str | None) -> None:
    """Write an OTLP record through Python logging (the fallback path)."""
    level = _LEVELS.get(record["severityText"], (9, logging.INFO))[1]
    extra = " ".join(f"{a['key']}={a['value']['stringValue']}" for a in record.get("attributes", ()))
    prefix = f"[{service}] " if service else ""
    _fallback.log(level, "%s%s%s", prefix, record["body"]["stringValue"], f" {extra}" if extra else "")


class _SinkListener(WSListener):
    def __init__(self, sink: TelemetrySink) -> None:
        self._sink = sink

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The engine sends nothing useful on /otel; only honour a close.
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._sink._on_disconnected(transport)


class TelemetrySink:
    """A worker's lazily opened, batching ``/otel`` socket. Loop-confined."""

    def __init__(
        self,
        url: str,
        loop: asyncio.AbstractEventLoop,
        service_name: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.service_name = service_name
        self._loop = loop
        self._headers = headers
        self._buffer: list[tuple[str, Record]] = []
        self._transport: WSTransport | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._retry_at = 0.0
        self._closed = False

    def emit(self, service: str | None, record: Record) -> None:
        """Queue one record; callable from any thread."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._add(service, record)
            return
        try:
            self._loop.call_soon_threadsafe(self._add, service, record)
        except RuntimeError:  # loop closed: the worker is gone
            _to_logging(record, service)

    def _add(self, service: str | None, record: Record) -> None:
        if self._closed:
            _to_logging(record, service)
            return
        if len(self._buffer) >= MAX_BUFFERED:
            _to_logging(record, service)
            return
        self._buffer.append((service or self.service_name, record))
        if self._transport is not None:
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_later(FLUSH_DELAY_S, self.flush)
        elif self._connecting is None:
            if self._loop.time() < self._retry_at:
                self._dump_to_logging()
            else:
                self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            transport, _ = await ws_connect(
                lambda: _SinkListener(self),
                self.url,
                extra_headers=self._headers,
                websocket_handshake_timeout=5,
                logger_name="pyiii.otel",
            )
        except Exception as exc:
            log.debug("telemetry socket %s unavailable: %s", self.url, exc)
            self._retry_at = self._loop.time() + RETRY_AFTER_S
            self._dump_to_logging()
            return
        finally:
            self._connecting = None
        if self._closed:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        self._transport = transport
        self.flush()

    def _on_disconnected(self, transport: WSTransport) -> None:
        if self._transport is transport:
            self._transport = None

    def _dump_to_logging(self) -> None:
        buffer, self._buffer = self._buffer, []
        for service, record in buffer:
            _to_logging(record, service)

    def flush(self) -> None:
        """Send everything buffered as one ``LOGS`` frame (loop thread only)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._buffer or self._transport is None:
            return
        by_service: dict[str, list[Record]] = defaultdict(list)
        for service, record in self._buffer:
            by_service[service].append(record)
        self._buffer = []
        export = {
            "resourceLogs": [
                {
                    "resource": {"attributes": [_attr("service.name", service)]},
                    "scopeLogs": [{"scope": {"name": "pyiii"}, "logRecords": records}],
                }
                for service, records in by_service.items()
            ]
        }
        self._transport.send(WSMsgType.BINARY, b"LOGS" + _json.encode(export))

    async def close(self) -> None:
        """Flush what is buffered and close the socket."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        self.flush()
        self._dump_to_logging()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transport.wait_disconnected(), 2)


# The most recently created live worker's sink is last. Workers add and remove
# themselves; Logger only reads.
_sinks: list[TelemetrySink] = []


def add_sink(sink: TelemetrySink) -> None:
    _sinks.append(sink)


def remove_sink(sink: TelemetrySink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


class Logger:
    """Structured logger whose lines show up in the engine's console.

    ``attrs`` (any JSON-able value) travels as the ``log.data`` attribute;
    inside a handler the running function's id is added as ``function_id``.
    Set ``PYIII_LOG_LOCAL=1`` to also write every line to Python ``logging``.
    """

    def __init__(self, service_name: str | None = None) -> None:
        self.service_name = service_name

    def debug(self, message: str, attrs: Any = None) -> None:
        self._emit("DEBUG", message, attrs)

    def info(self, message: str, attrs: Any = None) -> None:
        self._emit("INFO", message, attrs)

    def warn(self, message: str, attrs: Any = None) -> None:
        self._emit("WARN", message, attrs)

    warning = warn

    def error(self, message: str, attrs: Any = None) -> None:
        self._emit("ERROR", message, attrs)

    def _emit(self, level: str, message: str, attrs: Any) -> None:
        now = str(time.time_ns())
        attributes = []
        if attrs is not None:
            attributes.append(_attr("log.data", _json.encode(attrs).decode()))
        function_id = current_function_id.get()
        if function_id is not None:
            attributes.append(_attr("function_id", function_id))
        record: Record = {
            "timeUnixNano": now,
            "observedTimeUnixNano": now,
            "severityNumber": _LEVELS[level][0],
            "severityText": level,
            "body": {"stringValue": str(message)},
            "attributes": attributes,
        }
        local = os.environ.get("PYIII_LOG_LOCAL") == "1"
        sink = _sinks[-1] if _sinks else None
        if sink is None or not _otel_enabled():
            _to_logging(record, self.service_name)
            return
        if local:
            _to_logging(record, self.service_name)
        sink.emit(self.service_name, record)
