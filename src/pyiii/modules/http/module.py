"""The HTTP module: serves ``http`` triggers on an HTTP port.

Per request: CORS preflight (answered here) -> a slot under
``concurrency_request_limit`` (requests beyond it wait) -> route match (404)
-> body, bounded by ``max_body_bytes`` (413) -> global middleware -> the
``request_body`` / ``response`` channel refs (reserved: a channel is made only
if the function opens it) -> condition (422 when it answers ``false``) -> the
route's middleware -> the function. Everything from the
route match to the first byte of the response is bounded by
``default_timeout`` (504); a client that goes away cancels the invocation and
its channels. The function answers with a returned value or on its
``response`` channel (response.py); the first of the two to arrive wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.engine.channels import READ, WRITE, Channel, ChannelClosed, ChannelManager, wake_first
from pyiii.engine.module import Module, TriggerProvider
from pyiii.errors import ConfigError, IIIError
from pyiii.httpserver import BodyTooLarge, Exchange, HttpServer
from pyiii.modules.http import request as rq
from pyiii.modules.http import response as rs
from pyiii.modules.http.config import HttpConfig
from pyiii.modules.http.cors import CorsPolicy
from pyiii.modules.http.routes import RouteError, RouteSpec, RouteTable, parse_spec

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine
    from pyiii.engine.registry import Trigger

log = logging.getLogger("pyiii.http")

WORKER_NAME = "iii-http"
# A request is checked for its client having left once it has taken this long.
WATCH_AFTER_S = 0.05
# The request body goes to the request_body channel in pieces of at most this size.
BODY_CHUNK = 64 * 1024
# Function errors that mean "nobody could answer", not "the function failed".
_UNAVAILABLE = frozenset({errors.INVOCATION_STOPPED, errors.SHUTTING_DOWN})


class _Timeout(Exception):
    pass


class _Gone(Exception):
    pass


class _Answered(Exception):
    """A middleware or condition produced the response; the handler is not called."""

    def __init__(self, reply: rs.Reply) -> None:
        self.reply = reply


class _Slots:
    """At most ``size`` requests at once; the others wait in arrival order.

    ``asyncio.Semaphore``'s ``async with`` is two coroutines per request; a
    free slot here is a comparison.
    """

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot (call when ``try_take`` said no)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot we will not use: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Hand the slot to the next waiter, or free it."""
        if not wake_first(self.waiters):
            self.free += 1


class _Call:
    """One request's waits, each cut short by the deadline or the client leaving; its channels.

    The client is watched only once a request has taken WATCH_AFTER_S: most
    are answered sooner, and asking granian for the disconnect future (and
    cancelling it afterwards) was an eighth of the engine's Python time per
    request. A client that leaves is still noticed within that much.
    """

    __slots__ = (
        "body",
        "channels",
        "deadline",
        "exchange",
        "gone",
        "hub",
        "loop",
        "opened",
        "spots",
        "watch_at",
    )

    def __init__(self, exchange: Exchange, loop: asyncio.AbstractEventLoop) -> None:
        self.exchange = exchange
        self.loop = loop
        self.deadline = self.watch_at = 0.0  # set by ``start``
        self.gone: asyncio.Future[None] | None = None
        # The request_body and response channels are reserved refs (``spots``),
        # made only if the function opens them; then they land in ``channels``.
        self.hub: ChannelManager | None = None
        self.spots: tuple[str, ...] = ()
        self.channels: list[Channel] = []  # aborted by ``close``, once the response is sent
        self.body = b""  # what request_body holds
        self.opened: asyncio.Future[Channel] | None = None  # the response channel, once made

    def start(self, timeout_s: float) -> None:
        """The clock starts (once the body is in)."""
        now = self.loop.time()
        self.deadline = now + timeout_s
        self.watch_at = now + WATCH_AFTER_S

    def watch(self) -> asyncio.Future[None]:
        if self.gone is None:
            self.gone = asyncio.ensure_future(self.exchange.disconnected())
        return self.gone

    async def first(self, a: asyncio.Future[Any], b: asyncio.Future[Any] | None = None) -> None:
        """Until ``a`` or ``b`` is done; _Gone / _Timeout if the client or the clock wins.

        One plain future woken by callbacks, not ``asyncio.wait``: this runs
        on every request, and ``wait`` costs a set and a task's worth of work.
        """
        loop = self.loop
        while True:
            gone = self.gone
            if gone is not None and gone.done():
                raise _Gone
            if a.done() or (b is not None and b.done()):
                return
            now = loop.time()
            if self.deadline <= now:
                raise _Timeout
            if gone is None and now >= self.watch_at:
                self.watch()
                continue
            until = self.deadline if gone is not None else min(self.deadline, self.watch_at)
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: Any = None, waiter: asyncio.Future[None] = waiter) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            a.add_done_callback(wake)
            if b is not None:
                b.add_done_callback(wake)
            if gone is not None:
                gone.add_done_callback(wake)
            timer = loop.call_at(until, wake)
            try:
                await waiter
            finally:
                timer.cancel()
                a.remove_done_callback(wake)
                if b is not None:
                    b.remove_done_callback(wake)
                if gone is not None:
                    gone.remove_done_callback(wake)

    async def result(self, coro: Any) -> Any:
        task = asyncio.ensure_future(coro)
        try:
            await self.first(task)
        except BaseException:
            task.cancel()
            raise
        return task.result()

    def reserve_channels(self, hub: ChannelManager) -> tuple[dict[str, str], dict[str, str]]:
        """Refs of ``request_body`` (the function reads it) and ``response`` (it writes it)."""
        self.hub = hub
        self.opened = self.loop.create_future()
        body = hub.reserve(READ, self._body_opened)
        response = hub.reserve(WRITE, self._response_opened)
        self.spots = (body["channel_id"], response["channel_id"])
        return body, response

    def _body_opened(self, channel: Channel) -> None:
        self.channels.append(channel)
        _fill(channel, self.body)

    def _response_opened(self, channel: Channel) -> None:
        self.channels.append(channel)
        if self.opened is not None and not self.opened.done():
            self.opened.set_result(channel)

    def close(self) -> None:
        if self.gone is not None:
            self.gone.cancel()
        if self.hub is not None:
            for channel_id in self.spots:
                self.hub.release(channel_id)
        if self.opened is not None:
            self.opened.cancel()
        for channel in self.channels:
            channel.abort("the HTTP request is over")


def _fill(request_body: Channel, body: bytes) -> None:
    """Put the raw body on ``request_body``, then end it.

    A body up to BODY_CHUNK bytes is buffered at once; a larger one is fed in
    BODY_CHUNK pieces as the function reads them, since the channel holds at
    most its byte bound and clients cap the frames they take (Python's
    ``websockets``: 1 MiB).
    """
    if len(body) <= BODY_CHUNK:
        if body:
            request_body.offer(body)  # an empty channel always has room for one message
        request_body.end()
    else:
        feeding = asyncio.ensure_future(_feed(request_body, body))

        def stop(_reason: str) -> None:
            feeding.cancel()

        request_body.add_abort_callback(stop)


async def _feed(channel: Any, body: bytes) -> None:
    """Write ``body`` to ``channel`` in BODY_CHUNK pieces, then end it (stops if it is aborted)."""
    try:
        for start in range(0, len(body), BODY_CHUNK):
            await channel.put(body[start : start + BODY_CHUNK])
        channel.end()
    except ChannelClosed:
        pass


class HttpModule(Module, TriggerProvider):
    """Functions over HTTP: the ``http`` trigger type and its listener."""

    name = "iii-http"

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.routes = RouteTable()
        self.cors = CorsPolicy(config.cors)
        self.engine: Engine | None = None
        self.server: HttpServer | None = None
        self._slots = _Slots(config.concurrency_request_limit)
        self._timeout_s = config.default_timeout / 1000
        self.in_flight = 0  # requests holding a slot (tests and stats read it)
        # The loop requests run on, kept: get_running_loop checks the process
        # id, a system call (~2 µs here) twice per request.
        self._running: asyncio.AbstractEventLoop | None = None

    # --- Module -------------------------------------------------------------

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        engine.services[self.name] = self  # the console's HTTP tester finds the port here
        engine.register_trigger_type(
            "http", "HTTP route: api_path, http_method", self, worker_name=WORKER_NAME
        )
        server = HttpServer(self._serve, self.config.host, self.config.port, name="iii-http")
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"iii-http: {exc}; choose another port in the iii-http config (port: ...)"
            ) from None
        self.server = server
        log.info("HTTP listening on http://%s:%d", self.config.host, server.port)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def describe(self) -> str:
        port = self.server.port if self.server is not None else self.config.port
        return f"http://{self.config.host}:{port}, {len(self.routes)} routes"

    @property
    def port(self) -> int:
        """The port the listener is bound to (the real one when configured with 0)."""
        if self.server is None:
            raise RuntimeError("iii-http is not started")
        return self.server.port

    # --- TriggerProvider ------------------------------------------------------

    def register(self, trigger: Trigger) -> None:
        try:
            config = msgspec.json.decode(trigger.config)
        except msgspec.DecodeError:
            config = None
        try:
            spec = parse_spec(
                config, trigger.function_id, namespace=trigger.namespace, metadata=trigger.metadata
            )
            self.routes.add(trigger.id, spec)
        except RouteError as exc:
            log.warning("http trigger %s refused: %s", trigger.id, exc)
            raise IIIError(errors.TRIGGER_REGISTRATION_FAILED, str(exc)) from None
        trigger.parsed = spec
        log.info("route %s %s -> %s", spec.method, spec.pattern, spec.function_id)

    def unregister(self, trigger_id: str) -> None:
        self.routes.remove(trigger_id)

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._running
        if loop is None or loop.is_closed():
            loop = self._running = asyncio.get_running_loop()
        return loop

    # --- requests ---------------------------------------------------------------

    async def _serve(self, ex: Exchange) -> None:
        origin = ex.header("origin")
        if origin is not None and self.cors.is_preflight(
            ex.method, origin, ex.header("access-control-request-method")
        ):
            ex.respond(200, self.cors.preflight(origin, ex.header("access-control-request-headers")), b"")
            return
        slots = self._slots
        if not slots.try_take():
            await slots.take()
        self.in_flight += 1
        held: list[_Call] = []
        try:
            reply = await self._handle(ex, held)
            # Sent before the request's channels and slot are let go: the
            # client's latency does not wait for the clean-up.
            if reply is not None:
                headers = reply.headers if origin is None else reply.headers + self.cors.headers(origin)
                ex.respond(reply.status, headers, reply.body)
        finally:
            for call in held:
                call.close()
            self.in_flight -= 1
            slots.give()
        metrics = self.engine.metrics if self.engine is not None else None
        if metrics is not None and ex.answered:
            found = self.routes.match(ex.method, ex.path)  # matched again only when metrics are on
            metrics.http_request(ex.method, found[0].spec.pattern if found else "(no route)", ex.status)

    async def _handle(self, ex: Exchange, held: list[_Call]) -> rs.Reply | None:
        """The reply to send, or None when it was streamed or the client left.

        The request's ``_Call`` (its waits and channels) goes into ``held``;
        the caller closes it once the reply is sent.
        """
        found = self.routes.match(ex.method, ex.path)
        if found is None:
            return rs.error_reply(404, "NOT_FOUND", f"no route for {ex.method} {ex.path}")
        route, path_params = found
        spec = route.spec
        try:
            reading = ex.start_body(self.config.max_body_bytes)
        except BodyTooLarge as exc:
            return self._too_large(exc)
        # While granian's threads fetch the body: what does not need it.
        headers = rq.header_map(ex.headers())
        query = rq.query_params(ex.query_string)
        call = _Call(ex, self._loop())
        held.append(call)
        hub = getattr(self.engine, "channels", None)
        try:
            refs = call.reserve_channels(hub) if hub is not None else None
        except BaseException:
            reading.close()
            raise
        try:
            body = await reading
        except BodyTooLarge as exc:
            return self._too_large(exc)
        call.body = body
        call.start(self._timeout_s)
        try:
            context: dict[str, Any] = {}
            for mw in self.config.middleware:
                await self._middleware(
                    call, spec, mw.function_id, path_params, query, headers, ex.method, context
                )
            parsed = rq.parse_body(body, headers.get("content-type"))
            payload = rq.build(spec, path_params, query, headers, ex.method, parsed, context)
            if spec.condition_function_id is not None:
                await self._condition(call, spec, payload)
            for mw_id in spec.middleware_function_ids:
                await self._middleware(call, spec, mw_id, path_params, query, headers, ex.method, context)
            if refs is not None:
                payload["request_body"], payload["response"] = refs
            return await self._invoke(call, ex, spec, payload)
        except _Answered as answered:
            return answered.reply
        except _Timeout:
            return rs.error_reply(
                504,
                "TIMEOUT",
                f"{spec.method} {spec.pattern} got no response from {spec.function_id} within "
                f"{self.config.default_timeout} ms (iii-http default_timeout)",
            )
        except _Gone:
            log.debug("client left during %s %s; invocation cancelled", ex.method, ex.path)
            return None

    # --- steps -----------------------------------------------------------------------

    async def _call(self, call: _Call, spec: RouteSpec, function_id: str, data: Any, **kw: Any) -> Any:
        assert self.engine is not None
        raw = await call.result(self.engine.call(function_id, data, namespace=spec.namespace, **kw))
        return None if raw is None else msgspec.json.decode(raw)

    def _failed(self, spec: RouteSpec, role: str, function_id: str, err: IIIError) -> NoReturn:
        if err.code in _UNAVAILABLE:
            raise _Answered(
                rs.error_reply(
                    503,
                    err.code,
                    f"{spec.method} {spec.pattern}: {role} {function_id} could not answer: {err.message}",
                )
            )
        error_id = rs.new_error_id()
        log.error(
            "%s %s: %s %s failed with %s: %s (error_id %s)%s",
            spec.method,
            spec.pattern,
            role,
            function_id,
            err.code,
            err.message,
            error_id,
            f"\n{err.stacktrace}" if err.stacktrace else "",
        )
        raise _Answered(rs.error_reply(500, err.code, err.message, error_id))

    async def _middleware(
        self,
        call: _Call,
        spec: RouteSpec,
        function_id: str,
        path_params: dict[str, str],
        query: dict[str, str | list[str]],
        headers: dict[str, str],
        method: str,
        context: dict[str, Any],
    ) -> None:
        data = rq.middleware_input(path_params, query, headers, method, context)
        try:
            out = await self._call(call, spec, function_id, data)
        except IIIError as err:
            self._failed(spec, "middleware", function_id, err)
        except _Timeout:
            raise _Answered(
                rs.error_reply(
                    504,
                    "MIDDLEWARE_TIMEOUT",
                    f"middleware {function_id} did not answer within {self.config.default_timeout} ms",
                )
            ) from None
        if not isinstance(out, dict):
            return
        extra = out.get("context")
        if isinstance(extra, dict):
            context.update(extra)  # later middleware and the handler see it
        if out.get("action") == "respond":
            try:
                reply = rs.from_value(out.get("response"))
            except rs.InvalidResponse as exc:
                error = IIIError("invalid_response", str(exc))
                self._failed(spec, "middleware", function_id, error)
            raise _Answered(reply)

    async def _condition(self, call: _Call, spec: RouteSpec, payload: dict[str, Any]) -> None:
        assert spec.condition_function_id is not None
        try:
            out = await self._call(call, spec, spec.condition_function_id, payload)
        except IIIError as err:
            self._failed(spec, "condition", spec.condition_function_id, err)
        if out is False:
            raise _Answered(
                rs.error_reply(
                    422,
                    "CONDITION_NOT_MET",
                    f"condition {spec.condition_function_id} returned false",
                    skipped=True,
                )
            )

    @staticmethod
    def _too_large(exc: BodyTooLarge) -> rs.Reply:
        size = f" ({exc.declared} bytes declared)" if exc.declared is not None else ""
        return rs.error_reply(
            413,
            "PAYLOAD_TOO_LARGE",
            f"request body over {exc.limit} bytes{size}; the limit is iii-http max_body_bytes",
        )

    async def _invoke(
        self, call: _Call, ex: Exchange, spec: RouteSpec, payload: dict[str, Any]
    ) -> rs.Reply | None:
        """Call the function; answer with what it returns or what it writes, whichever comes first.

        The response channel is waited on once the function has opened it
        (``call.opened``); until then only its opening is.
        """
        assert self.engine is not None
        try:
            task = self.engine.call_future(
                spec.function_id, payload, namespace=spec.namespace, metadata=spec.metadata, loop=call.loop
            )
        except IIIError as err:
            self._failed(spec, "function", spec.function_id, err)
        head: rs.StreamHead | None = None  # from the response channel's text frames, once one came
        opened = call.opened  # done once the function opened its response channel
        response: Channel | None = None
        item: asyncio.Future[Any] | None = None  # the response channel has something for us
        returned_nothing = False
        try:
            while True:
                if opened is not None and opened.done():
                    response, opened = opened.result(), None
                if item is None and response is not None:
                    item = response.readable()
                side = item if item is not None else opened  # the response channel's next event
                # Done futures stay in: ``first`` returns at once.
                if returned_nothing:
                    if side is None:
                        return self._bad(spec, "it returned no response and has no response channel")
                    waiting, side = side, None
                else:
                    waiting = task
                try:
                    await call.first(waiting, side)
                except _Timeout:
                    if returned_nothing:
                        raise _Answered(
                            rs.error_reply(
                                504,
                                "TIMEOUT",
                                f"{spec.function_id} returned no response and wrote none to its response "
                                f"channel within {self.config.default_timeout} ms (iii-http default_timeout)",
                            )
                        ) from None
                    raise
                if item is not None and item.done():
                    assert response is not None
                    item = None
                    try:
                        ready, message = response.poll()
                    except ChannelClosed as exc:  # the response channel was aborted
                        log.debug("%s %s: response channel closed: %s", spec.method, spec.pattern, exc)
                        response = None
                        if returned_nothing:
                            return self._bad(spec, "its response channel closed before any response")
                        continue
                    if not ready:
                        continue
                    if isinstance(message, str):
                        if head is None:
                            head = rs.StreamHead()
                        head.apply(message)
                        continue
                    await self._stream(ex, response, head or rs.StreamHead(), message)
                    return None
                if not returned_nothing and task.done():
                    try:
                        raw: Raw | None = task.result()
                    except IIIError as err:
                        self._failed(spec, "function", spec.function_id, err)
                    value = None if raw is None else msgspec.json.decode(raw)
                    if value is None and (response is not None or opened is not None):
                        returned_nothing = True  # it answers on the response channel
                        continue
                    try:
                        return rs.from_value(value)
                    except rs.InvalidResponse as exc:
                        return self._bad(spec, str(exc))
        finally:
            task.cancel()
            if item is not None:
                item.cancel()

    def _bad(self, spec: RouteSpec, message: str) -> NoReturn:
        self._failed(spec, "function", spec.function_id, IIIError("invalid_response", message))

    async def _stream(self, ex: Exchange, response: Any, head: rs.StreamHead, first: bytes | None) -> None:
        """Send the streamed response: ``first`` chunk (None: the channel ended empty), then the rest."""
        origin = ex.header("origin")
        headers = head.header_list() + self.cors.headers(origin)
        if first is None:
            ex.respond(head.status, headers, b"")
            return
        send = ex.stream(head.status, headers)
        try:
            await send(first)
            while True:
                chunk = await response.get()
                if chunk is None:
                    return
                if isinstance(chunk, bytes | bytearray | memoryview):
                    await send(bytes(chunk))
        except Exception as exc:  # the client went away mid-stream
            log.debug("streamed response to %s %s cut: %s", ex.method, ex.path, exc)
