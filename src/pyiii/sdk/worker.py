"""The Python SDK worker: one WebSocket session to the engine, kept alive.

Threading model: a ``Worker`` is bound to one asyncio loop and all its state
is touched only on that loop. ``register_worker()`` called with no running
loop starts a daemon thread running a private loop (uvloop when installed);
called inside a running loop it uses that loop. Public methods may be called
from any thread: registration methods hop onto the loop, ``await trigger()``
from a foreign loop is forwarded, and ``trigger_sync``/``shutdown_sync`` block
the calling thread. Async handlers run as tasks on the loop; sync handlers
run in a per-worker thread pool (or inline on the loop with ``inline=True``,
for cheap handlers that never block).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import platform
import random
import signal
import threading
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, TypeVar

import msgspec
from msgspec import UNSET, Raw, UnsetType
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from pyiii import errors
from pyiii import protocol as p
from pyiii.errors import IIIError
from pyiii.sdk.channels import Channel, ChannelReader, ChannelWriter, is_channel_ref
from pyiii.sdk.events import EventsMixin
from pyiii.sdk.logger import TelemetrySink, add_sink, current_function_id, remove_sink
from pyiii.sdk.state import State
from pyiii.trigger_providers import missing_type_hint

__all__ = ["FunctionRef", "Trigger", "Worker", "connect", "register_worker"]

log = logging.getLogger("pyiii.sdk")
T = TypeVar("T")
Handler = Callable[..., Any]

DEFAULT_URL: Final = "ws://127.0.0.1:49134"
BACKOFF_START_S: Final = 0.2  # loopback is the common case: come back fast
BACKOFF_MAX_S: Final = 10.0
# Ping after 20 s without inbound data; drop the socket if no pong within 20 s
# more (the official Python SDK's timing; picows caps reply <= idle, so Node's
# 60 s window is not expressible).
PING_IDLE_S: Final = 20.0
PING_REPLY_S: Final = 20.0
# How long after connecting (or registering) the SDK checks that its triggers' types exist.
TRIGGER_TYPE_CHECK_DELAY_S: Final = 1.0


def _sdk_version() -> str:
    try:
        return version("pyiii")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0"


SDK_VERSION: Final = _sdk_version()

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode


def _raw(value: Any) -> Raw:
    return Raw(_json_encode(value))


def _payload(function_id: str, payload: Any) -> Raw:
    """The payload as JSON, or a clear error before anything is sent."""
    try:
        return Raw(_json_encode(payload))
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise IIIError(
            errors.SERIALIZATION_ERROR,
            f"the payload for {function_id} is not JSON-serializable ({exc}); send dicts, lists,"
            " strings, numbers, booleans and None (convert other objects first)",
            function_id=function_id,
        ) from None


def _opt_raw(value: Any) -> Raw | UnsetType:
    return UNSET if value is None else Raw(_json_encode(value))


def _register_frame(
    id: str,
    description: str | None,
    metadata: Any,
    request_format: Any,
    response_format: Any,
    invocation: Raw | UnsetType = UNSET,
) -> bytes:
    """The ``registerfunction`` frame of a worker-served (no ``invocation``) or HTTP-served function."""
    return p.encode(
        p.RegisterFunction(
            id=id,
            description=UNSET if description is None else description,
            request_format=_opt_raw(request_format),
            response_format=_opt_raw(response_format),
            metadata=_opt_raw(metadata),
            invocation=invocation,
        )
    )


_workers: list[Worker] = []  # live workers, most recent last


def latest_worker() -> Worker | None:
    """The most recently created worker that is not shut down."""
    return _workers[-1] if _workers else None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.7, 1.3)


def _is_async(fn: Handler) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


def _arity(fn: Handler) -> int:
    """How many positional arguments (0, 1 or 2: payload, metadata) to pass."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    count = 0
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            return 2
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            count += 1
    return min(count, 2)


def _error_from(raw: Raw, function_id: str) -> IIIError:
    body = _json_decode(raw)
    if not isinstance(body, dict):
        return IIIError(errors.UNKNOWN, str(body), function_id=function_id)
    # Fields beyond code/message/stacktrace (e.g. VERSION_MISMATCH's
    # current_version) are kept in ``details``.
    details = {k: v for k, v in body.items() if k not in ("code", "message", "stacktrace")}
    return IIIError(
        str(body.get("code") or errors.UNKNOWN),
        str(body.get("message") or body),
        function_id=function_id or None,
        stacktrace=body.get("stacktrace"),
        details=details or None,
    )


def _call_in_context(function_id: str, handler: Handler, args: tuple[Any, ...]) -> Any:
    # Runs inside a copied context, so setting the var leaks nowhere.
    current_function_id.set(function_id)
    return handler(*args)


class _Function(msgspec.Struct):
    id: str
    handler: Handler
    frame: bytes  # the encoded registerfunction, replayed on every connect
    is_async: bool
    arity: int
    inline: bool


@dataclass(frozen=True, slots=True)
class Trigger:
    """A registered trigger binding; ``unregister()`` removes it."""

    worker: Worker = field(repr=False)
    id: str
    trigger_type: str
    function_id: str

    def unregister(self) -> None:
        self.worker._unregister_trigger(self.id, self.trigger_type)


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A registered function; ``unregister()`` removes it."""

    worker: Worker = field(repr=False)
    id: str

    def unregister(self) -> None:
        self.worker.unregister_function(self.id)


class _Listener(WSListener):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def on_ws_connected(self, transport: WSTransport) -> None:
        # Runs before any inbound frame is handled, so the previous session's
        # worker_id is still ours when we send `reattach`.
        self._worker._on_open(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._worker._on_frame(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._worker._on_lost(transport)


class Worker(EventsMixin):
    """A connection to the engine that registers and triggers functions."""

    def __init__(
        self,
        url: str,
        loop: asyncio.AbstractEventLoop,
        *,
        name: str,
        invocation_timeout_ms: int = 30_000,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        reconnect: bool = True,
        max_frame_bytes: int = 64 * 1024 * 1024,
        connect_timeout: float = 30.0,
        thread: threading.Thread | None = None,
    ) -> None:
        self.url, self.name, self._loop, self._thread = url, name, loop, thread
        self.invocation_timeout_ms = invocation_timeout_ms
        self.connect_timeout = connect_timeout
        self._headers = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._reconnect, self._max_frame = reconnect, max_frame_bytes
        self._functions: dict[str, _Function] = {}
        self._triggers: dict[str, bytes] = {}
        self._pending: dict[str, asyncio.Future[Raw | UnsetType]] = {}
        self._queue: list[tuple[bytes, str | None]] = []  # offline: (frame, invocation id)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transport: WSTransport | None = None
        self._worker_id: str | None = None
        self._reattach_token: str | None = None
        self._first_connect: asyncio.Future[None] = loop.create_future()
        self._run_task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False
        self._closed = threading.Event()  # set once shutdown has finished
        self._present_types: set[str] = set()  # trigger types the engine was seen to have
        self._unchecked_types: dict[str, str] = {}  # trigger type -> a function bound to it
        parts = urllib.parse.urlsplit(url)
        otel_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/otel", "", ""))
        self.telemetry = TelemetrySink(otel_url, loop, name, self._headers or None)
        _workers.append(self)
        add_sink(self.telemetry)

    # --- state --------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The id the engine gave the current (or last) session."""
        return self._worker_id

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @functools.cached_property
    def state(self) -> State:
        """Typed helpers for the ``state::*`` functions (see ``pyiii.sdk.state``)."""
        return State(self)

    # --- channels -------------------------------------------------------------

    async def create_channel(self, buffer_size: int | None = None) -> Channel:
        """A new streaming channel (``engine::channels::create``) owned by this worker.

        ``buffer_size``: messages the engine buffers between writer and reader
        (engine default 64). Hand ``writer_ref``/``reader_ref`` to other workers
        in a payload; they open them with ``open_channel``. The channel is
        closed by the engine if this worker disconnects.
        """
        payload = {} if buffer_size is None else {"buffer_size": buffer_size}
        refs = await self.trigger("engine::channels::create", payload)
        return Channel(
            writer=self.open_writer(refs["writer"]),
            reader=self.open_reader(refs["reader"]),
            writer_ref=dict(refs["writer"]),
            reader_ref=dict(refs["reader"]),
        )

    def open_channel(self, ref: Mapping[str, Any]) -> ChannelReader | ChannelWriter:
        """The side a ref received in a payload opens: a reader for ``read``, a writer for ``write``."""
        if is_channel_ref(ref) and ref["direction"] == "write":
            return self.open_writer(ref)
        return self.open_reader(ref)

    def open_reader(self, ref: Mapping[str, Any]) -> ChannelReader:
        """A reader for a ``read`` ref (ValueError for any other value). Connects on first read."""
        return ChannelReader(self.url, ref, headers=self._headers or None, max_frame_bytes=self._max_frame)

    def open_writer(self, ref: Mapping[str, Any]) -> ChannelWriter:
        """A writer for a ``write`` ref (ValueError for any other value). Connects on first send."""
        return ChannelWriter(self.url, ref, headers=self._headers or None, max_frame_bytes=self._max_frame)

    # --- registration -------------------------------------------------------

    def register_function(
        self,
        id: str,
        handler: Handler,
        *,
        description: str | None = None,
        metadata: Any = None,
        request_format: Any = None,
        response_format: Any = None,
        inline: bool = False,
    ) -> FunctionRef:
        """Serve ``id`` with ``handler(payload[, metadata])``, sync or async.

        Sync handlers run in the worker's thread pool; ``inline=True`` runs
        them on the event loop instead (only for handlers that never block).
        Registrations are replayed on every reconnect.
        """
        if not id or not id.strip():
            raise ValueError("function id must be a non-empty string")
        if not callable(handler):
            raise TypeError(f"handler for {id!r} must be callable")
        if id in self._functions:
            raise ValueError(f"function {id!r} is already registered")
        frame = _register_frame(id, description, metadata, request_format, response_format)
        self._functions[id] = _Function(id, handler, frame, _is_async(handler), _arity(handler), inline)
        self._soon(self._send_live, frame)
        return FunctionRef(self, id)

    def register_http_function(
        self,
        id: str,
        url: str,
        *,
        method: str = "POST",
        timeout_ms: int | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Mapping[str, str] | None = None,
        description: str | None = None,
        metadata: Any = None,
        request_format: Any = None,
        response_format: Any = None,
    ) -> FunctionRef:
        """Register ``id`` as served by an HTTP service: the engine calls ``url`` for every call.

        Needs the engine's iii-http-functions module, whose ``security`` block
        decides which URLs are allowed; a refused URL is logged here (an
        engine ``error`` frame) and ``id`` stays unknown. ``auth`` is
        ``{"type": "bearer", "token_key": ENV}``, ``{"type": "hmac",
        "secret_key": ENV}`` or ``{"type": "api_key", "header": H,
        "value_key": ENV}``, each ENV a variable of the engine's environment.
        """
        if not id or not id.strip():
            raise ValueError("function id must be a non-empty string")
        if id in self._functions:
            raise ValueError(f"function {id!r} is already registered")
        invocation: dict[str, Any] = {"url": url, "method": method.upper()}
        if timeout_ms is not None:
            invocation["timeout_ms"] = timeout_ms
        if headers:
            invocation["headers"] = dict(headers)
        if auth is not None:
            invocation["auth"] = dict(auth)
        frame = _register_frame(
            id, description, metadata, request_format, response_format, Raw(_json_encode(invocation))
        )

        def not_here() -> None:
            raise IIIError(
                errors.FUNCTION_NOT_INVOKABLE, f"{id} is served over HTTP by the engine, not by this worker"
            )

        self._functions[id] = _Function(id, not_here, frame, False, 0, True)
        self._soon(self._send_live, frame)
        return FunctionRef(self, id)

    def function(self, id: str, **options: Any) -> Callable[[Handler], Handler]:
        """Decorator form of ``register_function``: ``@worker.function("math::add")``."""

        def decorate(handler: Handler) -> Handler:
            self.register_function(id, handler, **options)
            return handler

        return decorate

    def http(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """Serve the decorated handler over HTTP: ``@worker.http("POST", "/todos")``.

        The handler gets an ``HttpRequest`` and returns an ``HttpResponse``, a
        JSON-able value, a ``(body, status[, headers])`` tuple, a ``str`` or
        None (see ``pyiii.sdk.http``). Options: ``id`` (function id, default
        ``http::<METHOD> <path>``), ``condition`` and ``middleware`` (function
        ids), ``description``.
        """
        from pyiii.sdk.http import http_route

        return http_route(self, method, path, **options)

    def unregister_function(self, id: str) -> None:
        """Stop serving ``id``."""
        if self._functions.pop(id, None) is not None:
            self._soon(self._send_live, p.encode(p.UnregisterFunction(id=id)))

    def register_trigger(self, trigger: Mapping[str, Any]) -> Trigger:
        """Bind a trigger: ``{"type"|"trigger_type", "function_id", "config", "metadata"?}``."""
        trigger_type = trigger.get("trigger_type") or trigger.get("type")
        function_id = trigger.get("function_id")
        if not trigger_type or not function_id:
            raise ValueError("a trigger needs 'type' (or 'trigger_type') and 'function_id'")
        trigger_id = str(uuid.uuid4())
        frame = p.encode(
            p.RegisterTrigger(
                id=trigger_id,
                trigger_type=trigger_type,
                function_id=function_id,
                config=_raw(trigger.get("config")),
                metadata=_opt_raw(trigger.get("metadata")),
            )
        )
        self._triggers[trigger_id] = frame
        self._soon(self._send_live, frame)
        self._soon(self._check_trigger_type, trigger_type, function_id)
        return Trigger(self, trigger_id, trigger_type, function_id)

    def _check_trigger_type(self, trigger_type: str, function_id: str) -> None:
        if trigger_type in self._present_types or self._closing:
            return
        first = not self._unchecked_types
        self._unchecked_types.setdefault(trigger_type, function_id)
        if first:
            self._spawn(self._warn_of_missing_types())

    async def _warn_of_missing_types(self) -> None:
        """Warn about triggers just registered for types the engine does not have.

        The engine parks such a binding without an error (its provider may
        come later), so without this a trigger that can never fire looks fine.
        One ``engine::triggers::list`` call covers every trigger registered in
        the window; the short wait lets a provider that starts alongside us
        register its type first.
        """
        try:
            await asyncio.shield(self._first_connect)
        except IIIError:
            return  # never connected: nothing to check against
        await asyncio.sleep(TRIGGER_TYPE_CHECK_DELAY_S)
        try:
            listed = await self.trigger("engine::triggers::list", {"include_internal": True})
        except IIIError as exc:
            log.debug("could not check trigger types %s: %s", sorted(self._unchecked_types), exc)
            return
        finally:
            unchecked, self._unchecked_types = self._unchecked_types, {}
        types = listed.get("triggers") if isinstance(listed, dict) else None
        if not isinstance(types, list):
            return
        self._present_types.update(str(t.get("id")) for t in types if isinstance(t, dict))
        for trigger_type, function_id in unchecked.items():
            if trigger_type not in self._present_types:
                log.warning(
                    "the engine at %s has no trigger type %r, so the trigger for %s will not fire until "
                    "one is registered; %s",
                    self.url,
                    trigger_type,
                    function_id,
                    missing_type_hint(trigger_type),
                )

    def _unregister_trigger(self, trigger_id: str, trigger_type: str) -> None:
        if self._triggers.pop(trigger_id, None) is not None:
            frame = p.encode(p.UnregisterTrigger(id=trigger_id, trigger_type=trigger_type))
            self._soon(self._send_live, frame)

    # --- calls --------------------------------------------------------------

    async def trigger(
        self,
        request: Mapping[str, Any] | str,
        payload: Any = None,
        *,
        action: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
    ) -> Any:
        """Invoke a function by id and return its decoded result.

        ``request`` is ``{"function_id", "payload", "action"?, "timeout_ms"?}``
        or a function id (then ``payload``/``action``/``timeout_ms`` apply).
        ``action`` ``{"type": "void"}`` returns None at once; ``{"type":
        "enqueue", "queue": q}`` returns the engine's receipt. Raises
        ``IIIError`` (``.code``, ``.message``) on error results, on
        ``TIMEOUT`` and when the connection is lost.
        """
        if isinstance(request, str):
            function_id = request
        else:
            function_id = request["function_id"]
            payload = request.get("payload")
            action = request.get("action", action)
            timeout_ms = request.get("timeout_ms", timeout_ms)
        if not _on_loop(self._loop):
            # Called from another loop (e.g. a background-thread worker used
            # from async code): run on ours, await from theirs.
            coro = self.trigger(function_id, payload, action=action, timeout_ms=timeout_ms)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))
        if self._closing:
            raise IIIError(errors.SHUTDOWN, "worker is shut down", function_id=function_id)

        data = _payload(function_id, payload)
        wire_action: p.Action | UnsetType = UNSET
        if action is not None:
            kind = action.get("type")
            if kind == "void":
                wire_action = p.Action(type="void")
                frame = p.encode(p.InvokeFunction(function_id, data, action=wire_action))
                self._send_or_queue(frame, None)
                return None
            if kind != "enqueue" or not action.get("queue"):
                raise ValueError(f"unknown trigger action {dict(action)!r}")
            wire_action = p.Action(type="enqueue", queue=action["queue"])

        invocation_id = str(uuid.uuid4())
        frame = p.encode(p.InvokeFunction(function_id, data, invocation_id=invocation_id, action=wire_action))
        ms = self.invocation_timeout_ms if timeout_ms is None else timeout_ms
        future: asyncio.Future[Raw | UnsetType] = self._loop.create_future()
        self._pending[invocation_id] = future
        timer = self._loop.call_later(ms / 1000, self._expire, invocation_id, function_id, ms)
        self._send_or_queue(frame, invocation_id)
        try:
            result = await future
        finally:
            timer.cancel()
            self._pending.pop(invocation_id, None)
        return None if p.raw_is_null(result) else _json_decode(result)  # type: ignore[arg-type]

    def trigger_sync(
        self,
        request: Mapping[str, Any] | str,
        payload: Any = None,
        *,
        action: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
    ) -> Any:
        """Blocking ``trigger`` for threads that are not this worker's loop."""
        return self._block(self.trigger(request, payload, action=action, timeout_ms=timeout_ms))

    # --- queues (the iii-queue module) -------------------------------------------

    async def publish(self, topic: str, data: Any) -> None:
        """Publish ``data`` to a durable topic: every function subscribed to it gets a copy.

        Returns once the engine has stored the message (with ``file_based``:
        on disk). Raises ``IIIError`` (``serialization_error``) before sending
        when ``data`` is not JSON-serializable.
        """
        if not topic:
            raise ValueError("publish needs a topic")
        await self.trigger("iii::durable::publish", {"topic": topic, "data": data})

    async def enqueue(self, function_id: str, payload: Any, *, queue: str = "default") -> str:
        """Run ``function_id`` later through the named queue ``queue``; returns the receipt id.

        The queue retries the function on failure (its ``queue_configs``
        settings) and dead-letters it after ``max_retries`` deliveries.
        """
        result = await self.trigger(function_id, payload, action={"type": "enqueue", "queue": queue})
        return str(result["messageReceiptId"])

    def subscriber(
        self,
        topic: str,
        *,
        id: str | None = None,
        queue_config: Mapping[str, Any] | None = None,
        condition_function_id: str | None = None,
        **options: Any,
    ) -> Callable[[Handler], Handler]:
        """Decorator: serve a function that gets every message published to ``topic``.

        ``id`` defaults to ``<topic>::<handler name>``. The subscription is
        durable: messages published while this worker is away wait for it.
        ``queue_config`` (``maxRetries``, ``concurrency``, ``type``,
        ``backoffDelayMs``, ``visibilityTimeout``) tunes its delivery. A
        handler that raises is retried; its return value is ignored.
        """

        def decorate(handler: Handler) -> Handler:
            function_id = id or f"{topic}::{getattr(handler, '__name__', 'subscriber')}"
            self.register_function(function_id, handler, **options)
            config: dict[str, Any] = {"topic": topic}
            if queue_config:
                config["queue_config"] = dict(queue_config)
            if condition_function_id:
                config["condition_function_id"] = condition_function_id
            trigger = {"type": "durable:subscriber", "function_id": function_id, "config": config}
            self.register_trigger(trigger)
            return handler

        return decorate

    def _expire(self, invocation_id: str, function_id: str, ms: int) -> None:
        future = self._pending.pop(invocation_id, None)
        if future is not None and not future.done():
            message = f"invocation timed out after {ms}ms"
            future.set_exception(IIIError(errors.TIMEOUT, message, function_id=function_id))

    # --- lifecycle ----------------------------------------------------------

    def _start(self) -> None:
        self._run_task = self._loop.create_task(self._run())

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for the first session (engine sent ``workerregistered``)."""
        if not _on_loop(self._loop):
            coro = self.wait_connected(timeout)
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))
            return
        timeout = self.connect_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._first_connect), timeout)
        except TimeoutError:
            raise IIIError(
                errors.CONNECTION_LOST, f"could not connect to the engine at {self.url} in {timeout:g}s"
            ) from None

    async def serve_forever(self) -> None:
        """Serve the registered functions until Ctrl-C, SIGTERM or ``shutdown()``; then shut down.

        In the main thread Ctrl-C and SIGTERM end it quietly (no
        KeyboardInterrupt); cancelling the awaiting task ends it too.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        caught: list[tuple[signal.Signals, Any]] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError):  # no signal support on this loop
                    continue
                caught.append((sig, previous))
        closed = asyncio.ensure_future(asyncio.to_thread(self._closed.wait))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            for sig, previous in caught:
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)  # e.g. asyncio.run's own Ctrl-C handler
            await self.shutdown()
            await closed

    def run(self) -> None:
        """Blocking ``serve_forever`` for scripts without asyncio: serve until Ctrl-C,
        SIGTERM or ``shutdown()``, then shut down and return."""
        if self._thread is None or _on_loop(self._loop) or threading.current_thread() is self._thread:
            raise RuntimeError("this worker runs on an asyncio loop: use `await worker.serve_forever()`")
        previous = None
        if threading.current_thread() is threading.main_thread():
            # SIGTERM asks the worker's loop to shut down, which wakes the wait below.
            previous = signal.signal(signal.SIGTERM, lambda *_: self._soon(self._spawn_close))
        try:
            self._closed.wait()
        except KeyboardInterrupt:
            pass  # Ctrl-C: the normal way to stop a worker started from a terminal
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.shutdown_sync()

    def _spawn_close(self) -> None:
        self._spawn(self._close())

    async def shutdown(self) -> None:
        """Stop reconnecting, fail pending calls (SHUTDOWN), close with 1000."""
        if not _on_loop(self._loop):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), self._loop))
            await asyncio.to_thread(self._stop_thread)
            return
        await self._close()
        if self._thread is not None:
            self._loop.call_soon(self._loop.stop)  # cannot join our own thread

    def shutdown_sync(self) -> None:
        """Blocking ``shutdown`` for code with no running loop."""
        if self._loop.is_closed():
            self._forget()
            self._closed.set()
            return
        self._block(self._close())
        self._stop_thread()

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown_sync()

    async def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            await self._close_session()
        finally:
            self._closed.set()

    async def _close_session(self) -> None:
        self._forget()
        if self._run_task is not None:
            self._run_task.cancel()
        if not self._first_connect.done():
            self._first_connect.set_exception(IIIError(errors.SHUTDOWN, "worker is shut down"))
            self._first_connect.exception()  # mark retrieved
        self._fail_pending(IIIError(errors.SHUTDOWN, "worker is shutting down"), all_calls=True)
        self._queue.clear()
        await self.telemetry.close()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transport.wait_disconnected(), 2)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _forget(self) -> None:
        if self in _workers:
            _workers.remove(self)
        remove_sink(self.telemetry)

    def _stop_thread(self) -> None:
        if self._thread is None or threading.current_thread() is self._thread:
            return
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _block(self, coro: Coroutine[Any, Any, T]) -> T:
        if _on_loop(self._loop) or threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking call on the worker's own event loop; use await")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _run(self) -> None:
        """Connect, wait for the socket to drop, back off, repeat."""
        delay = BACKOFF_START_S
        while not self._closing:
            try:
                transport, _ = await ws_connect(
                    lambda: _Listener(self),
                    self.url,
                    extra_headers=self._headers or None,
                    websocket_handshake_timeout=10,
                    enable_auto_ping=True,
                    auto_ping_idle_timeout=PING_IDLE_S,
                    auto_ping_reply_timeout=PING_REPLY_S,
                    max_frame_size=self._max_frame,
                    disconnect_on_exception=False,
                    logger_name="pyiii.sdk",
                )
            except Exception as exc:
                if not self._reconnect:
                    self._resolve_first(
                        IIIError(errors.CONNECTION_LOST, f"cannot connect to {self.url}: {exc}")
                    )
                    return
                log.debug("connect to %s failed: %s; retrying in ~%.1fs", self.url, exc, delay)
            else:
                delay = BACKOFF_START_S
                await transport.wait_disconnected()
                if self._closing or not self._reconnect:
                    return
                log.warning("connection to %s lost; reconnecting", self.url)
            await asyncio.sleep(_jitter(delay))
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _resolve_first(self, error: IIIError | None = None) -> None:
        if not self._first_connect.done():
            if error is None:
                self._first_connect.set_result(None)
            else:
                self._first_connect.set_exception(error)

    def _announce_frame(self) -> bytes:
        info = {
            "runtime": "python",
            "version": SDK_VERSION,
            "name": self.name,
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "telemetry": {"language": "python", "framework": "pyiii"},
        }
        void = p.Action(type="void")
        return p.encode(p.InvokeFunction("engine::workers::register", _raw(info), action=void))

    def _on_open(self, transport: WSTransport) -> None:
        """Replay the session: reattach, registrations, offline queue, announce."""
        frames: list[bytes] = []
        if self._worker_id is not None:
            token = self._reattach_token
            frames.append(
                p.encode(
                    p.Reattach(
                        previous_worker_id=self._worker_id, reattach_token=UNSET if token is None else token
                    )
                )
            )
        frames.extend(fn.frame for fn in list(self._functions.values()))
        frames.extend(list(self._triggers.values()))
        queue, self._queue = self._queue, []
        # Calls that timed out while we were offline are no longer pending.
        frames.extend(f for f, iid in queue if iid is None or iid in self._pending)
        frames.append(self._announce_frame())
        for frame in frames:
            transport.send(WSMsgType.TEXT, frame)
        self._transport = transport

    def _on_lost(self, transport: WSTransport) -> None:
        if self._transport is transport:
            self._transport = None
        if not self._closing:
            stopped = IIIError(errors.INVOCATION_STOPPED, "connection to the engine was lost")
            self._fail_pending(stopped, all_calls=False)

    def _fail_pending(self, error: IIIError, *, all_calls: bool) -> None:
        """Fail calls already sent (those queued offline survive unless ``all_calls``)."""
        queued = set() if all_calls else {iid for _, iid in self._queue if iid}
        for invocation_id in [i for i in self._pending if i not in queued]:
            future = self._pending.pop(invocation_id)
            if not future.done():
                future.set_exception(error)

    # --- outbound -------------------------------------------------------------

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the loop: now if we are on it, else thread-safely."""
        if _on_loop(self._loop):
            fn(*args)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _send_live(self, frame: bytes) -> None:
        """Send a registration now if connected; otherwise the replay covers it."""
        if self._transport is not None:
            self._transport.send(WSMsgType.TEXT, frame)

    def _send_or_queue(self, frame: bytes, invocation_id: str | None) -> None:
        if self._transport is not None:
            self._transport.send(WSMsgType.TEXT, frame)
        else:
            self._queue.append((frame, invocation_id))

    # --- inbound --------------------------------------------------------------

    def _on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            # Copy out: msgspec.Raw would otherwise point into picows's reused buffer.
            data = frame.get_payload_as_bytes()
            try:
                msg = p.decode(data)
            except p.FrameError as exc:
                log.warning("ignoring unusable frame from engine: %s", exc.reason)
                return
            try:
                self._dispatch(msg)
            except Exception:
                log.exception("error handling %s frame", type(msg).__name__)
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _dispatch(self, msg: p.Inbound | None) -> None:
        if isinstance(msg, p.InvocationResult):
            future = self._pending.pop(msg.invocation_id, None)
            if future is None or future.done():
                return  # timed out or unknown
            if p.raw_is_null(msg.error):
                future.set_result(msg.result)
            else:
                future.set_exception(_error_from(msg.error, msg.function_id))  # type: ignore[arg-type]
        elif isinstance(msg, p.InvokeFunction):
            self._on_invoke(msg)
        elif isinstance(msg, p.WorkerRegistered):
            self._worker_id = msg.worker_id
            self._reattach_token = msg.reattach_token or None
            self._resolve_first()
        elif isinstance(msg, p.Ping):
            self._send_live(p.encode(p.Pong()))
        elif isinstance(msg, p.RegistrationRejected):
            log.warning("engine rejected registration: %s", msgspec.structs.asdict(msg))
        elif isinstance(msg, p.TriggerRegistrationResult) and not p.raw_is_null(msg.error):
            err = _error_from(msg.error, msg.function_id)  # type: ignore[arg-type]
            log.warning(
                "trigger %s (%s -> %s) registration failed: %s: %s",
                msg.id,
                msg.trigger_type,
                msg.function_id,
                err.code,
                err.message,
            )
        elif isinstance(msg, p.ErrorFrame):
            code = str(msg.error.get("code", errors.UNKNOWN))
            log.error("engine error %s: %s", code, msg.error.get("message"))
            if code == errors.AUTH_ERROR:
                self._reconnect = False  # retrying with the same credentials is futile
                self._resolve_first(IIIError(code, str(msg.error.get("message", ""))))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)  # keep a strong reference until done
        task.add_done_callback(self._tasks.discard)

    def _on_invoke(self, msg: p.InvokeFunction) -> None:
        function_id = msg.function_id
        invocation_id = msg.invocation_id or None
        fn = self._functions.get(function_id)
        if fn is None:
            log.warning("invoked unknown function %r", function_id)
            error = IIIError(errors.FUNCTION_NOT_FOUND, f"Function '{function_id}' not found")
            self._reply_error(function_id, invocation_id, error, with_trace=False)
            return
        args: tuple[Any, ...] = ()
        if fn.arity:
            args = (_json_decode(msg.data),)
            if fn.arity == 2:
                args += (None if msg.metadata is UNSET else _json_decode(msg.metadata),)
        if fn.is_async:
            self._spawn(self._run_async(fn, invocation_id, args))
        elif fn.inline:
            token = current_function_id.set(fn.id)
            try:
                value = fn.handler(*args)
            except Exception as exc:
                self._reply_error(fn.id, invocation_id, exc)
            else:
                self._reply_value(fn.id, invocation_id, value)
            finally:
                current_function_id.reset(token)
        else:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="pyiii")
            ctx = contextvars.copy_context()
            future = self._loop.run_in_executor(
                self._executor, ctx.run, _call_in_context, fn.id, fn.handler, args
            )
            future.add_done_callback(functools.partial(self._sync_done, fn.id, invocation_id))

    async def _run_async(self, fn: _Function, invocation_id: str | None, args: tuple[Any, ...]) -> None:
        current_function_id.set(fn.id)  # tasks run in their own context copy
        try:
            value = await fn.handler(*args)
        except Exception as exc:
            self._reply_error(fn.id, invocation_id, exc)
        else:
            self._reply_value(fn.id, invocation_id, value)

    def _sync_done(self, function_id: str, invocation_id: str | None, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._reply_error(function_id, invocation_id, exc)
        else:
            self._reply_value(function_id, invocation_id, future.result())

    def _reply_value(self, function_id: str, invocation_id: str | None, value: Any) -> None:
        if invocation_id is None:
            return  # void: nobody is waiting
        try:
            result = _opt_raw(value)
        except (TypeError, msgspec.EncodeError) as exc:
            message = f"result of {function_id} is not JSON-serializable: {exc}"
            self._reply_error(function_id, invocation_id, IIIError(errors.SERIALIZATION_ERROR, message))
            return
        self._send_live(p.encode(p.InvocationResult(invocation_id, function_id, result=result)))

    def _reply_error(
        self, function_id: str, invocation_id: str | None, exc: BaseException, *, with_trace: bool = True
    ) -> None:
        trace = "".join(traceback.format_exception(exc)) if with_trace else None
        if isinstance(exc, IIIError):
            # Raised on purpose (or our own serialization check): the code says it all.
            body = exc.to_body()
            if trace and "stacktrace" not in body:
                body["stacktrace"] = trace
            if with_trace:
                log.warning("function %s failed: %s: %s", function_id, exc.code, exc.message)
        else:
            # The type is half the story: str(KeyError('b')) is just "'b'".
            body = {"code": errors.INVOCATION_FAILED, "message": describe_exception(exc)}
            if trace:
                body["stacktrace"] = trace
            log.error("function %s failed: %s", function_id, trace or body["message"])
        if invocation_id is None:
            return  # void: the log line above is all there is
        error = Raw(_json_encode(body, enc_hook=str))
        self._send_live(p.encode(p.InvocationResult(invocation_id, function_id, error=error)))


def describe_exception(exc: BaseException) -> str:
    """``KeyError: 'b'``: the exception's type, then its text when it has one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- entry points -------------------------------------------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _thread_main(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        loop.close()


def _make(
    url: str | None, options: dict[str, Any], loop: asyncio.AbstractEventLoop, thread: threading.Thread | None
) -> Worker:
    url = url or os.environ.get("III_URL") or DEFAULT_URL
    options.setdefault("name", os.environ.get("III_WORKER_NAME") or f"{platform.node()}:{os.getpid()}")
    options.setdefault("token", os.environ.get("III_TOKEN") or None)
    return Worker(url, loop, thread=thread, **options)


def register_worker(url: str | None = None, **options: Any) -> Worker:
    """Create a worker and connect it to the engine (default ``$III_URL`` or
    ``ws://127.0.0.1:49134``).

    Options: ``name``, ``invocation_timeout_ms`` (30000), ``headers``,
    ``token`` (``$III_TOKEN``; sent as a Bearer header), ``reconnect`` (True),
    ``max_frame_bytes`` (64 MiB), ``connect_timeout`` (30 s).

    Inside a running loop the worker is returned at once and connects in the
    background (calls made meanwhile are queued). With no running loop a
    private loop thread is started and this blocks until connected, raising
    ``IIIError`` (CONNECTION_LOST) if that takes longer than ``connect_timeout``.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        worker = _make(url, options, running, None)
        worker._start()
        return worker
    loop = _new_loop()
    thread = threading.Thread(target=_thread_main, args=(loop,), name="pyiii-worker", daemon=True)
    worker = _make(url, options, loop, thread)
    thread.start()
    loop.call_soon_threadsafe(worker._start)
    try:
        worker._block(worker.wait_connected())
    except BaseException:
        worker.shutdown_sync()
        raise
    return worker


async def connect(url: str | None = None, **options: Any) -> Worker:
    """Async form of ``register_worker`` that waits for the first connect."""
    worker = register_worker(url, **options)
    try:
        await worker.wait_connected()
    except BaseException:
        await worker.shutdown()
        raise
    return worker
