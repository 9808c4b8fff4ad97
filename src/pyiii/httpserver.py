"""HTTP/1.1 listener: the only module that imports the HTTP server library.

pyiii embeds granian (a Rust HTTP server, hyper underneath) in the engine's own
event loop through its RSGI interface: granian parses requests, enforces the
header limits (400 for a malformed request line or header; 431 for more
than 100 header fields or about 400 KiB of them; 414 for an over-long URI;
each closes the connection)
and writes responses on its own I/O thread; each request's handler runs as a
task on our loop. docs/decisions.md has the measurements behind the choice.

Everything above this file sees :class:`Exchange` (one request and its
answer) and :class:`HttpServer` (listen, port, stop), so a different library
would change this file only. The HTTP module serves user routes through it;
the console and ``/metrics`` can reuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("pyiii.http")

# How long a stop waits for requests in flight before their connections are cut.
STOP_GRACE_S = 5.0


class BodyTooLarge(Exception):
    """The request body is larger than the limit the reader was given."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit
        self.declared = declared


class Exchange:
    """One HTTP request and the means to answer it (exactly once)."""

    __slots__ = ("_proto", "_scope", "answered", "method", "path", "query_string", "status")

    def __init__(self, scope: Any, proto: Any) -> None:
        self._scope = scope
        self._proto = proto
        self.method: str = scope.method
        self.path: str = scope.path
        self.query_string: str = scope.query_string
        self.answered = False
        self.status = 0  # the status sent, once answered

    @property
    def client(self) -> str:
        """The client's address (``host:port``)."""
        client: str = self._scope.client
        return client

    def headers(self) -> list[tuple[str, str]]:
        """Request headers in arrival order; names are lower-case."""
        items: list[tuple[str, str]] = self._scope.headers.items()
        return items

    def header(self, name: str) -> str | None:
        """One request header by lower-case name (the first, if repeated)."""
        value: str | None = self._scope.headers.get(name)
        return value

    async def read_body(self, limit: int) -> bytes:
        """The whole request body; BodyTooLarge as soon as it passes ``limit`` bytes.

        A declared ``Content-Length`` over the limit fails before anything is
        read; a chunked body fails at the first chunk that crosses it, and
        nothing more is read.
        """
        return await self.start_body(limit)

    def start_body(self, limit: int) -> Coroutine[Any, Any, bytes]:
        """``read_body`` in two steps: the read starts now, the awaitable gives the body.

        A body of declared length is asked of granian at once, which fetches
        it on its own threads, so the caller can do other work meanwhile. A
        declared length over ``limit`` raises BodyTooLarge here; a chunked body
        is read (and checked) when awaited; a request with neither (a GET) has
        no body, and granian is not asked.
        """
        declared = self.header("content-length")
        if declared is not None and declared.isdigit():
            size = int(declared)
            if size > limit:
                raise BodyTooLarge(limit, size)
            if size == 0:
                return _no_body()
            return _sized(self._proto(), limit)
        if declared is None and self.header("transfer-encoding") is None:
            # No length and not chunked: a request has no body (RFC 9112, 6.3),
            # and asking granian would be a trip through its threads for nothing.
            return _no_body()
        return self._chunked(limit)

    async def _chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in self._proto:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def disconnected(self) -> Awaitable[None]:
        """Done when the client has gone away (closed or reset its connection).

        granian hands out a future-like object: ``asyncio.ensure_future`` takes it
        as it is, without a task.
        """
        waiter: Awaitable[None] = self._proto.client_disconnect()
        return waiter

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send a complete response."""
        self.answered = True
        self.status = status
        self._proto.response_bytes(status, headers, body)

    def stream(self, status: int, headers: list[tuple[str, str]]) -> Callable[[bytes], Awaitable[None]]:
        """Start a streamed (chunked) response; returns ``send(chunk)``. Ends when the handler returns."""
        self.answered = True
        self.status = status
        transport = self._proto.response_stream(status, headers)
        send: Callable[[bytes], Awaitable[None]] = transport.send_bytes
        return send


async def _no_body() -> bytes:
    return b""


async def _sized(reading: Awaitable[bytes], limit: int) -> bytes:
    body = await reading
    if len(body) > limit:  # a client that sent more than it declared
        raise BodyTooLarge(limit)
    return body


Handler = Callable[[Exchange], Awaitable[None]]


class HttpServer:
    """An HTTP listener on ``host:port`` calling ``handler`` for every request.

    ``port`` 0 picks a free port; :attr:`port` tells which once started.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        name: str = "http",
    ) -> None:
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.name = name
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} server is not listening")
        return self._port

    async def _app(self, scope: Any, proto: Any) -> None:
        exchange = Exchange(scope, proto)
        try:
            await self.handler(exchange)
        except Exception:
            log.exception("%s handler failed for %s %s", self.name, exchange.method, exchange.path)
            if not exchange.answered:
                exchange.respond(500, [("content-type", "text/plain")], b"internal server error")

    async def start(self) -> None:
        """Bind and start serving; OSError (with the address) if the port cannot be bound."""
        from granian.constants import HTTPModes, Interfaces
        from granian.server.embed import Server

        # granian announces its embedded mode as experimental on every start;
        # our own log line says where we listen.
        logging.getLogger("_granian").setLevel(logging.ERROR)
        logging.getLogger("granian").setLevel(logging.ERROR)
        self._check_bindable()
        server = Server(
            self._app,
            address=self.host,
            port=self.requested_port,
            interface=Interfaces.RSGI,
            http=HTTPModes.http1,
            websockets=False,
            log_enabled=False,
        )
        server.workers_kill_timeout = int(STOP_GRACE_S)
        bound: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def started() -> None:
            if not bound.done():
                bound.set_result(None)

        server.on_startup(started)
        self._server = server
        self._task = asyncio.create_task(server.serve(), name=f"{self.name}-server")
        done, _ = await asyncio.wait({self._task, bound}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            exc = self._task.exception()
            raise OSError(f"cannot listen on {self.host}:{self.requested_port}: {exc}")
        self._port = self._bound_port(server)

    def _check_bindable(self) -> None:
        # granian binds with SO_REUSEPORT, so a port another process holds the
        # same way would be shared silently; bind a probe first for a clear error.
        if self.requested_port == 0:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((self.host, self.requested_port))
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on {self.host}:{self.requested_port}: {exc.strerror}"
                ) from None

    def _bound_port(self, server: Any) -> int:
        if self.requested_port:
            return self.requested_port
        fd = server._ssp.build().get_fd()  # the shared listener granian's worker serves
        with contextlib.closing(socket.socket(fileno=os.dup(fd))) as sock:
            port: int = sock.getsockname()[1]
        return port

    async def stop(self) -> None:
        """Stop accepting; wait up to STOP_GRACE_S for requests in flight, then close."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.signal_handler_interrupt()
        try:
            await asyncio.wait_for(task, STOP_GRACE_S * 2)
        except TimeoutError:
            log.warning("%s server did not stop within %gs", self.name, STOP_GRACE_S * 2)
        except Exception:
            log.exception("%s server stopped with an error", self.name)
