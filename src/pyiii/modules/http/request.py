"""What a function served over HTTP receives: the request object. No I/O.

``{path_params, query_params, headers, method, path, body, trigger, context,
request_body?, response?}``: header names are lower-case (a repeated header's
values joined with ", "), a query key given once maps to a string and one
given several times to the list of its values, ``path`` is the route's
``api_path`` as registered, and ``body`` is the parsed JSON when the content
type is JSON (``None`` when it does not parse; the raw bytes are still on
``request_body``). ``request_body`` / ``response`` are channel refs, present
when the engine has channels.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec

from pyiii.modules.http.routes import RouteSpec

_decode = msgspec.json.decode


def query_params(query_string: str) -> dict[str, str | list[str]]:
    """``a=1&b=2&b=3`` -> ``{"a": "1", "b": ["2", "3"]}`` (percent- and ``+``-decoded)."""
    out: dict[str, str | list[str]] = {}
    if not query_string:
        return out
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        have = out.get(key)
        if have is None:
            out[key] = value
        elif isinstance(have, list):
            have.append(value)
        else:
            out[key] = [have, value]
    return out


def header_map(items: list[tuple[str, str]]) -> dict[str, str]:
    """Header pairs -> one lower-case name each (repeats joined with ", ")."""
    out: dict[str, str] = {}
    for name, value in items:
        name = name.lower()
        have = out.get(name)
        out[name] = value if have is None else f"{have}, {value}"
    return out


def is_json(content_type: str | None) -> bool:
    """``application/json`` or any ``+json`` media type (parameters ignored)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def parse_body(body: bytes, content_type: str | None) -> Any:
    """The JSON body as ``Raw`` (checked, passed on as sent), or None (not JSON, empty, or malformed).

    Checking is a decode; handing on the client's own text saves encoding the
    value again into the invocation.
    """
    if not body or not is_json(content_type):
        return None
    try:
        _decode(body)
    except msgspec.DecodeError:
        return None
    return msgspec.Raw(body)


def build(
    spec: RouteSpec,
    path_params: dict[str, str],
    query: dict[str, str | list[str]],
    headers: dict[str, str],
    method: str,
    body: Any,
    context: dict[str, Any],
) -> dict[str, Any]:
    """The request object (without channel refs; the module adds those)."""
    return {
        "path_params": path_params,
        "query_params": query,
        "headers": headers,
        "method": method,
        "path": spec.api_path,
        "body": body,
        "trigger": {"type": "http", "path": spec.api_path, "method": spec.method},
        "context": context,
    }


def middleware_input(
    path_params: dict[str, str],
    query: dict[str, str | list[str]],
    headers: dict[str, str],
    method: str,
    context: dict[str, Any],
) -> dict[str, Any]:
    """What a middleware function receives (no body: it runs before the body is handed on)."""
    return {
        "phase": "preHandler",
        "request": {
            "path_params": path_params,
            "query_params": query,
            "headers": headers,
            "method": method,
        },
        "context": context,
    }
