"""What the engine does for connections of a gated listener (RBAC and/or middleware).

The decisions are ``rbac.py``'s; this module wires them to the engine: the
auth call at upgrade time, the per-call check and the middleware detour,
and the registration checks with their hook calls. A connection of a gated
listener dispatches its frames through :attr:`Access.dispatch` instead of
the engine's table; an internal listener's connections never come here.

A registration that waits on a hook holds the connection's later frames
(``Connection.backlog``) until it is decided, so a worker's frames still
take effect in the order it sent them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw

from pyiii import errors, protocol
from pyiii.engine import rbac
from pyiii.engine.connection import Connection
from pyiii.engine.rbac import FORBIDDEN, Grants, RbacPolicy, Session
from pyiii.errors import IIIError
from pyiii.protocol import (
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    UnregisterFunction,
)

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.access")

# Frames one connection may queue behind a pending registration hook.
MAX_BACKLOG = 10_000
MIDDLEWARE_UNAVAILABLE = "MIDDLEWARE_UNAVAILABLE"


class Refusal(Exception):
    """An upgrade the auth step refuses: HTTP ``status``, and what the client is told."""

    def __init__(self, status: int, code: str, message: str, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail  # for the engine's log only


def _decode(raw: Raw | None) -> Any:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None


def _wants_answer(msg: InvokeFunction) -> bool:
    """The caller waits for a result (an invocation id, and not a void action)."""
    return isinstance(msg.invocation_id, str) and not (
        isinstance(msg.action, protocol.Action) and msg.action.type == "void"
    )


class Access:
    """One per engine: the gated dispatch table and the flows behind it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        from pyiii.engine.engine import _LogBudget  # the engine's own log limiter

        self._lines = _LogBudget()
        self.dispatch: dict[type, Callable[[Connection, Any, bytes], None]] = {
            **engine._dispatch,
            InvokeFunction: self._on_invoke,
            RegisterFunction: self._on_register_function,
            UnregisterFunction: self._on_unregister_function,
            RegisterTriggerType: self._on_register_trigger_type,
            RegisterTrigger: self._on_register_trigger,
        }

    def _warn(self, message: str, *args: Any) -> None:
        if self._lines.allow():
            log.warning(message, *args)

    # --- authentication (called by the transport before the upgrade is answered)

    async def authenticate(self, policy: RbacPolicy, auth_input: dict[str, Any]) -> Grants:
        """Run the listener's auth function; the grants, or Refusal."""
        fid = policy.auth_function_id
        if fid is None:
            return rbac.OPEN_GRANTS
        timeout = policy.auth_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                raw = await self.engine.call(fid, auth_input)
        except TimeoutError:
            raise Refusal(
                503,
                errors.AUTH_ERROR,
                "authentication timed out; try again later",
                f"auth function {fid} did not answer within {policy.auth_timeout_ms} ms "
                "(rbac.auth_timeout_ms)",
            ) from None
        except IIIError as err:
            if err.code == errors.SHUTTING_DOWN:
                raise Refusal(503, errors.SHUTTING_DOWN, "the engine is shutting down", err.message) from None
            if err.code == errors.FUNCTION_NOT_FOUND:
                raise Refusal(
                    503,
                    errors.AUTH_ERROR,
                    "authentication is not available; try again later",
                    f"auth function {fid} is not registered",
                ) from None
            raise Refusal(
                401,
                errors.AUTH_ERROR,
                f"connection refused: {err.message}"[:200],
                f"auth function {fid} refused it: {err.code}: {err.message}"[:300],
            ) from None
        value = _decode(raw)
        if value is None:
            raise Refusal(
                403, errors.AUTH_ERROR, "connection refused", f"auth function {fid} returned no result"
            )
        try:
            return rbac.parse_auth_result(value)
        except rbac.RbacError as exc:
            raise Refusal(
                500,
                errors.AUTH_ERROR,
                "authentication failed inside the engine",
                f"auth function {fid} returned an unusable AuthResult: {exc}",
            ) from None

    # --- calls --------------------------------------------------------------

    def _on_invoke(self, conn: Connection, msg: InvokeFunction, frame: bytes) -> None:
        session = conn.session
        assert session is not None
        if msg.namespace is UNSET and session.middleware_function_id is None:
            # Hot path: a function this session was already allowed to call, same record.
            fn = self.engine.functions.get((rbac.DEFAULT_NS, msg.function_id))
            if fn is not None and session.cleared.get(msg.function_id) is fn:
                self.engine._on_invoke(conn, msg, frame)
                return
        ns = msg.namespace if isinstance(msg.namespace, str) else rbac.DEFAULT_NS
        fn = self.engine.functions.get((ns, msg.function_id))
        denial = session.check(msg.function_id, ns, fn, fn.metadata if fn is not None else UNSET)
        if denial is not None:
            self._warn(
                "refused %s for worker %s on %s: %s",
                msg.function_id,
                conn.name,
                session.listener,
                "in forbidden_functions" if denial.explicit else "not exposed",
            )
            if _wants_answer(msg) and isinstance(msg.invocation_id, str):
                err = IIIError(FORBIDDEN, denial.message)
                self.engine._reply_error(conn, msg.invocation_id, msg.function_id, err)
            return
        if msg.function_id == "engine::workers::register" and session.grants.namespaces:
            # A session scoped to namespaces may declare only those.
            body = _decode(msg.data)
            declared = body.get("namespace", rbac.DEFAULT_NS) if isinstance(body, dict) else rbac.DEFAULT_NS
            if declared not in session.grants.namespaces:
                if _wants_answer(msg) and isinstance(msg.invocation_id, str):
                    allowed = ", ".join(sorted(session.grants.namespaces))
                    err = IIIError(
                        FORBIDDEN, f"namespace '{declared}' not allowed for this connection ({allowed})"
                    )
                    self.engine._reply_error(conn, msg.invocation_id, msg.function_id, err)
                return
        mw = session.middleware_function_id
        # The engine's own engine::* built-ins skip the middleware: re-invoked
        # from the middleware's connection they would lose this caller's session
        # (engine::functions::list would list everything).
        if mw is not None and not (
            fn is not None and fn.handler is not None and msg.function_id.startswith("engine::")
        ):
            self.engine.spawn(self._through_middleware(conn, session, mw, ns, msg, _wants_answer(msg)))
            return
        self.engine._on_invoke(conn, msg, frame)

    async def _through_middleware(
        self, conn: Connection, session: Session, mw: str, ns: str, msg: InvokeFunction, answer: bool
    ) -> None:
        body: dict[str, Any] = {
            "function_id": msg.function_id,
            "payload": msg.data,
            "context": session.context,
            "namespace": ns,
        }
        if isinstance(msg.action, protocol.Action):
            body["action"] = msgspec.to_builtins(msg.action)
        engine = self.engine
        target = mw if (ns, mw) in engine.functions else None
        try:
            if target is None and (rbac.DEFAULT_NS, mw) not in engine.functions:
                self._warn(
                    "middleware %s of %s is not registered; refusing %s",
                    mw,
                    session.listener,
                    msg.function_id,
                )
                raise IIIError(
                    MIDDLEWARE_UNAVAILABLE, "this listener's middleware is not available; try again later"
                )
            raw = await engine.call(
                mw, body, namespace=ns if target is not None else rbac.DEFAULT_NS, metadata=msg.metadata
            )
        except IIIError as err:
            if answer and conn.open:
                engine._reply_error(conn, msg.invocation_id, msg.function_id, err)  # type: ignore[arg-type]
            return
        if answer and conn.open:
            engine._reply_result(conn, msg.invocation_id, msg.function_id, raw)  # type: ignore[arg-type]

    # --- registrations ------------------------------------------------------------

    def _hold(self, conn: Connection, flow: Coroutine[Any, Any, None]) -> None:
        """Run ``flow`` (a registration waiting on a hook) with the connection's later frames held."""
        conn.backlog = deque()
        self.engine.spawn(self._held(conn, flow))

    async def _held(self, conn: Connection, flow: Coroutine[Any, Any, None]) -> None:
        try:
            await flow
        except Exception:
            log.exception("a registration hook flow failed for worker %s", conn.name)
        finally:
            backlog, conn.backlog = conn.backlog or deque(), None
            while backlog and conn.open:
                self.engine.handle(conn, backlog.popleft())
                if conn.backlog is not None:  # that frame waits on a hook too: the rest wait behind it
                    conn.backlog.extend(backlog)
                    break

    def hold_frame(self, conn: Connection, frame: bytes) -> None:
        """Queue a frame behind a pending hook; drop the connection if it floods."""
        assert conn.backlog is not None
        if len(conn.backlog) >= MAX_BACKLOG:
            self._warn(
                "dropping worker %s: %d frames queued behind a registration hook", conn.name, MAX_BACKLOG
            )
            conn.close(1008, f"{errors.LIMIT_EXCEEDED}: too many frames while a registration was checked")
            self.engine.disconnect(conn)
            return
        conn.backlog.append(frame)

    async def _hook(self, hook_id: str, body: dict[str, Any], timeout_ms: int) -> Any:
        """The hook's answer, or None (deny) when it raised, hung, or is not registered."""
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                return _decode(await self.engine.call(hook_id, body))
        except TimeoutError:
            self._warn("registration hook %s did not answer within %d ms; denied", hook_id, timeout_ms)
        except IIIError as err:
            self._warn("registration hook %s denied: %s: %s", hook_id, err.code, err.message[:200])
        return None

    def _refuse_registration(self, conn: Connection, what: str, reason: str) -> None:
        # An error frame, not registrationrejected: the official Python SDK takes
        # any registrationrejected but a namespace conflict as fatal.
        self._warn("refused %s from worker %s: %s", what, conn.name, reason)
        conn.send(
            protocol.encode(
                protocol.ErrorFrame(error={"code": FORBIDDEN, "message": f"{what} not allowed: {reason}"})
            )
        )

    def _on_register_function(self, conn: Connection, msg: RegisterFunction, frame: bytes) -> None:
        session = conn.session
        assert session is not None
        if not session.grants.allow_function_registration:
            self._refuse_registration(
                conn, f"registration of {msg.id}", "function registration is not granted"
            )
            return
        policy = session.policy
        hook = policy.on_function_registration_function_id if policy is not None else None
        if hook is None:
            self._register_function(conn, session, msg, msg.id)
            return
        self._hold(conn, self._function_hook(conn, session, msg, hook, policy.auth_timeout_ms))  # type: ignore[union-attr]

    async def _function_hook(
        self, conn: Connection, session: Session, msg: RegisterFunction, hook: str, timeout_ms: int
    ) -> None:
        meta = rbac.decode_metadata(msg.metadata)
        desc = msg.description if isinstance(msg.description, str) else None
        # The hook sees (and may map) the id the worker sent; the prefix is added after.
        body = {
            "function_id": msg.id,
            "description": desc,
            "metadata": meta,
            "namespace": conn.namespace,
            "context": session.context,
        }
        current = rbac.FunctionRegistration(msg.id, desc, meta)
        mapped = rbac.apply_function_hook(await self._hook(hook, body, timeout_ms), current)
        if not conn.open:
            return
        if mapped is None:
            self._refuse_registration(conn, f"registration of {msg.id}", f"denied by {hook}")
            return
        changed = msgspec.structs.replace(
            msg,
            description=mapped.description if mapped.description is not None else msg.description,
            metadata=Raw(protocol.encode(mapped.metadata)) if mapped.metadata is not None else msg.metadata,
        )
        self._register_function(conn, session, changed, mapped.function_id)

    def _register_function(
        self,
        conn: Connection,
        session: Session,
        msg: RegisterFunction,
        new_id: str,
        *,
        prefixed: bool = False,
    ) -> None:
        """Register under ``new_id`` (the session's prefix added unless ``prefixed``); the
        worker keeps being invoked under the id it sent."""
        registered = new_id if prefixed else session.registered_id(new_id)
        if registered.startswith("engine::"):
            self._refuse_registration(conn, f"registration of {registered}", "engine::* ids are reserved")
            return
        wire = msg.id
        engine = self.engine
        engine._on_register_function(conn, msgspec.structs.replace(msg, id=registered), b"")
        fn = engine.functions.get((conn.namespace, registered))
        if fn is not None and fn.owner is conn:
            fn.wire_id = wire if wire != registered else ""
            session.renamed[wire] = registered

    def _on_unregister_function(self, conn: Connection, msg: UnregisterFunction, frame: bytes) -> None:
        session = conn.session
        assert session is not None
        registered = session.renamed.pop(msg.id, msg.id)
        self.engine._on_unregister_function(conn, UnregisterFunction(id=registered), frame)

    def _on_register_trigger_type(self, conn: Connection, msg: RegisterTriggerType, frame: bytes) -> None:
        session = conn.session
        assert session is not None
        if not session.may_register_trigger_type():
            self._refuse_registration(
                conn, f"trigger type {msg.id}", "allow_trigger_type_registration is not granted"
            )
            return
        policy = session.policy
        hook = policy.on_trigger_type_registration_function_id if policy is not None else None
        if hook is None:
            self.engine.trigger_registry.on_register_trigger_type(conn, msg, frame)
            return
        self._hold(conn, self._trigger_type_hook(conn, session, msg, hook, policy.auth_timeout_ms))  # type: ignore[union-attr]

    async def _trigger_type_hook(
        self, conn: Connection, session: Session, msg: RegisterTriggerType, hook: str, timeout_ms: int
    ) -> None:
        desc = msg.description or ""
        body = {"trigger_type_id": msg.id, "description": desc, "context": session.context}
        mapped = rbac.apply_trigger_type_hook(await self._hook(hook, body, timeout_ms), msg.id, desc)
        if not conn.open:
            return
        if mapped is None:
            self._refuse_registration(conn, f"trigger type {msg.id}", f"denied by {hook}")
            return
        new_id, new_desc = mapped
        registry = self.engine.trigger_registry
        registry.on_register_trigger_type(
            conn, msgspec.structs.replace(msg, id=new_id, description=new_desc), b""
        )
        tt = registry.trigger_types.get(new_id)
        if tt is not None and tt.provider is conn and new_id != msg.id:
            tt.wire_id = msg.id

    def _on_register_trigger(self, conn: Connection, msg: RegisterTrigger, frame: bytes) -> None:
        session = conn.session
        assert session is not None
        if not session.may_bind(msg.trigger_type):
            self._deny_trigger(
                conn, msg, f"trigger type '{msg.trigger_type}' is not in allowed_trigger_types"
            )
            return
        policy = session.policy
        hook = policy.on_trigger_registration_function_id if policy is not None else None
        if hook is None:
            self._register_trigger(conn, session, msg)
            return
        self._hold(conn, self._trigger_hook(conn, session, msg, hook, policy.auth_timeout_ms))  # type: ignore[union-attr]

    async def _trigger_hook(
        self, conn: Connection, session: Session, msg: RegisterTrigger, hook: str, timeout_ms: int
    ) -> None:
        config = _decode(msg.config)
        ns = msg.namespace if isinstance(msg.namespace, str) else rbac.DEFAULT_NS
        body = {
            "trigger_id": msg.id,
            "trigger_type": msg.trigger_type,
            "function_id": msg.function_id,
            "config": config,
            "metadata": rbac.decode_metadata(msg.metadata),
            "namespace": ns,
            "context": session.context,
        }
        current = rbac.TriggerRegistration(msg.id, msg.trigger_type, msg.function_id, config)
        mapped = rbac.apply_trigger_hook(await self._hook(hook, body, timeout_ms), current)
        if not conn.open:
            return
        if mapped is None:
            self._deny_trigger(conn, msg, f"denied by {hook}")
            return
        self._register_trigger(
            conn,
            session,
            msgspec.structs.replace(
                msg,
                id=mapped.trigger_id,
                trigger_type=mapped.trigger_type,
                function_id=mapped.function_id,
                config=Raw(protocol.encode(mapped.config)),
            ),
        )

    def _register_trigger(self, conn: Connection, session: Session, msg: RegisterTrigger) -> None:
        target = session.renamed.get(msg.function_id) or session.registered_id(msg.function_id)
        ns = msg.namespace if isinstance(msg.namespace, str) else rbac.DEFAULT_NS
        fn = self.engine.functions.get((ns, target))
        own = (fn is not None and fn.owner is conn) or target in session.renamed.values()
        # A session may bind its own functions; anything else must be callable by it.
        if not own and session.check(target, ns, fn, fn.metadata if fn is not None else UNSET) is not None:
            self._deny_trigger(conn, msg, f"function '{target}' not allowed")
            return
        self.engine.trigger_registry.on_register_trigger(
            conn, msgspec.structs.replace(msg, function_id=target), b""
        )

    def _deny_trigger(self, conn: Connection, msg: RegisterTrigger, reason: str) -> None:
        self._warn("refused trigger %s (%s) from worker %s: %s", msg.id, msg.trigger_type, conn.name, reason)
        conn.send(
            protocol.encode(
                protocol.TriggerRegistrationResult(
                    id=msg.id,
                    trigger_type=msg.trigger_type,
                    function_id=msg.function_id,
                    error=protocol.error_body(FORBIDDEN, f"trigger registration not allowed: {reason}"),
                )
            )
        )
