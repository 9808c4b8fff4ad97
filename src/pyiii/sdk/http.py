"""Serving a function over HTTP from the pyiii SDK: ``@worker.http("POST", "/todos")``.

The decorated handler receives an :class:`HttpRequest` and returns what the
client should get:

* an :class:`HttpResponse` (``HttpResponse(201, {"id": 1})``,
  ``HttpResponse.text("hi")``, ``HttpResponse(204)``) for full control;
* a ``dict`` / ``list`` / number / bool: sent as a JSON body with status 200;
* a ``(body, status)`` or ``(body, status, headers)`` tuple;
* a ``str``: sent as ``text/plain``; ``None``: 204 No Content;
* ``HttpResponse.streaming(chunks, ...)`` with an async iterable of
  ``bytes``/``str``: sent as it is produced (on the request's ``response``
  channel), e.g. server-sent events or a large download.

``await request.read_body()`` gives the raw request body (any content type).

It registers one function (id ``http::<METHOD> <path>`` unless ``id=`` is
given) and one ``http`` trigger; both are replayed on reconnect like any
registration. The engine's ``iii-http`` module must be enabled.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiii.sdk.worker import Worker

__all__ = ["HttpRequest", "HttpResponse", "http_route"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request as the engine hands it to the function.

    ``path`` is the route's pattern (``/todos/:id``); the concrete values of its
    parameters are in ``path_params``. ``query`` maps a key given once to a
    string and a repeated key to a list. Header names are lower-case. ``body``
    is the parsed JSON body (None when the request is not JSON or does not
    parse). ``context`` holds what middleware added. ``raw`` is the whole
    request object, channel refs included.
    """

    method: str
    path: str
    path_params: dict[str, str]
    query: dict[str, Any]
    headers: dict[str, str]
    body: Any
    context: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)
    worker: Worker | None = field(default=None, repr=False)

    @classmethod
    def from_wire(cls, data: Any, worker: Worker | None = None) -> HttpRequest:
        data = data if isinstance(data, dict) else {}
        return cls(
            method=str(data.get("method") or "GET"),
            path=str(data.get("path") or ""),
            path_params=dict(data.get("path_params") or {}),
            query=dict(data.get("query_params") or {}),
            headers=dict(data.get("headers") or {}),
            body=data.get("body"),
            context=dict(data.get("context") or {}),
            raw=data,
            worker=worker,
        )

    async def read_body(self) -> bytes:
        """The raw request body, read from the request's ``request_body`` channel."""
        ref = self.raw.get("request_body")
        if self.worker is None or not isinstance(ref, dict):
            raise RuntimeError("this request carries no request_body channel (the engine has no channels)")
        return await self.worker.open_reader(ref).read_all()

    def header(self, name: str, default: str | None = None) -> str | None:
        """A request header, by case-insensitive name."""
        return self.headers.get(name.lower(), default)


@dataclass(slots=True)
class HttpResponse:
    """A complete response: status, JSON-able (or text) body, headers."""

    status_code: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: AsyncIterable[bytes | str] | None = field(default=None, repr=False)

    @classmethod
    def streaming(
        cls,
        chunks: AsyncIterable[bytes | str],
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """A response sent chunk by chunk as ``chunks`` yields them (``str`` is sent as UTF-8)."""
        return cls(status_code, None, dict(headers or {}), chunks)

    @classmethod
    def text(
        cls, text: str, status_code: int = 200, content_type: str = "text/plain; charset=utf-8"
    ) -> HttpResponse:
        return cls(status_code, text, {"content-type": content_type})

    def to_wire(self) -> dict[str, Any]:
        if self.body is None and not any(k.lower() == "content-type" for k in self.headers):
            # No body: send nothing rather than the JSON text "null".
            headers = {**self.headers, "content-type": "text/plain"}
            return {"status_code": self.status_code, "headers": headers, "body": None}
        return {"status_code": self.status_code, "headers": dict(self.headers), "body": self.body}


def to_wire(value: Any) -> dict[str, Any]:
    """A handler's return value as the engine's ``{status_code, headers, body}``."""
    if isinstance(value, HttpResponse):
        return value.to_wire()
    if value is None:
        return HttpResponse(204).to_wire()
    if isinstance(value, str):
        return HttpResponse.text(value).to_wire()
    if isinstance(value, tuple) and 2 <= len(value) <= 3 and isinstance(value[1], int):
        headers = dict(value[2]) if len(value) == 3 else {}
        if isinstance(value[0], str) and not any(k.lower() == "content-type" for k in headers):
            headers["content-type"] = "text/plain; charset=utf-8"
        return {"status_code": value[1], "headers": headers, "body": value[0]}
    return {"status_code": 200, "body": value}


def http_route(
    worker: Worker,
    method: str,
    path: str,
    *,
    id: str | None = None,
    condition: str | None = None,
    middleware: list[str] | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The decorator behind :meth:`Worker.http`."""
    verb = method.strip().upper()
    if verb not in METHODS:
        raise ValueError(f"unknown HTTP method {method!r}; valid: {', '.join(METHODS)}")
    if not path or not path.strip():
        raise ValueError("path must be a non-empty string such as '/todos/:id'")
    function_id = id or f"http::{verb} {path}"

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def serve_async(data: Any) -> dict[str, Any] | None:
                request = HttpRequest.from_wire(data, worker)
                value = await handler(request)
                if isinstance(value, HttpResponse) and value.chunks is not None:
                    await _stream(worker, request, value)
                    return None
                return to_wire(value)

            served: Callable[..., Any] = serve_async
        else:

            @functools.wraps(handler)
            def serve_sync(data: Any) -> dict[str, Any]:
                value = handler(HttpRequest.from_wire(data, worker))
                if isinstance(value, HttpResponse) and value.chunks is not None:
                    raise TypeError("streaming responses need an async handler (async def)")
                return to_wire(value)

            served = serve_sync
        worker.register_function(function_id, served, description=description)
        config: dict[str, Any] = {"api_path": path, "http_method": verb}
        if condition:
            config["condition_function_id"] = condition
        if middleware:
            config["middleware_function_ids"] = list(middleware)
        worker.register_trigger({"type": "http", "function_id": function_id, "config": config})
        return handler

    return decorate


async def _stream(worker: Worker, request: HttpRequest, response: HttpResponse) -> None:
    """Write ``response`` to the request's ``response`` channel: status, headers, chunks, close."""
    ref = request.raw.get("response")
    if not isinstance(ref, dict):
        raise RuntimeError("this request carries no response channel (the engine has no channels)")
    assert response.chunks is not None
    async with worker.open_writer(ref) as writer:
        await writer.send_json({"type": "set_status", "status_code": response.status_code})
        if response.headers:
            await writer.send_json({"type": "set_headers", "headers": response.headers})
        async for chunk in response.chunks:
            await writer.send_bytes(chunk.encode() if isinstance(chunk, str) else chunk)
