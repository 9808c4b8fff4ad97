"""Worker telemetry: OTLP/JSON exports sent by the SDKs' ``Logger``.

The SDKs send each export as one binary frame, ``LOGS``/``OTLP``/``MTRC``
followed by OTLP/JSON. Log records are printed on the engine's console so a
worker's ``logger.info(...)`` shows up where the user runs the engine; traces
and metrics are accepted and dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec

worker_log = logging.getLogger("pyiii.worker")
TraceLookup = Callable[[str], str | None]

_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}


def any_value(value: Any) -> Any:
    """Turn an OTLP ``AnyValue`` into a plain Python value."""
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "arrayValue" in value:
        return [any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes(items: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list -> dict."""
    if not isinstance(items, list):
        return {}
    return {
        kv["key"]: any_value(kv.get("value"))
        for kv in items
        if isinstance(kv, dict) and isinstance(kv.get("key"), str)
    }


def _level(record: dict[str, Any]) -> tuple[int, str]:
    text = str(record.get("severityText") or "").upper()
    if text in _LEVELS:
        return _LEVELS[text], text
    number = record.get("severityNumber")
    if isinstance(number, int) and number > 0:
        # OTel severity numbers: 1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17+ error.
        names = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
        name = names[min((number - 1) // 4, 4)]
        return _LEVELS[name], name
    return logging.INFO, "INFO"


def log_lines(payload: bytes, function_for_trace: TraceLookup | None = None) -> list[tuple[int, str]]:
    """Format every log record of a ``LOGS`` export as (level, console line).

    The official SDKs put no function id in a log record; when one is
    missing, ``function_for_trace`` maps the record's trace id to the
    function that was running in that trace, if the engine saw it.
    """
    return [(level, line) for level, line, _, _ in log_records(payload, function_for_trace)]


def log_records(
    payload: bytes, function_for_trace: TraceLookup | None = None
) -> list[tuple[int, str, str, str]]:
    """Like :func:`log_lines`, with the worker's service name and the function id of each line."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return []
    lines: list[tuple[int, str, str, str]] = []
    for resource_logs in doc.get("resourceLogs", []) if isinstance(doc, dict) else []:
        resource = attributes((resource_logs.get("resource") or {}).get("attributes"))
        service = resource.get("service.name")
        for scope_logs in resource_logs.get("scopeLogs", []):
            for record in scope_logs.get("logRecords", []):
                level, name = _level(record)
                attrs = attributes(record.get("attributes"))
                data = attrs.pop("log.data", None)
                if isinstance(data, str):
                    with contextlib.suppress(msgspec.DecodeError):
                        data = msgspec.json.decode(data)
                function_id = attrs.pop("function_id", None)
                trace_id = record.get("traceId") or attrs.get("trace_id")
                if function_id is None and function_for_trace is not None and isinstance(trace_id, str):
                    function_id = function_for_trace(trace_id)
                for noise in ("trace_id", "span_id", "service.name"):
                    attrs.pop(noise, None)
                body = any_value(record.get("body"))
                parts = [f"[{name}]"]
                if service:
                    parts.append(f"{service}")
                if function_id:
                    parts.append(f"{function_id}:")
                parts.append(str(body) if body is not None else "")
                if data not in (None, {}, ""):
                    parts.append(msgspec.json.encode(data).decode())
                extra = {k: v for k, v in attrs.items() if not k.startswith(("code.", "telemetry."))}
                if extra:
                    parts.append(msgspec.json.encode(extra).decode())
                lines.append((level, " ".join(parts), str(service or ""), str(function_id or "")))
    return lines


def ingest(frame: bytes, function_for_trace: TraceLookup | None = None) -> None:
    """Handle one telemetry frame (prefix + OTLP/JSON)."""
    if frame[:4] == b"LOGS":
        for level, line, service, function_id in log_records(frame[4:], function_for_trace):
            # The console's log view filters on these.
            extra = {"iii_worker": service, "iii_function": function_id}
            worker_log.log(level, "%s", line, extra=extra)
