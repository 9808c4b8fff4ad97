"""Turning a function's answer into an HTTP response, and the error envelope. No I/O.

A function answers by returning ``{status_code = 200, headers, body = {}}``
(``headers`` as ``{name: value}`` or ``["Name: value"]``), or by streaming on
its ``response`` channel: text frames ``{"type":"set_status","status_code":N}``
and ``{"type":"set_headers","headers":{...}}``, then binary chunks, then close.
Errors the server makes itself use one shape:
``{"error": {"code", "message", "error_id"?}}`` (``error_id`` on 5xx, also in
the engine log).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import msgspec

_encode = msgspec.json.encode
JSON = "application/json"
# RFC 9110 token characters for a header name; a value may not hold CR, LF or NUL.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
# Framing is the server's business: a function cannot set these.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class InvalidResponse(ValueError):
    """A function's answer that cannot be sent; the message says what is wrong."""


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def new_error_id() -> str:
    """12 hex characters, unique enough to find one request in the log."""
    return secrets.token_hex(6)


def envelope(code: str, message: str, error_id: str | None = None, **extra: Any) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if error_id is not None:
        error["error_id"] = error_id
    return _encode({"error": error, **extra})


def error_reply(status: int, code: str, message: str, error_id: str | None = None, **extra: Any) -> Reply:
    return Reply(status, [("content-type", JSON)], envelope(code, message, error_id, **extra))


def _header_value(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def header_pairs(value: Any) -> list[tuple[str, str]]:
    """``{k: v}`` or ``["K: v"]`` -> valid (name, value) pairs; others are dropped."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for name, raw in value.items():
            text = _header_value(raw)
            if text is not None:
                pairs.append((str(name).strip(), text.strip()))
    elif isinstance(value, list):
        for line in value:
            if isinstance(line, str) and ":" in line:
                name, _, text = line.partition(":")
                pairs.append((name.strip(), text.strip()))
    return [
        (n, v)
        for n, v in pairs
        if _NAME.fullmatch(n) and not _BAD_VALUE.search(v) and n.lower() not in _FRAMING
    ]


def status_of(value: Any, default: int = 200) -> int:
    """A response status: absent -> ``default``; anything but an integer in 100..599 is refused."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise InvalidResponse(f"status_code must be an integer in 100..599, got {value!r}")
    return value


def _content_type(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "content-type":
            return value
    return None


def from_value(value: Any) -> Reply:
    """The response for a function's return value ``{status_code, headers, body}``.

    With no content type the body is sent as JSON (and says so). With one, a
    string body is sent as its text, a null body as nothing, and any other
    value as its JSON text.
    """
    if not isinstance(value, dict):
        value = {}
    status = status_of(value.get("status_code"))
    headers = header_pairs(value.get("headers"))
    body = value.get("body", {})
    declared = _content_type(headers)
    if declared is None:
        return Reply(status, [*headers, ("content-type", JSON)], _encode(body))
    if isinstance(body, str):
        return Reply(status, headers, body.encode())
    if body is None:
        return Reply(status, headers, b"")
    return Reply(status, headers, _encode(body))


@dataclass(slots=True)
class StreamHead:
    """Status and headers gathered from a response channel's text frames."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def apply(self, text: str) -> None:
        """Apply one control frame; unknown or malformed ones are ignored."""
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "set_status":
            code = msg.get("status_code")
            if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
                self.status = code
        elif kind == "set_headers":
            for name, value in header_pairs(msg.get("headers")):
                self.headers[name] = value

    def header_list(self) -> list[tuple[str, str]]:
        return list(self.headers.items())
