"""The engine: registries, routing and pending invocations. No sockets.

The transport hands every decoded-to-bytes frame to ``Engine.handle`` with
the ``Connection`` it came from; the engine answers through that
connection's ``send``. Built-in functions run in-process and answer with
ordinary ``invocationresult`` frames.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from time import perf_counter
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from pyiii import errors, protocol
from pyiii.engine import worker_lines
from pyiii.engine.access import Access
from pyiii.engine.channels import ChannelManager, ChannelSettings
from pyiii.engine.connection import Connection
from pyiii.engine.module import TriggerProvider
from pyiii.engine.registry import (
    NO_RESULT,
    Builtin,
    CallContext,
    EnqueueHandler,
    EnqueueRequest,
    Function,
    InvocationProvider,
    Pending,
    Trigger,
    TriggerType,
)
from pyiii.engine.triggers import DEFAULT_NS, TriggerRegistry
from pyiii.errors import IIIError
from pyiii.ids import random_uuid
from pyiii.protocol import (
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
)

if TYPE_CHECKING:
    from pyiii.metrics import Recorder

log = logging.getLogger("pyiii.engine")

_Action = protocol.Action

NO_QUEUE_PROVIDER = (
    "No queue provider is installed: the enqueue action needs the iii-queue module;"
    " add `- name: iii-queue` to the workers of iii-config.yaml"
)
SHUTDOWN_CLOSE_CODE = 1012  # "service restart": every SDK reconnects after it
TRACE_MEMORY = 4096  # trace ids remembered for labelling worker log lines
_PONG = protocol.encode(protocol.Pong())


@dataclass(slots=True, frozen=True)
class Limits:
    """Per-engine safety limits; hitting one yields an error, never a crash."""

    max_pending_per_worker: int = 10_000
    # Arrays/objects a payload may nest (None: only msgspec's recursion guard).
    max_nesting_depth: int | None = 64


class _LogBudget:
    """At most ``limit`` lines a second, so a flood of bad input cannot flood the log."""

    __slots__ = ("limit", "start", "used")

    def __init__(self, limit: int = 20) -> None:
        self.limit, self.start, self.used = limit, 0.0, 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self.start >= 1.0:
            self.start, self.used = now, 0
        self.used += 1
        return self.used <= self.limit


def _opt_str(value: str | None | UnsetType) -> str | None:
    return value if isinstance(value, str) else None


class Engine:
    """Routes calls between workers and built-in functions."""

    def __init__(self, limits: Limits | None = None, channels: ChannelSettings | None = None) -> None:
        self.limits = limits or Limits()
        self.channels = ChannelManager(channels)
        self.connections: dict[str, Connection] = {}
        self.functions: dict[tuple[str, str], Function] = {}
        self.trigger_registry = TriggerRegistry()
        # The registry's own dicts, under the names builtins and tests use.
        self.trigger_types: dict[str, TriggerType] = self.trigger_registry.trigger_types
        self.triggers: dict[str, Trigger] = self.trigger_registry.triggers
        self.pending: dict[str, Pending] = {}
        self.trace_functions: dict[str, str] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        # Eagerly stepped built-ins still waiting (see _Stepper); drain() waits
        # for them through _steppers_idle, set when the last one finishes.
        self._steppers: set[_Stepper] = set()
        self._steppers_idle: asyncio.Event | None = None
        self.accepting = True
        self._shutdown_reason = ""
        self._bad_frame_lines = _LogBudget()
        self._failure_lines = _LogBudget()
        self._dispatch: dict[type, Callable[[Connection, Any, bytes], None]] = {
            InvokeFunction: self._on_invoke,
            InvocationResult: self._on_result,
            RegisterFunction: self._on_register_function,
            UnregisterFunction: self._on_unregister_function,
            RegisterTriggerType: self.trigger_registry.on_register_trigger_type,
            RegisterTrigger: self.trigger_registry.on_register_trigger,
            UnregisterTrigger: self.trigger_registry.on_unregister_trigger,
            TriggerRegistrationResult: self.trigger_registry.on_trigger_registration_result,
            protocol.Reattach: self._on_reattach,
            protocol.Ping: self._on_ping,
        }
        # Observers of registry changes (engine::*-available trigger types).
        self.on_workers_changed: list[Callable[[str, str], None]] = []
        self.on_functions_changed: list[Callable[[], None]] = []
        # Takes {"type":"enqueue"} invocations; set by a queue module (None: refused).
        self.enqueue_handler: EnqueueHandler | None = None
        # Builds handlers for registrations with ``invocation``; set by iii-http-functions.
        self.invocation_provider: InvocationProvider | None = None
        # (worker id, namespace, function id) -> the check of its `invocation` under way.
        self._preparing: dict[tuple[str, str, str], asyncio.Task[Any]] = {}
        self.max_preparing = 1024  # registrations with `invocation` checked at once

        # The gated dispatch for connections of RBAC/middleware listeners.
        self.access = Access(self)

        # Set by a module that exposes metrics (the console); None: nothing is recorded.
        self.metrics: Recorder | None = None
        # The workers' auth token (the server sets it), for modules that serve people.
        self.auth_token: str | None = None
        # Modules that others may look into (the console reads them), by module name.
        self.services: dict[str, Any] = {}
        self.started_at = time.time()

    # --- connection lifecycle --------------------------------------------

    def connect(self, conn: Connection) -> None:
        """Register a new connection and greet it (always the first frame)."""
        if conn.dispatch is None:
            conn.dispatch = self.access.dispatch if conn.session is not None else self._dispatch
        self.connections[conn.worker_id] = conn
        conn.send(
            protocol.encode(
                protocol.WorkerRegistered(worker_id=conn.worker_id, reattach_token=conn.reattach_token)
            )
        )
        self._notify_workers("worker_connected", conn.worker_id)

    def disconnect(self, conn: Connection) -> None:
        """Tear down everything the connection owned. Safe to call twice."""
        if self.connections.get(conn.worker_id) is not conn:
            return
        conn.open = False
        del self.connections[conn.worker_id]
        owned = len(conn.functions)
        functions_changed = bool(conn.functions)
        for key in conn.functions:
            fn = self.functions.get(key)
            if fn is not None and fn.owner is conn:
                del self.functions[key]
        conn.functions.clear()
        self.trigger_registry.drop_connection(conn)
        stopped = errors.INVOCATION_STOPPED
        stopped_calls = 0
        for inv_id in list(conn.serving):
            pending = self.pending.pop(inv_id, None)
            if pending is not None:
                stopped_calls += 1
                self._fail(pending, inv_id, IIIError(stopped, "Invocation stopped"))
        conn.serving.clear()
        conn.calling.clear()
        self.channels.drop_owner(conn)
        # At shutdown every worker goes at once: the engine's own line says so.
        worker_lines.disconnected(conn, owned, stopped_calls, quiet=not self.accepting)
        self._notify_workers("worker_disconnected", conn.worker_id)
        if functions_changed:
            self._notify_functions()

    # --- frame dispatch ----------------------------------------------------

    def handle(self, conn: Connection, frame: bytes) -> None:
        """Process one inbound text frame from ``conn``."""
        if conn.backlog is not None:  # a registration hook is deciding: keep the order
            self.access.hold_frame(conn, frame)
            return
        try:
            msg = protocol.decode(frame, self.limits.max_nesting_depth)
        except protocol.FrameError as exc:
            self._bad_frame(conn, frame, exc)
            return
        if msg is None:
            return
        handler = (conn.dispatch or self._dispatch).get(type(msg))
        if handler is not None:
            handler(conn, msg, frame)
        # pong, registerservice, unregistertriggertype, ...: accepted, no reply.

    def _bad_frame(self, conn: Connection, frame: bytes, exc: protocol.FrameError) -> None:
        """Answer a frame that cannot be used; the connection stays open (docs/protocol.md §1.3).

        A call that names an invocation id gets an error result, so the caller
        fails fast instead of waiting for its timeout; an unusable result fails
        the call it answers; anything else gets an ``error`` frame, which the
        official SDKs ignore and a developer can see on the wire.
        """
        if exc.ignorable:
            log.debug("ignoring frame of unknown type %r from %s", exc.msg_type, conn.worker_id)
            return
        self._warn_bad_frame(conn, exc)
        found = protocol.sniff(frame)
        inv_id, fid = found.get("invocation_id"), found.get("function_id", "")
        msg_type = exc.msg_type or found.get("type")  # a guess when the JSON itself is broken
        err = IIIError(exc.code, f"unusable {msg_type or 'untyped'} frame: {exc.reason}")
        if msg_type == "invokefunction" and inv_id:
            self._reply_error(conn, inv_id, fid, err)
            return
        if msg_type == "invocationresult" and inv_id:
            pending = self.pending.get(inv_id)
            if pending is not None and pending.target is conn:
                del self.pending[inv_id]
                conn.serving.discard(inv_id)
                unusable = IIIError(exc.code, f"the worker sent an unusable result: {exc.reason}")
                self._fail(pending, inv_id, unusable)
        conn.send(protocol.encode(protocol.ErrorFrame(error=err.to_body())))

    def _warn_bad_frame(self, conn: Connection, exc: protocol.FrameError) -> None:
        if self._bad_frame_lines.allow():
            log.warning(
                "dropping malformed %s frame from worker %s: %s",
                exc.msg_type or "untyped",
                conn.name,
                exc.reason[:300],
            )

    def _on_ping(self, conn: Connection, msg: protocol.Ping, frame: bytes) -> None:
        conn.send(_PONG)

    # --- functions ---------------------------------------------------------

    def register_builtin(
        self,
        function_id: str,
        handler: Builtin,
        *,
        worker_name: str,
        description: str | None = None,
        eager: bool = False,
    ) -> None:
        """Expose an in-process function under the default namespace.

        ``eager``: the handler is a coroutine function that may be stepped
        outside a Task (it uses no asyncio.timeout or current_task()), so
        calls that never wait finish without the cost of creating a Task.
        """
        self.functions[(DEFAULT_NS, function_id)] = Function(
            id=function_id,
            namespace=DEFAULT_NS,
            handler=handler,
            worker_name=worker_name,
            description=description,
            eager=eager,
        )

    def _on_register_function(self, conn: Connection, msg: RegisterFunction, frame: bytes) -> None:
        key = (conn.namespace, msg.id)
        if self._refuse_conflict(conn, key):
            return
        if msg.invocation is not UNSET:
            self._register_invoked(conn, key, msg)
            return
        self._cancel_preparing(conn, key)
        self._install_function(conn, key, msg, None)

    def _refuse_conflict(self, conn: Connection, key: tuple[str, str]) -> bool:
        """Send ``registrationrejected`` if ``key`` is reserved or owned by someone else."""
        ns, function_id = key
        current = self.functions.get(key)
        reserved = function_id.startswith("engine::") and ns != DEFAULT_NS
        taken = current is not None and current.owner is not conn
        if taken and current is not None:
            # A live other worker, or the engine itself (a built-in), holds it.
            taken = current.owner.open if current.owner is not None else current.handler is not None
        if not (reserved or taken):
            return False
        owner = "" if reserved or current is None or current.owner is None else current.owner.worker_id
        log.warning("refusing %s from %s: already owned by %s", function_id, conn.name, owner or "the engine")
        conn.send(
            protocol.encode(
                protocol.RegistrationRejected(
                    code=errors.FUNCTION_NAMESPACE_CONFLICT,
                    namespace=ns,
                    owner_worker_id=owner,
                    function_id=function_id,
                )
            )
        )
        return True

    def _install_function(
        self, conn: Connection, key: tuple[str, str], msg: RegisterFunction, handler: Builtin | None
    ) -> None:
        current = self.functions.get(key)
        if current is not None and current.owner is not None and current.owner is not conn:
            current.owner.functions.discard(key)
        self.functions[key] = Function(
            id=msg.id,
            namespace=key[0],
            owner=conn,
            handler=handler,
            description=_opt_str(msg.description),
            metadata=msg.metadata,
            request_format=msg.request_format,
            response_format=msg.response_format,
        )
        conn.functions.add(key)
        if conn.info:
            worker_lines.registered(conn, msg.id)
        self._notify_functions()

    def _register_invoked(self, conn: Connection, key: tuple[str, str], msg: RegisterFunction) -> None:
        """A function some module serves (``invocation``): it builds the handler, maybe refusing."""
        provider = self.invocation_provider
        if provider is None:
            self._refuse_registration(
                conn,
                msg.id,
                IIIError(
                    errors.INVOCATION_UNSUPPORTED,
                    f"{msg.id} has an 'invocation' (a function served over HTTP) but the "
                    "iii-http-functions module is not loaded; add `- name: iii-http-functions` "
                    "to the workers of iii-config.yaml",
                ),
            )
            return
        self._cancel_preparing(conn, key)
        if len(self._preparing) >= self.max_preparing:
            # Each check may wait on DNS: a flood of registrations must not pile up tasks.
            limit = IIIError(
                errors.LIMIT_EXCEEDED,
                f"{len(self._preparing)} registrations with an 'invocation' are being checked; "
                "register this function again once they are done",
            )
            self._refuse_registration(conn, msg.id, limit)
            return
        task = self.spawn(self._prepare_invoked(conn, key, msg, provider))
        self._preparing[(conn.worker_id, *key)] = task

    async def _prepare_invoked(
        self, conn: Connection, key: tuple[str, str], msg: RegisterFunction, provider: InvocationProvider
    ) -> None:
        try:
            handler = await provider(msg, conn)
        except IIIError as err:
            self._refuse_registration(conn, msg.id, err)
            return
        except Exception as exc:
            log.exception("preparing %s failed", msg.id)
            self._refuse_registration(conn, msg.id, _internal(msg.id, exc))
            return
        finally:
            mine = (conn.worker_id, *key)
            if self._preparing.get(mine) is asyncio.current_task():
                del self._preparing[mine]
        # The checks again: the worker may have gone, or another taken the id, meanwhile.
        if conn.open and not self._refuse_conflict(conn, key):
            self._install_function(conn, key, msg, handler)

    def _cancel_preparing(self, conn: Connection, key: tuple[str, str]) -> None:
        """A newer registration (or an unregister) of ``key`` by ``conn`` wins over one still in the works."""
        task = self._preparing.pop((conn.worker_id, *key), None)
        if task is not None:
            task.cancel()

    def _refuse_registration(self, conn: Connection, function_id: str, err: IIIError) -> None:
        """Tell the worker (an ``error`` frame: SDKs log it) and the operator why a function was refused."""
        if self._failure_lines.allow():
            log.warning("refusing %s from %s: %s: %s", function_id, conn.name, err.code, err.message)
        if conn.open:
            body = err.to_body()
            body["function_id"] = function_id
            conn.send(protocol.encode(protocol.ErrorFrame(error=body)))

    def _on_unregister_function(self, conn: Connection, msg: UnregisterFunction, frame: bytes) -> None:
        key = (conn.namespace, msg.id)
        self._cancel_preparing(conn, key)
        fn = self.functions.get(key)
        if fn is not None and fn.owner is conn:
            del self.functions[key]
            conn.functions.discard(key)
            self._notify_functions()

    # --- invocations -------------------------------------------------------

    def _on_invoke(self, conn: Connection, msg: InvokeFunction, frame: bytes) -> None:
        inv_id = msg.invocation_id if isinstance(msg.invocation_id, str) else None
        action = msg.action if isinstance(msg.action, _Action) else None
        if not self.accepting:
            if inv_id is not None and (action is None or action.type != "void"):
                self._reply_error(conn, inv_id, msg.function_id, self._shutting_down())
            return
        ns = msg.namespace
        if not isinstance(ns, str):
            ns = DEFAULT_NS
        elif not ns.strip():
            if inv_id is not None and (action is None or action.type != "void"):
                self._reply_error(
                    conn,
                    inv_id,
                    msg.function_id,
                    IIIError(errors.INVALID_NAMESPACE, "namespace must not be blank"),
                )
            return
        if conn.serving and isinstance(msg.traceparent, str):
            self._note_trace(conn, msg.traceparent)
        if action is not None:
            if action.type == "enqueue":
                queue = action.queue if isinstance(action.queue, str) else ""
                self._enqueue(conn, inv_id, ns, queue, msg, protocol.with_caller(msg.data, conn.worker_id))
                return
            if action.type == "void":
                inv_id = None
        fn = self.functions.get((ns, msg.function_id))
        if fn is None:
            if inv_id is not None:
                self._reply_error(conn, inv_id, msg.function_id, self._not_found(ns, msg.function_id))
            return
        if fn.handler is not None:
            # A built-in knows its caller from ctx: no _caller_worker_id splice.
            # (Positional: a Struct's keyword arguments cost more to match.)
            ctx = CallContext(conn, msg.function_id, msg.metadata)
            if self.metrics is not None:
                ctx.started = perf_counter()
            self._run_builtin(fn.handler, msg.data, ctx, conn, inv_id, fn.eager)
            return
        data = protocol.with_caller(msg.data, conn.worker_id)
        assert fn.owner is not None
        if inv_id is None:
            self._send_invoke(fn.owner, None, fn.wire_id or msg.function_id, data, msg)
            return
        if len(conn.calling) >= self.limits.max_pending_per_worker:
            self._reply_error(
                conn,
                inv_id,
                msg.function_id,
                IIIError(
                    errors.LIMIT_EXCEEDED,
                    f"worker has {len(conn.calling)} calls pending, the limit is "
                    f"{self.limits.max_pending_per_worker}; wait for results before sending more",
                ),
            )
            return
        fwd_id = inv_id if inv_id not in self.pending else str(uuid.uuid4())
        self.pending[fwd_id] = Pending(
            target=fn.owner,
            function_id=msg.function_id,
            caller=conn,
            caller_invocation_id=inv_id,
            traceparent=msg.traceparent,
            baggage=msg.baggage,
            started=perf_counter() if self.metrics is not None else 0.0,
        )
        fn.owner.serving.add(fwd_id)
        conn.calling.add(fwd_id)
        self._send_invoke(fn.owner, fwd_id, fn.wire_id or msg.function_id, data, msg)

    def _note_trace(self, conn: Connection, traceparent: str) -> None:
        # A worker that calls out while serving a function does so from that
        # function's span: remember trace -> function, so the worker's log
        # lines (which carry the trace id but no function id) can be labelled.
        trace_id = traceparent[3:35]
        functions = {p.function_id for i in conn.serving if (p := self.pending.get(i)) is not None}
        if len(functions) == 1 and len(trace_id) == 32:
            self.trace_functions[trace_id] = functions.pop()
            if len(self.trace_functions) > TRACE_MEMORY:
                del self.trace_functions[next(iter(self.trace_functions))]

    def function_for_trace(self, trace_id: str) -> str | None:
        """The function a worker was serving when it called out in this trace."""
        return self.trace_functions.get(trace_id)

    @staticmethod
    def _send_invoke(
        target: Connection,
        inv_id: str | None,
        function_id: str,
        data: Raw,
        msg: InvokeFunction | None = None,
        metadata: Raw | UnsetType = UNSET,
    ) -> None:
        out = InvokeFunction(
            function_id=function_id,
            data=data,
            invocation_id=inv_id if inv_id is not None else UNSET,
            metadata=msg.metadata if msg is not None else metadata,
            traceparent=msg.traceparent if msg is not None else UNSET,
            baggage=msg.baggage if msg is not None else UNSET,
        )
        target.send(protocol.encode(out))

    def _on_result(self, conn: Connection, msg: InvocationResult, frame: bytes) -> None:
        pending = self.pending.get(msg.invocation_id)
        if pending is None or pending.target is not conn:
            # Only the worker the call was routed to may answer it: invocation
            # ids travel to callers and targets, never to bystanders.
            log.debug("dropping result for unknown invocation %s", msg.invocation_id)
            return
        del self.pending[msg.invocation_id]
        conn.serving.discard(msg.invocation_id)
        error = msg.error
        if error is not UNSET and protocol.raw_is_null(error):
            error = UNSET
        if pending.started:
            self._record_pending(pending, error is UNSET)
        if pending.future is not None:
            if not pending.future.done():
                if error is not UNSET:
                    pending.future.set_exception(_error_from_raw(error, pending.function_id))
                else:
                    pending.future.set_result(None if protocol.raw_is_null(msg.result) else msg.result)  # type: ignore[arg-type]
            return
        caller = pending.caller
        if caller is None or not caller.open:
            return
        caller.calling.discard(msg.invocation_id)
        if error is not UNSET:
            error = _clean_error(error)  # type: ignore[arg-type]
            if self._failure_lines.allow():
                failure = _error_from_raw(error, pending.function_id)  # type: ignore[arg-type]
                log.warning(
                    "function %s (worker %r) failed for worker %r: %s: %s",
                    pending.function_id,
                    conn.name,
                    caller.name,
                    failure.code,
                    failure.message[:500],
                )
            result: Raw | UnsetType = UNSET
        else:
            result = UNSET if protocol.raw_is_null(msg.result) else msg.result
            if (
                pending.caller_invocation_id == msg.invocation_id
                and msg.error is UNSET
                and result is not UNSET
            ):
                # Nothing to change: relay the worker's frame byte for byte.
                caller.send(frame)
                return
        caller.send(
            protocol.encode(
                InvocationResult(
                    invocation_id=pending.caller_invocation_id or msg.invocation_id,
                    function_id=pending.function_id,
                    result=result,
                    error=error,
                    traceparent=pending.traceparent,
                    baggage=pending.baggage,
                )
            )
        )

    def _record_pending(self, pending: Pending, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.invocation(pending.function_id, ok, perf_counter() - pending.started)

    def _record(self, ctx: CallContext, ok: bool) -> None:
        if self.metrics is not None and ctx.started:
            self.metrics.invocation(ctx.function_id, ok, perf_counter() - ctx.started)

    def _fail(self, pending: Pending, fwd_id: str, err: IIIError) -> None:
        if pending.started:
            self._record_pending(pending, False)
        if pending.future is not None:
            if not pending.future.done():
                pending.future.set_exception(err)
            return
        caller = pending.caller
        if caller is not None and caller.open and pending.caller_invocation_id is not None:
            caller.calling.discard(fwd_id)
            self._reply_error(caller, pending.caller_invocation_id, pending.function_id, err)

    def _not_found(self, ns: str, function_id: str) -> IIIError:
        message = f"Function {function_id} not found in namespace {ns}."
        others = sorted(n for (n, fid) in self.functions if fid == function_id and n != ns)
        if others:
            message += f" It is registered in namespace(s): {', '.join(others)}."
        return IIIError(errors.FUNCTION_NOT_FOUND, message)

    @staticmethod
    def _reply_error(conn: Connection, inv_id: str, function_id: str, err: IIIError) -> None:
        conn.send(
            protocol.encode(
                InvocationResult(
                    invocation_id=inv_id,
                    function_id=function_id,
                    error=Raw(protocol.encode(err.to_body())),
                )
            )
        )

    @staticmethod
    def _reply_result(conn: Connection, inv_id: str, function_id: str, value: Any) -> None:
        if value is NO_RESULT or value is None:
            result: Raw | UnsetType = UNSET
        elif isinstance(value, Raw):
            result = value
        else:
            result = Raw(protocol.encode(value))
        conn.send(protocol.encode(InvocationResult(inv_id, function_id, result)))

    # --- built-ins -----------------------------------------------------------

    def _run_builtin(
        self,
        handler: Builtin,
        data: Raw,
        ctx: CallContext,
        conn: Connection | None,
        inv_id: str | None,
        eager: bool = False,
    ) -> None:
        try:
            out = handler(data, ctx)
            if eager and type(out) is CoroutineType:
                # Run it eagerly: most calls of such a built-in (a state::get from
                # memory) finish without ever waiting, and then no Task is created.
                try:
                    waiting_on = out.send(None)
                except StopIteration as done:
                    if ctx.started and (m := self.metrics) is not None:
                        m.invocation(ctx.function_id, True, perf_counter() - ctx.started)
                    if conn is not None and inv_id is not None:
                        self._reply_result(conn, inv_id, ctx.function_id, done.value)
                    return
                _Stepper(self, out, ctx, conn, inv_id).wait(waiting_on)
                return
        except IIIError as err:
            self._record(ctx, False)
            if conn is not None and inv_id is not None:
                self._reply_error(conn, inv_id, ctx.function_id, err)
            return
        except Exception as exc:
            self._record(ctx, False)
            log.exception("built-in %s failed", ctx.function_id)
            if conn is not None and inv_id is not None:
                self._reply_error(conn, inv_id, ctx.function_id, _internal(ctx.function_id, exc))
            return
        # (A Raw, the usual answer, is never awaitable; isawaitable's ABC check costs more.)
        if type(out) is not Raw and inspect.isawaitable(out):
            self.spawn(self._finish_builtin(out, ctx, conn, inv_id))
            return
        if ctx.started:
            self._record(ctx, True)
        if conn is not None and inv_id is not None:
            self._reply_result(conn, inv_id, ctx.function_id, out)

    async def _finish_builtin(
        self,
        out: Awaitable[Any],
        ctx: CallContext,
        conn: Connection | None,
        inv_id: str | None,
    ) -> None:
        try:
            value = await out
        except IIIError as err:
            self._record(ctx, False)
            if conn is not None and inv_id is not None and conn.open:
                self._reply_error(conn, inv_id, ctx.function_id, err)
            return
        except Exception as exc:
            self._record(ctx, False)
            log.exception("built-in %s failed", ctx.function_id)
            if conn is not None and inv_id is not None and conn.open:
                self._reply_error(conn, inv_id, ctx.function_id, _internal(ctx.function_id, exc))
            return
        self._record(ctx, True)
        if conn is not None and inv_id is not None and conn.open:
            self._reply_result(conn, inv_id, ctx.function_id, value)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a background task and keep a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self.track(task)
        return task

    def track(self, fut: asyncio.Future[Any]) -> None:
        """Keep ``fut`` referenced (and waited for by ``drain``) until it is done."""
        self._tasks.add(fut)
        fut.add_done_callback(self._tasks.discard)

    # --- calls made by the engine itself (triggers, enqueue, bridge) --------

    async def call(
        self,
        function_id: str,
        data: Any,
        *,
        namespace: str = DEFAULT_NS,
        metadata: Raw | UnsetType = UNSET,
    ) -> Raw | None:
        """Invoke any function from inside the engine and await its result."""
        raw = data if isinstance(data, Raw) else Raw(protocol.encode(data))
        fn = self.functions.get((namespace, function_id))
        if fn is None:
            raise self._not_found(namespace, function_id)
        if not self.accepting and fn.handler is None:
            raise self._shutting_down()
        started = perf_counter() if self.metrics is not None else 0.0
        if fn.handler is not None:
            ctx = CallContext(caller=None, function_id=function_id, metadata=metadata, started=started)
            try:
                out = fn.handler(raw, ctx)
                if inspect.isawaitable(out):
                    out = await out
            except Exception:
                self._record(ctx, False)
                raise
            self._record(ctx, True)
            if out is NO_RESULT or out is None:
                return None
            return out if isinstance(out, Raw) else Raw(protocol.encode(out))
        assert fn.owner is not None
        inv_id = random_uuid()
        future: asyncio.Future[Raw | None] = asyncio.get_running_loop().create_future()
        self.pending[inv_id] = Pending(
            target=fn.owner, function_id=function_id, future=future, started=started
        )
        fn.owner.serving.add(inv_id)
        self._send_invoke(fn.owner, inv_id, fn.wire_id or function_id, raw, metadata=metadata)
        try:
            return await future
        finally:
            if self.pending.pop(inv_id, None) is not None:
                fn.owner.serving.discard(inv_id)

    async def call_within(
        self,
        timeout_s: float,
        function_id: str,
        data: Any,
        *,
        namespace: str = DEFAULT_NS,
        metadata: Raw | UnsetType = UNSET,
    ) -> Raw | None:
        """``call``, or TimeoutError after ``timeout_s`` (the invocation is then forgotten).

        A future and a timer, not ``asyncio.wait_for`` on ``call``: no task,
        waiter and timeout scope per call (queue deliveries: +14 % jobs/s).
        """
        loop = asyncio.get_running_loop()
        call = self.call_future(function_id, data, namespace=namespace, metadata=metadata, loop=loop)
        if isinstance(call, asyncio.Task):  # a handler inside the engine: a task cannot be failed
            return await asyncio.wait_for(call, timeout_s)
        timer = loop.call_later(timeout_s, _expire, call)
        try:
            return await call
        finally:
            timer.cancel()
            call.cancel()  # a no-op once done; otherwise it forgets the invocation

    def call_future(
        self,
        function_id: str,
        data: Any,
        *,
        namespace: str = DEFAULT_NS,
        metadata: Raw | UnsetType = UNSET,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[Raw | None]:
        """``call`` as a future, without a task when a worker serves the function.

        For callers that wait on a call and other things at once (the HTTP
        module, ``call_within``). Cancelling the future forgets the invocation. Raises
        (not through the future) when the function is unknown. ``loop``: the
        running loop, if the caller has it (``get_running_loop`` checks the
        process id, a system call each time).
        """
        fn = self.functions.get((namespace, function_id))
        if fn is None:
            raise self._not_found(namespace, function_id)
        if fn.handler is not None or not self.accepting:
            return asyncio.ensure_future(self.call(function_id, data, namespace=namespace, metadata=metadata))
        assert fn.owner is not None
        raw = data if isinstance(data, Raw) else Raw(protocol.encode(data))
        owner = fn.owner
        inv_id = random_uuid()
        future: asyncio.Future[Raw | None] = (loop or asyncio.get_running_loop()).create_future()
        started = perf_counter() if self.metrics is not None else 0.0
        self.pending[inv_id] = Pending(target=owner, function_id=function_id, future=future, started=started)
        owner.serving.add(inv_id)

        def forget(_: asyncio.Future[Raw | None]) -> None:
            if self.pending.pop(inv_id, None) is not None:
                owner.serving.discard(inv_id)

        future.add_done_callback(forget)
        self._send_invoke(owner, inv_id, fn.wire_id or function_id, raw, metadata=metadata)
        return future

    def call_void(
        self,
        function_id: str,
        data: Any,
        *,
        namespace: str = DEFAULT_NS,
        metadata: Raw | UnsetType = UNSET,
    ) -> bool:
        """Fire-and-forget invoke from inside the engine. False if no such function."""
        raw = data if isinstance(data, Raw) else Raw(protocol.encode(data))
        fn = self.functions.get((namespace, function_id))
        if fn is None:
            return False
        if fn.handler is not None:
            ctx = CallContext(caller=None, function_id=function_id, metadata=metadata)
            if self.metrics is not None:
                ctx.started = perf_counter()
            self._run_builtin(fn.handler, raw, ctx, None, None)
        else:
            assert fn.owner is not None
            self._send_invoke(fn.owner, None, fn.wire_id or function_id, raw, metadata=metadata)
        return True

    def _enqueue(
        self, conn: Connection, inv_id: str | None, ns: str, queue: str, msg: InvokeFunction, data: Raw
    ) -> None:
        """Hand an enqueue invocation to the queue provider; reply with its receipt."""
        handler = self.enqueue_handler
        if handler is None:
            if inv_id is not None:
                error = IIIError(errors.ENQUEUE_ERROR, NO_QUEUE_PROVIDER)
                self._reply_error(conn, inv_id, msg.function_id, error)
            return
        request = EnqueueRequest(
            queue=queue,
            function_id=msg.function_id,
            namespace=ns,
            data=data,
            metadata=msg.metadata,
            traceparent=_opt_str(msg.traceparent),
            baggage=_opt_str(msg.baggage),
        )
        self.spawn(self._finish_enqueue(conn, inv_id, msg.function_id, handler(request)))

    async def _finish_enqueue(
        self, conn: Connection, inv_id: str | None, function_id: str, accepted: Awaitable[str]
    ) -> None:
        try:
            receipt = await accepted
        except IIIError as err:
            error = err if err.code == errors.ENQUEUE_ERROR else IIIError(errors.ENQUEUE_ERROR, err.message)
            if inv_id is not None and conn.open:
                self._reply_error(conn, inv_id, function_id, error)
            return
        except Exception as exc:
            log.exception("enqueue of %s failed", function_id)
            if inv_id is not None and conn.open:
                self._reply_error(conn, inv_id, function_id, IIIError(errors.ENQUEUE_ERROR, repr(exc)))
            return
        if inv_id is not None and conn.open:
            self._reply_result(conn, inv_id, function_id, {"messageReceiptId": receipt})

    # --- trigger types and triggers (see triggers.py) ------------------------

    def register_trigger_type(
        self, type_id: str, description: str, provider: TriggerProvider, *, worker_name: str
    ) -> None:
        """Expose a built-in trigger type and activate bindings parked for it."""
        self.trigger_registry.register_trigger_type(type_id, description, provider, worker_name=worker_name)

    def add_trigger(
        self, trigger_type: str, function_id: str, config: Any, *, metadata: Any = None
    ) -> Trigger:
        """Create an engine-owned binding (``engine::register_trigger``)."""
        return self.trigger_registry.add_trigger(trigger_type, function_id, config, metadata=metadata)

    def remove_trigger(self, trigger_id: str) -> bool:
        """Remove any binding by id; True if it existed."""
        return self.trigger_registry.remove_trigger(trigger_id)

    # --- reattach -------------------------------------------------------------

    def _on_reattach(self, conn: Connection, msg: protocol.Reattach, frame: bytes) -> None:
        old = self.connections.get(msg.previous_worker_id)
        if old is None or old is conn:
            return
        # Worker ids are public (engine::workers::list); only the secret token
        # proves the sender is the worker that owned the old connection.
        if msg.reattach_token != old.reattach_token:
            log.warning("reattach from %s refused: token does not match", conn.worker_id)
            return
        # The old socket is a zombie of this worker: free its ids now so the
        # replayed registrations that follow take over without a conflict.
        log.info("worker %s reattached as %s", old.worker_id, conn.worker_id)
        old.close(1000, "replaced by a reattached connection")
        self.disconnect(old)

    # --- notifications ---------------------------------------------------------

    def _notify_workers(self, event: str, worker_id: str) -> None:
        for cb in self.on_workers_changed:
            cb(event, worker_id)

    def _notify_functions(self) -> None:
        for cb in self.on_functions_changed:
            cb()

    # --- shutdown ---------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Sizes of the engine's tables (``engine::stats``); all shrink back when workers leave."""
        return {
            "connections": len(self.connections),
            "functions": sum(1 for fn in self.functions.values() if fn.owner is not None),
            "builtin_functions": sum(1 for fn in self.functions.values() if fn.owner is None),
            "pending": len(self.pending),
            "calling": sum(len(c.calling) for c in self.connections.values()),
            "serving": sum(len(c.serving) for c in self.connections.values()),
            "triggers": len(self.triggers),
            "trigger_types": len(self.trigger_types),
            "tasks": len(self._tasks) + len(self._steppers),
            "channels": len(self.channels),
            "channel_buffered_bytes": self.channels.buffered_bytes(),
            "channel_stalls": self.channels.stalls,
        }

    def _shutting_down(self) -> IIIError:
        return IIIError(errors.SHUTTING_DOWN, self._shutdown_reason or "the engine is shutting down")

    def begin_shutdown(self, reason: str) -> None:
        """Stop taking calls: new ones get SHUTTING_DOWN, so do calls waiting on workers.

        Built-in calls already running (a state write waiting for its commit)
        are left to finish; ``drain`` waits for them.
        """
        self.accepting = False
        self._shutdown_reason = reason
        for fwd_id, pending in list(self.pending.items()):
            del self.pending[fwd_id]
            pending.target.serving.discard(fwd_id)
            self._fail(pending, fwd_id, IIIError(errors.SHUTTING_DOWN, reason))

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for running built-in calls; True if none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks or self._steppers:
            left = deadline - loop.time()
            if left <= 0:
                return False
            waits: list[asyncio.Future[Any]] = list(self._tasks)
            idle = None
            if self._steppers:
                self._steppers_idle = asyncio.Event()
                idle = asyncio.ensure_future(self._steppers_idle.wait())
                waits.append(idle)
            try:
                await asyncio.wait(waits, timeout=left)
            finally:
                if idle is not None:
                    idle.cancel()
        return True

    def _stepper_done(self, stepper: _Stepper) -> None:
        self._steppers.discard(stepper)
        if not self._steppers and self._steppers_idle is not None:
            self._steppers_idle.set()

    def stop_all(self, reason: str) -> None:
        """Fail every pending call with SHUTTING_DOWN and close every connection (1012).

        1012 (service restart) rather than 1001: the official Python SDK
        0.11.6 takes 1000/1001 as a deliberate goodbye and never reconnects.
        """
        self.begin_shutdown(reason)
        for conn in list(self.connections.values()):
            conn.close(SHUTDOWN_CLOSE_CODE, reason)
            self.disconnect(conn)
        self.channels.abort_all(reason)


class _Stepper:
    """Drives an eagerly started built-in from future callbacks: a Task without the Task.

    The coroutine was stepped once by hand and is waiting on an asyncio
    future (say, a disk commit). Each time that completes it is stepped
    again, exactly as a Task would, and its result is sent to the caller.
    """

    __slots__ = ("conn", "coro", "ctx", "engine", "inv_id")

    def __init__(
        self,
        engine: Engine,
        coro: Coroutine[Any, Any, Any],
        ctx: CallContext,
        conn: Connection | None,
        inv_id: str | None,
    ) -> None:
        self.engine = engine
        self.coro = coro
        self.ctx = ctx
        self.conn = conn
        self.inv_id = inv_id
        # Stands in for a task (engine.drain() waits for it), without a future.
        engine._steppers.add(self)

    def wait(self, waiting_on: Any) -> None:
        if waiting_on is None:  # a bare yield: just go round the loop
            asyncio.get_running_loop().call_soon(self.step)
            return
        waiting_on._asyncio_future_blocking = False  # what Task does before waiting
        waiting_on.add_done_callback(self._woken)

    def _woken(self, _fut: Any) -> None:
        self.step()

    def step(self) -> None:
        ctx, conn, inv_id = self.ctx, self.conn, self.inv_id
        answer = conn is not None and inv_id is not None and conn.open
        try:
            waiting_on = self.coro.send(None)
        except StopIteration as finished:
            self.engine._stepper_done(self)
            self.engine._record(ctx, True)
            if answer:
                self.engine._reply_result(conn, inv_id, ctx.function_id, finished.value)  # type: ignore[arg-type]
        except IIIError as err:
            self.engine._stepper_done(self)
            self.engine._record(ctx, False)
            if answer:
                self.engine._reply_error(conn, inv_id, ctx.function_id, err)  # type: ignore[arg-type]
        except Exception as exc:
            self.engine._stepper_done(self)
            self.engine._record(ctx, False)
            log.exception("built-in %s failed", ctx.function_id)
            if answer:
                self.engine._reply_error(conn, inv_id, ctx.function_id, _internal(ctx.function_id, exc))  # type: ignore[arg-type]
        else:
            self.wait(waiting_on)


def _error_from_raw(error: Raw, function_id: str) -> IIIError:
    try:
        body = msgspec.json.decode(error)
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict):
        return IIIError(errors.UNKNOWN, bytes(error).decode(errors="replace"), function_id=function_id)
    stack = body.get("stacktrace")
    return IIIError(
        str(body.get("code", errors.UNKNOWN)),
        str(body.get("message", "")),
        function_id=function_id,
        stacktrace=stack if isinstance(stack, str) else None,
    )


def _clean_error(error: Raw) -> Raw:
    """Pass an error body through, minus a ``stacktrace: null`` Node would choke on."""
    if b'"stacktrace"' not in bytes(error):
        return error
    try:
        body = msgspec.json.decode(error)
    except msgspec.DecodeError:
        return error
    if isinstance(body, dict) and body.get("stacktrace", "") is None:
        del body["stacktrace"]
        return Raw(protocol.encode(body))
    return error


def _internal(function_id: str, exc: Exception) -> IIIError:
    return IIIError("internal_error", f"{function_id} failed inside the engine: {exc!r}")


def _expire(call: asyncio.Future[Any]) -> None:
    """``call_within``'s deadline passed."""
    if not call.done():
        call.set_exception(TimeoutError())
