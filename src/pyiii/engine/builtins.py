"""The engine's own functions (``engine::*``) and trigger types.

These are what the SDKs call on connect (``engine::workers::register``) and
what tools use to look inside a running engine.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.engine import worker_lines
from pyiii.engine.module import TriggerProvider
from pyiii.engine.registry import NO_RESULT, CallContext, Trigger
from pyiii.errors import IIIError

if TYPE_CHECKING:
    from pyiii.engine.connection import Connection
    from pyiii.engine.engine import Engine

log = logging.getLogger("pyiii.engine")
worker_log = logging.getLogger("pyiii.worker")

ENGINE_WORKER = "iii-engine"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _obj(data: Raw, function_id: str) -> dict[str, Any]:
    """Decode a payload that must be an object (null counts as empty)."""
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise IIIError(
            errors.DESERIALIZATION_ERROR,
            f"Failed to deserialize input for {function_id}: {exc}",
        ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IIIError(
            errors.DESERIALIZATION_ERROR,
            f"Failed to deserialize input for {function_id}: expected an object, got {type(value).__name__}",
        )
    return value


def _clean(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return _CONTROL.sub("", text)[:280]


class _EventTypes(TriggerProvider):
    """``engine::functions-available`` and ``engine::workers-available``.

    Each binding gets a void call with the event whenever the registry changes.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.bindings: dict[str, Trigger] = {}

    def register(self, trigger: Trigger) -> None:
        self.bindings[trigger.id] = trigger

    def unregister(self, trigger_id: str) -> None:
        self.bindings.pop(trigger_id, None)

    def fire(self, event: dict[str, Any]) -> None:
        for trig in list(self.bindings.values()):
            self.engine.call_void(trig.function_id, event, namespace=trig.namespace, metadata=trig.metadata)


class _LogType(TriggerProvider):
    """The ``log`` trigger type: accepted so old SDKs' ``onLog`` works."""

    def __init__(self) -> None:
        self.bindings: dict[str, Trigger] = {}

    def register(self, trigger: Trigger) -> None:
        self.bindings[trigger.id] = trigger

    def unregister(self, trigger_id: str) -> None:
        self.bindings.pop(trigger_id, None)


def health(engine: Engine) -> dict[str, Any]:
    """What ``engine::health::check`` and the console's ``/health`` answer."""
    stats = engine.stats()
    return {
        "status": "ok" if engine.accepting else "shutting_down",
        "uptime_s": round(time.time() - engine.started_at, 3),
        "workers": stats["connections"],
        "functions": stats["functions"] + stats["builtin_functions"],
        "pending": stats["pending"],
    }


def install(engine: Engine) -> None:
    """Register every ``engine::*`` function and trigger type on ``engine``."""
    functions_available = _EventTypes(engine)
    workers_available = _EventTypes(engine)

    def function_summaries(
        include_internal: bool = False, viewer: Connection | None = None
    ) -> list[dict[str, Any]]:
        """Summaries of the functions; for a connection of an RBAC listener only
        those it may call (hidden functions are not even named)."""
        session = viewer.session if viewer is not None else None
        out = []
        for fn in sorted(engine.functions.values(), key=lambda f: (f.id, f.namespace)):
            if session is not None and session.check(fn.id, fn.namespace, fn, fn.metadata) is not None:
                continue
            meta = msgspec.json.decode(fn.metadata) if isinstance(fn.metadata, Raw) else None
            if not include_internal:
                if fn.id.startswith("engine::") and not fn.id.startswith("engine::queue::"):
                    continue
                if isinstance(meta, dict) and meta.get("internal") is True:
                    continue
            item: dict[str, Any] = {
                "function_id": fn.id,
                "namespace": fn.namespace,
                "worker_name": fn.owner.name if fn.owner is not None else fn.worker_name,
            }
            if fn.description is not None:
                item["description"] = fn.description
            if meta is not None:
                item["metadata"] = meta
            out.append(item)
        return out

    def on_functions_changed() -> None:
        if not functions_available.bindings:
            return
        everyone: list[dict[str, Any]] | None = None
        for trig in list(functions_available.bindings.values()):
            viewer = trig.owner if trig.owner is not None and trig.owner.session is not None else None
            if viewer is None:
                everyone = function_summaries() if everyone is None else everyone
                listing = everyone
            else:
                listing = function_summaries(viewer=viewer)
            event = {"event": "functions_changed", "functions": listing}
            engine.call_void(trig.function_id, event, namespace=trig.namespace, metadata=trig.metadata)

    def on_workers_changed(event: str, worker_id: str) -> None:
        if workers_available.bindings:
            workers_available.fire({"event": event, "worker_id": worker_id})

    engine.on_functions_changed.append(on_functions_changed)
    engine.on_workers_changed.append(on_workers_changed)

    def workers_register(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        conn = ctx.caller
        caller_id = body.get("_caller_worker_id")
        if conn is None and isinstance(caller_id, str):
            conn = engine.connections.get(caller_id)
        if conn is None:
            raise IIIError(errors.INVALID_ARGUMENTS, "engine::workers::register must be called by a worker")
        info = {k: v for k, v in body.items() if k != "_caller_worker_id"}
        for field in ("name", "description"):
            if field in info:
                info[field] = _clean(info[field])
        ns = info.get("namespace")
        if isinstance(ns, str):
            if not ns.strip():
                raise IIIError(errors.INVALID_NAMESPACE, "namespace must not be blank")
            conn.namespace = ns
        first = not conn.info
        conn.info = info
        if first:
            worker_lines.announced(conn)
        engine._notify_workers("worker_metadata_updated", conn.worker_id)
        return {"success": True}

    def functions_list(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        items = function_summaries(bool(body.get("include_internal")), ctx.caller)
        search, prefix = body.get("search"), body.get("prefix")
        if isinstance(prefix, str):
            items = [i for i in items if i["function_id"].startswith(prefix)]
        if isinstance(search, str):
            items = [i for i in items if search.lower() in i["function_id"].lower()]
        worker = body.get("worker")
        if isinstance(worker, str):
            items = [i for i in items if i["worker_name"] == worker]
        return {"functions": items}

    def visible(session: Any, key: tuple[str, str]) -> bool:
        fn = engine.functions.get(key)
        return fn is not None and session.check(key[1], key[0], fn, fn.metadata) is None

    def workers_list(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        session = ctx.caller.session if ctx.caller is not None else None
        out = []
        for conn in engine.connections.values():
            info = conn.info
            fids = sorted(
                fid
                for key in conn.functions
                if (fid := key[1]) and (session is None or visible(session, key))
            )
            item = {
                "id": conn.worker_id,
                "name": conn.name,
                "description": info.get("description"),
                "version": info.get("version"),
                "namespace": conn.namespace,
                "runtime": info.get("runtime"),
                "os": info.get("os"),
                "status": "busy" if conn.serving else "available" if info else "connected",
                "function_count": len(fids),
                "functions": fids,
                "connected_at_ms": conn.connected_at_ms,
                "active_invocations": len(conn.serving),
                "isolation": info.get("isolation"),
                "ip_address": conn.ip_address,
            }
            if "pid" in info:
                item["pid"] = info["pid"]
            out.append(item)
        for key in ("runtime", "status"):
            want = body.get(key)
            if isinstance(want, str):
                out = [w for w in out if w[key] == want]
        search = body.get("search")
        if isinstance(search, str):
            out = [w for w in out if search.lower() in str(w["name"]).lower()]
        return {"workers": out}

    def triggers_list(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        items = []
        for tt in sorted(engine.trigger_types.values(), key=lambda t: t.id):
            name = tt.provider.name if tt.provider is not None else tt.worker_name
            items.append(
                {"id": tt.id, "namespace": "default", "worker_name": name, "description": tt.description}
            )
        if not body.get("include_internal"):
            items = [i for i in items if not i["id"].startswith("engine::")]
        return {"triggers": items}

    def registered_triggers_list(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        items = []
        session = ctx.caller.session if ctx.caller is not None else None
        for trig in engine.triggers.values():
            if session is not None and not visible(session, (trig.namespace, trig.function_id)):
                continue
            config = msgspec.json.decode(trig.config)
            items.append(
                {
                    "id": trig.id,
                    "trigger_type": trig.trigger_type,
                    "function_id": trig.function_id,
                    "worker_name": trig.owner.name if trig.owner is not None else ENGINE_WORKER,
                    "config": config,
                    "config_summary": msgspec.json.encode(config).decode()[:120],
                    "active": trig.active,
                }
            )
        for key in ("trigger_type", "function_id"):
            want = body.get(key)
            if isinstance(want, str):
                items = [i for i in items if i[key] == want]
        return {"registered_triggers": items}

    def register_trigger(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        ttype, fid = body.get("trigger_type"), body.get("function_id")
        if not isinstance(ttype, str) or not isinstance(fid, str):
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for {ctx.function_id}: "
                "trigger_type and function_id must be strings",
            )
        trig = engine.add_trigger(ttype, fid, body.get("config"), metadata=body.get("metadata"))
        return {"id": trig.id}

    def unregister_trigger(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        tid = body.get("id")
        if not isinstance(tid, str):
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for {ctx.function_id}: missing field `id`",
            )
        return {"removed": engine.remove_trigger(tid)}

    def channels_create(data: Raw, ctx: CallContext) -> Any:
        body = _obj(data, ctx.function_id)
        size = body.get("buffer_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise IIIError(
                errors.DESERIALIZATION_ERROR,
                f"Failed to deserialize input for {ctx.function_id}: buffer_size must be a whole "
                f"number of messages (got {msgspec.json.encode(size).decode()[:40]})",
            )
        # Owned by the calling worker: its channels close when it disconnects.
        channel = engine.channels.create(buffer_size=size, owner=ctx.caller)
        return {"writer": channel.writer_ref, "reader": channel.reader_ref}

    def stats(data: Raw, ctx: CallContext) -> Any:
        _obj(data, ctx.function_id)
        return engine.stats()

    def health_check(data: Raw, ctx: CallContext) -> Any:
        _obj(data, ctx.function_id)
        return health(engine)

    def make_log(level: int) -> Any:
        def log_fn(data: Raw, ctx: CallContext) -> Any:
            body = _obj(data, ctx.function_id)
            worker_log.log(level, "%s %s", body.get("message", ""), body.get("data") or "")
            return NO_RESULT

        return log_fn

    reg = engine.register_builtin
    reg("engine::workers::register", workers_register, worker_name=ENGINE_WORKER)
    reg("engine::functions::list", functions_list, worker_name=ENGINE_WORKER)
    reg("engine::workers::list", workers_list, worker_name=ENGINE_WORKER)
    reg("engine::triggers::list", triggers_list, worker_name=ENGINE_WORKER)
    reg("engine::registered-triggers::list", registered_triggers_list, worker_name=ENGINE_WORKER)
    reg("engine::register_trigger", register_trigger, worker_name=ENGINE_WORKER)
    reg("engine::unregister_trigger", unregister_trigger, worker_name=ENGINE_WORKER)
    reg(
        "engine::channels::create",
        channels_create,
        worker_name=ENGINE_WORKER,
        description="Create a streaming channel pair: {buffer_size?} -> {writer, reader} refs",
    )
    reg(
        "engine::stats",
        stats,
        worker_name=ENGINE_WORKER,
        description="Sizes of the engine's tables: connections, functions, pending calls, triggers, tasks",
    )
    reg(
        "engine::health::check",
        health_check,
        worker_name=ENGINE_WORKER,
        description="Liveness: {status: ok|shutting_down, uptime_s, workers, functions, pending}",
    )
    for name, level in (
        ("trace", logging.DEBUG),
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("error", logging.ERROR),
    ):
        reg(f"engine::log::{name}", make_log(level), worker_name=ENGINE_WORKER)

    engine.register_trigger_type(
        "engine::functions-available",
        "Fires when the set of functions changes",
        functions_available,
        worker_name=ENGINE_WORKER,
    )
    engine.register_trigger_type(
        "engine::workers-available",
        "Fires when workers connect, disconnect or announce",
        workers_available,
        worker_name=ENGINE_WORKER,
    )
    engine.register_trigger_type("log", "Worker log records", _LogType(), worker_name=ENGINE_WORKER)
