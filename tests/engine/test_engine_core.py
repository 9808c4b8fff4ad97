"""Sans-I/O tests of ``Engine``: frames in through ``handle``, frames out through ``send``.

Each simulated worker is a ``Connection`` whose ``send`` decodes the frame
(so every engine->worker frame must be a JSON object) and appends it to a
list. That is the seam the engine was designed around, not a mock.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from pyiii.engine import builtins
from pyiii.engine.connection import Connection
from pyiii.engine.engine import Engine, Limits
from pyiii.errors import IIIError


def is_uuid4(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value
    except ValueError:
        return False


class Peer:
    """One simulated worker connected to an in-process engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.frames: list[dict[str, Any]] = []
        self.closed: list[tuple[int, str]] = []
        self.conn = Connection(self._on_send, self._on_close)
        engine.connect(self.conn)

    def _on_send(self, data: bytes) -> None:
        frame = json.loads(data)
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), data
        self.frames.append(frame)

    def _on_close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    @property
    def id(self) -> str:
        return self.conn.worker_id

    def send(self, msg: dict[str, Any] | str | bytes) -> None:
        if isinstance(msg, dict):
            msg = json.dumps(msg)
        if isinstance(msg, str):
            msg = msg.encode()
        self.engine.handle(self.conn, msg)

    def take(self) -> list[dict[str, Any]]:
        frames, self.frames = self.frames, []
        return frames

    def take_one(self) -> dict[str, Any]:
        frames = self.take()
        assert len(frames) == 1, frames
        return frames[0]

    def disconnect(self) -> None:
        self.engine.disconnect(self.conn)

    # --- protocol shorthands ---

    def register(self, function_id: str, **extra: Any) -> None:
        self.send({"type": "registerfunction", "id": function_id, **extra})

    def invoke(self, function_id: str, data: Any = None, inv_id: str | None = None, **extra: Any) -> None:
        msg: dict[str, Any] = {"type": "invokefunction", "function_id": function_id, "data": data}
        if inv_id is not None:
            msg["invocation_id"] = inv_id
        msg.update(extra)
        self.send(msg)

    def result(self, inv_id: str, function_id: str, **fields: Any) -> None:
        self.send({"type": "invocationresult", "invocation_id": inv_id, "function_id": function_id, **fields})

    async def call(self, function_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
        """Invoke a builtin and return its invocationresult frame."""
        inv_id = str(uuid.uuid4())
        self.invoke(function_id, data, inv_id, **extra)
        for _ in range(20):
            for frame in self.frames:
                if frame["type"] == "invocationresult" and frame["invocation_id"] == inv_id:
                    self.frames.remove(frame)
                    return frame
            await asyncio.sleep(0)
        raise AssertionError(f"no result for {function_id}: {self.frames}")


@pytest.fixture
def engine() -> Engine:
    eng = Engine()
    builtins.install(eng)
    return eng


def peer(engine: Engine) -> Peer:
    p = Peer(engine)
    p.take()  # workerregistered
    return p


# --- handshake ---------------------------------------------------------------


async def test_workerregistered_is_first_frame_with_uuid_id_and_distinct_token(engine: Engine) -> None:
    a = Peer(engine)
    b = Peer(engine)
    first = a.frames[0]
    assert first == {
        "type": "workerregistered",
        "worker_id": a.id,
        "reattach_token": a.conn.reattach_token,
    }
    assert is_uuid4(first["worker_id"])
    assert is_uuid4(first["reattach_token"])
    assert first["reattach_token"] != first["worker_id"]
    assert b.frames[0]["worker_id"] != a.id
    assert b.frames[0]["reattach_token"] != first["reattach_token"]


# --- routing ------------------------------------------------------------------


async def test_invoke_routed_with_callers_id_and_caller_worker_id(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("math::add", description="adds")
    assert b.take() == [] and a.take() == []  # no acknowledgement

    a.invoke(
        "math::add",
        {"a": 1, "b": 2},
        "X",
        traceparent="00-abc-def-01",
        baggage="k=v",
        metadata={"m": [1]},
        namespace="default",
    )
    fwd = b.take_one()
    assert fwd == {
        "type": "invokefunction",
        "invocation_id": "X",
        "function_id": "math::add",
        "data": {"a": 1, "b": 2, "_caller_worker_id": a.id},
        "metadata": {"m": [1]},
        "traceparent": "00-abc-def-01",
        "baggage": "k=v",
    }
    assert a.take() == []


async def test_caller_worker_id_cannot_be_spoofed(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {"_caller_worker_id": "someone-else", "x": 1}, "1")
    assert b.take_one()["data"] == {"_caller_worker_id": a.id, "x": 1}


@pytest.mark.parametrize(
    "raw_data",
    ["{}", "{ }", '{\n  "a": {"b": [1, {"c": 2}]}\n}'],
    ids=["empty", "empty-spaced", "nested-pretty"],
)
async def test_caller_worker_id_added_to_any_object_layout(engine: Engine, raw_data: str) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.send('{"type": "invokefunction", "invocation_id": "i", "function_id": "f", "data": ' + raw_data + " }")
    data = b.take_one()["data"]
    assert data == {**json.loads(raw_data), "_caller_worker_id": a.id}


@pytest.mark.parametrize("value", [[1, 2, {"x": 1}], "text", None, 42, True], ids=repr)
async def test_non_object_data_forwarded_unchanged(engine: Engine, value: Any) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", value, "1")
    fwd = b.take_one()
    assert fwd.get("data") == value
    assert "_caller_worker_id" not in json.dumps(fwd)


async def test_result_relayed_to_caller(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("math::add")
    a.invoke("math::add", {"a": 1, "b": 2}, "X")
    b.take()
    b.result("X", "math::add", result={"c": 3})
    res = a.take_one()
    assert res["type"] == "invocationresult"
    assert res["invocation_id"] == "X"
    assert res["function_id"] == "math::add"
    assert res["result"] == {"c": 3}
    assert "error" not in res
    assert b.take() == []


async def test_error_relayed_verbatim_and_result_alongside_dropped(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {}, "E1")
    b.take()
    error = {"code": "invocation_failed", "message": "boom", "stacktrace": "at f (x.js:1)", "extra": [1]}
    b.result("E1", "f", error=error, result={"ignored": True})
    res = a.take_one()
    assert res["invocation_id"] == "E1"
    assert res["error"] == error
    assert "result" not in res


async def test_stacktrace_null_removed_from_relayed_error(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {}, "E2")
    b.take()
    b.result("E2", "f", error={"code": "X_FAILED", "message": "nope", "stacktrace": None, "hint": "h"})
    res = a.take_one()
    assert res["error"] == {"code": "X_FAILED", "message": "nope", "hint": "h"}


async def test_null_error_counts_as_success(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {}, "N1")
    b.take()
    b.result("N1", "f", result=5, error=None)
    res = a.take_one()
    assert res["result"] == 5
    assert res.get("error") is None


@pytest.mark.parametrize("fields", [{"result": None}, {}], ids=["null", "absent"])
async def test_empty_result_reaches_caller_as_absent_field(engine: Engine, fields: dict[str, Any]) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {}, "R1")
    b.take()
    b.result("R1", "f", **fields)
    res = a.take_one()
    assert res["invocation_id"] == "R1"
    assert "result" not in res
    assert "error" not in res


async def test_same_invocation_id_from_two_callers_reaches_each_caller(engine: Engine) -> None:
    a, c, b = peer(engine), peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {"who": "a"}, "same")
    c.invoke("f", {"who": "c"}, "same")
    fwds = b.take()
    assert len(fwds) == 2
    assert fwds[0]["invocation_id"] != fwds[1]["invocation_id"]
    for fwd in reversed(fwds):
        b.result(fwd["invocation_id"], "f", result={"echo": fwd["data"]["who"]})
    ra, rc = a.take_one(), c.take_one()
    assert (ra["invocation_id"], ra["result"]) == ("same", {"echo": "a"})
    assert (rc["invocation_id"], rc["result"]) == ("same", {"echo": "c"})


async def test_result_for_unknown_invocation_is_dropped(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.result("never-issued", "f", result=1)
    assert a.take() == [] and b.take() == []


# --- no owner -------------------------------------------------------------------


async def test_unknown_function_gets_function_not_found(engine: Engine) -> None:
    a = peer(engine)
    a.invoke("nope::x", {}, "X")
    assert a.take_one() == {
        "type": "invocationresult",
        "invocation_id": "X",
        "function_id": "nope::x",
        "error": {
            "code": "function_not_found",
            "message": "Function nope::x not found in namespace default.",
        },
    }


async def test_function_not_found_lists_other_namespaces(engine: Engine) -> None:
    a, wa, wb = peer(engine), peer(engine), peer(engine)
    # Each worker announces its namespace, then registers into it.
    wb.invoke("engine::workers::register", {"name": "b-worker", "namespace": "b"})
    wa.invoke("engine::workers::register", {"name": "a-worker", "namespace": "a"})
    await asyncio.sleep(0)
    wb.register("svc::x")
    wa.register("svc::x")
    assert wa.take() == [] and wb.take() == []

    a.invoke("svc::x", {}, "1")
    err = a.take_one()["error"]
    assert err["code"] == "function_not_found"
    assert err["message"] == (
        "Function svc::x not found in namespace default. It is registered in namespace(s): a, b."
    )

    a.invoke("svc::x", {"k": 1}, "2", namespace="b")
    fwd = wb.take_one()
    assert fwd["invocation_id"] == "2" and fwd["data"]["k"] == 1
    assert "namespace" not in fwd
    assert wa.take() == []


async def test_blank_namespace_gets_invalid_namespace(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {}, "1", namespace="  ")
    assert a.take_one()["error"]["code"] == "INVALID_NAMESPACE"
    assert b.take() == []


# --- void and enqueue --------------------------------------------------------------


async def test_void_to_unknown_function_never_replies(engine: Engine) -> None:
    a = peer(engine)
    a.invoke("nope::x", {}, action={"type": "void"})
    a.invoke("nope::x", {}, "has-id-but-void", action={"type": "void"})
    a.invoke("nope::y", {})  # old form: no invocation_id, no action
    await asyncio.sleep(0)
    assert a.take() == []


@pytest.mark.parametrize("extra", [{"action": {"type": "void"}}, {}], ids=["action-void", "old-form-no-id"])
async def test_void_call_reaches_target_and_reply_is_discarded(engine: Engine, extra: dict[str, Any]) -> None:
    a, b = peer(engine), peer(engine)
    b.register("audit::log")
    a.invoke("audit::log", {"line": 1}, **extra)
    fwd = b.take_one()
    assert fwd["function_id"] == "audit::log"
    assert fwd["data"] == {"line": 1, "_caller_worker_id": a.id}
    assert "action" not in fwd
    if fwd.get("invocation_id"):  # a fresh id is allowed; its reply must go nowhere
        b.result(fwd["invocation_id"], "audit::log", result={"ok": True})
    await asyncio.sleep(0)
    assert a.take() == []


async def test_void_call_to_builtin_never_replies(engine: Engine) -> None:
    a = peer(engine)
    a.invoke("engine::functions::list", {}, "v1", action={"type": "void"})
    a.invoke("engine::functions::list", "not an object", action={"type": "void"})
    await asyncio.sleep(0.01)
    assert a.take() == []


async def test_enqueue_without_a_queue_provider_says_to_enable_iii_queue(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("pay::charge")
    a.invoke("pay::charge", {"amount": 5}, "Z", action={"type": "enqueue", "queue": "payments"})
    res = a.take_one()
    assert res["invocation_id"] == "Z" and res["function_id"] == "pay::charge"
    assert res["error"]["code"] == "enqueue_error"
    assert "iii-queue" in res["error"]["message"]
    await asyncio.sleep(0)
    assert b.take() == []  # nothing ran


async def test_enqueue_goes_to_the_queue_provider_hook(engine: Engine) -> None:
    from pyiii.engine.registry import EnqueueRequest
    from pyiii.errors import IIIError

    seen: list[EnqueueRequest] = []

    async def provider(request: EnqueueRequest) -> str:
        if request.queue == "full":
            raise IIIError("queue_full", "no room in queue full")
        seen.append(request)
        return "receipt-1"

    engine.enqueue_handler = provider
    a = peer(engine)
    a.invoke("pay::charge", {"amount": 5}, "Z", action={"type": "enqueue", "queue": "payments"})
    a.invoke("pay::charge", {"amount": 6}, "Y", action={"type": "enqueue", "queue": "full"})
    for _ in range(5):
        await asyncio.sleep(0)
    first, second = sorted(a.take(), key=lambda f: f["invocation_id"])
    assert second == {
        "type": "invocationresult",
        "invocation_id": "Z",
        "function_id": "pay::charge",
        "result": {"messageReceiptId": "receipt-1"},
    }
    assert first["error"] == {"code": "enqueue_error", "message": "no room in queue full"}
    [req] = seen
    assert (req.queue, req.function_id, req.namespace) == ("payments", "pay::charge", "default")
    assert json.loads(bytes(req.data)) == {"amount": 5, "_caller_worker_id": a.id}


# --- registration ownership -----------------------------------------------------------


async def test_live_owner_conflict_rejects_only_that_function(engine: Engine) -> None:
    a, b, c = peer(engine), peer(engine), peer(engine)
    b.register("math::add")
    c.register("math::add")
    c.register("math::sub")
    assert c.take_one() == {
        "type": "registrationrejected",
        "code": "FUNCTION_NAMESPACE_CONFLICT",
        "namespace": "default",
        "function_id": "math::add",
        "owner_worker_id": b.id,
    }
    assert c.closed == []
    a.invoke("math::add", {}, "1")
    assert b.take_one()["invocation_id"] == "1"
    a.invoke("math::sub", {}, "2")
    assert c.take_one()["invocation_id"] == "2"


async def test_takeover_when_previous_owner_disconnected(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("math::add")
    b.disconnect()
    b2 = peer(engine)
    b2.register("math::add")
    assert b2.take() == []
    a.invoke("math::add", {}, "1")
    assert b2.take_one()["invocation_id"] == "1"


async def test_same_connection_reregister_overwrites(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("math::add", description="old")
    b.register("math::add", description="new")
    assert b.take() == []
    listing = (await a.call("engine::functions::list", {}))["result"]["functions"]
    entries = [f for f in listing if f["function_id"] == "math::add"]
    assert len(entries) == 1
    assert entries[0]["description"] == "new"


async def test_worker_cannot_take_over_engine_builtin(engine: Engine) -> None:
    a = peer(engine)
    a.register("engine::functions::list")
    rej = a.take_one()
    assert rej["type"] == "registrationrejected"
    assert rej["code"] == "FUNCTION_NAMESPACE_CONFLICT"
    assert rej["owner_worker_id"] == ""
    assert "functions" in (await a.call("engine::functions::list", {}))["result"]


async def test_unregisterfunction_only_by_owner(engine: Engine) -> None:
    a, b, c = peer(engine), peer(engine), peer(engine)
    b.register("f")
    c.send({"type": "unregisterfunction", "id": "f"})
    assert c.take() == []
    a.invoke("f", {}, "1")
    assert b.take_one()["invocation_id"] == "1"
    b.result("1", "f", result=1)
    a.take()

    b.send({"type": "unregisterfunction", "id": "f"})
    assert b.take() == []
    a.invoke("f", {}, "2")
    assert a.take_one()["error"]["code"] == "function_not_found"
    assert b.take() == []


# --- disconnects -------------------------------------------------------------------------


async def test_target_disconnect_stops_every_pending_call(engine: Engine) -> None:
    a, c, b = peer(engine), peer(engine), peer(engine)
    b.register("slow")
    a.invoke("slow", {}, "a1")
    a.invoke("slow", {}, "a2")
    c.invoke("slow", {}, "c1")
    assert len(b.take()) == 3
    b.disconnect()
    stopped = {"code": "invocation_stopped", "message": "Invocation stopped"}
    got_a = {f["invocation_id"]: f for f in a.take()}
    assert set(got_a) == {"a1", "a2"}
    for frame in got_a.values():
        assert frame["type"] == "invocationresult"
        assert frame["function_id"] == "slow"
        assert frame["error"] == stopped
        assert "result" not in frame
    rc = c.take_one()
    assert rc["invocation_id"] == "c1" and rc["error"] == stopped
    a.invoke("slow", {}, "a3")
    assert a.take_one()["error"]["code"] == "function_not_found"


async def test_caller_disconnect_drops_late_result(engine: Engine) -> None:
    a, b, watcher = peer(engine), peer(engine), peer(engine)
    b.register("slow")
    a.invoke("slow", {}, "a1")
    b.take()
    a.disconnect()
    b.result("a1", "slow", result={"late": True})
    b.result("a1", "slow", result={"twice": True})
    assert a.take() == [] and b.take() == []
    workers = (await watcher.call("engine::workers::list", {}))["result"]["workers"]
    (entry,) = [w for w in workers if w["id"] == b.id]
    assert entry["active_invocations"] == 0
    assert a.id not in {w["id"] for w in workers}


async def test_call_within_returns_the_answer_in_time(engine: Engine) -> None:
    b = peer(engine)
    b.register("echo")
    call = asyncio.ensure_future(engine.call_within(1.0, "echo", {"n": 1}))
    await asyncio.sleep(0)
    invoke = b.take_one()
    assert invoke["type"] == "invokefunction" and invoke["data"] == {"n": 1}
    b.result(invoke["invocation_id"], "echo", result={"ok": 1})
    assert json.loads(bytes(await call)) == {"ok": 1}
    assert engine.pending == {}


async def test_call_within_times_out_and_forgets_the_invocation(engine: Engine) -> None:
    b = peer(engine)
    b.register("slow")
    with pytest.raises(TimeoutError):
        await engine.call_within(0.05, "slow", {})
    (invoke,) = b.take()
    assert engine.pending == {} and not engine.connections[b.id].serving
    b.result(invoke["invocation_id"], "slow", result={"late": True})  # dropped, nothing breaks
    assert engine.pending == {} and b.take() == []


async def test_call_within_cancelled_forgets_the_invocation(engine: Engine) -> None:
    b = peer(engine)
    b.register("slow")
    call = asyncio.ensure_future(engine.call_within(5.0, "slow", {}))
    await asyncio.sleep(0)
    assert len(engine.pending) == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert engine.pending == {}


async def test_call_within_times_out_an_engine_handler_too(engine: Engine) -> None:
    async def sleepy(data: Any, ctx: Any) -> Any:
        await asyncio.sleep(5)

    engine.register_builtin("test::sleepy", sleepy, worker_name="test")
    with pytest.raises(TimeoutError):
        await engine.call_within(0.05, "test::sleepy", {})
    with pytest.raises(IIIError) as err:
        await engine.call_within(1.0, "nobody::serves", {})
    assert err.value.code == "function_not_found"


async def test_disconnect_twice_is_harmless(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    b.disconnect()
    b.disconnect()
    a.invoke("f", {}, "1")
    assert a.take_one()["error"]["code"] == "function_not_found"


# --- triggers ----------------------------------------------------------------------------


async def test_trigger_forwarded_to_provider(engine: Engine) -> None:
    p, a = peer(engine), peer(engine)
    p.send({"type": "registertriggertype", "id": "webhook", "description": "Webhook trigger"})
    a.send(
        {
            "type": "registertrigger",
            "id": "t2",
            "trigger_type": "webhook",
            "function_id": "h",
            "config": {"path": "/x"},
            "metadata": {"owner": "team"},
        }
    )
    assert a.take() == []
    assert p.take_one() == {
        "type": "registertrigger",
        "id": "t2",
        "trigger_type": "webhook",
        "function_id": "h",
        "config": {"path": "/x"},
        "metadata": {"owner": "team"},
    }
    # A success ack from the provider is not relayed.
    p.send({"type": "triggerregistrationresult", "id": "t2", "trigger_type": "webhook", "function_id": "h"})
    assert a.take() == []


async def test_trigger_for_unknown_type_parked_until_type_appears(engine: Engine) -> None:
    a = peer(engine)
    a.send({"type": "registertrigger", "id": "t3", "trigger_type": "later", "function_id": "h", "config": {}})
    assert a.take() == []  # parked silently, no error ack
    p = peer(engine)
    p.send({"type": "registertriggertype", "id": "later", "description": "d"})
    fwd = p.take_one()
    assert fwd["type"] == "registertrigger"
    assert (fwd["id"], fwd["trigger_type"], fwd["function_id"], fwd["config"]) == ("t3", "later", "h", {})
    assert a.take() == []


async def test_provider_disconnect_parks_bindings_and_new_provider_gets_replay(engine: Engine) -> None:
    p, a = peer(engine), peer(engine)
    p.send({"type": "registertriggertype", "id": "webhook", "description": "d"})
    for tid in ("t1", "t2"):
        a.send(
            {
                "type": "registertrigger",
                "id": tid,
                "trigger_type": "webhook",
                "function_id": "h",
                "config": {},
            }
        )
    assert len(p.take()) == 2
    p.disconnect()
    types = (await a.call("engine::triggers::list", {}))["result"]["triggers"]
    assert "webhook" not in {t["id"] for t in types}

    p2 = peer(engine)
    p2.send({"type": "registertriggertype", "id": "webhook", "description": "d"})
    replay = p2.take()
    assert {f["id"] for f in replay} == {"t1", "t2"}
    assert all(f["type"] == "registertrigger" and f["function_id"] == "h" for f in replay)
    assert a.take() == []


async def test_trigger_owner_disconnect_unregisters_at_provider(engine: Engine) -> None:
    p, a = peer(engine), peer(engine)
    p.send({"type": "registertriggertype", "id": "webhook", "description": "d"})
    a.send(
        {"type": "registertrigger", "id": "t1", "trigger_type": "webhook", "function_id": "h", "config": {}}
    )
    p.take()
    a.disconnect()
    assert p.take() == [{"type": "unregistertrigger", "id": "t1", "trigger_type": "webhook"}]


async def test_unregistertrigger_relayed_to_provider(engine: Engine) -> None:
    p, a = peer(engine), peer(engine)
    p.send({"type": "registertriggertype", "id": "webhook", "description": "d"})
    a.send(
        {"type": "registertrigger", "id": "t2", "trigger_type": "webhook", "function_id": "h", "config": {}}
    )
    p.take()
    a.send({"type": "unregistertrigger", "id": "t2", "trigger_type": "webhook"})
    assert p.take_one() == {"type": "unregistertrigger", "id": "t2", "trigger_type": "webhook"}
    assert a.take() == []
    # Gone for good: a new provider of the type does not get it replayed.
    p.disconnect()
    p2 = peer(engine)
    p2.send({"type": "registertriggertype", "id": "webhook", "description": "d"})
    assert p2.take() == []


async def test_provider_error_forwarded_to_registering_worker(engine: Engine) -> None:
    p, a, other = peer(engine), peer(engine), peer(engine)
    p.send({"type": "registertriggertype", "id": "webhook", "description": "d"})
    a.send(
        {"type": "registertrigger", "id": "t2", "trigger_type": "webhook", "function_id": "h", "config": {}}
    )
    p.take()
    failure = {
        "type": "triggerregistrationresult",
        "id": "t2",
        "trigger_type": "webhook",
        "function_id": "h",
        "error": {"code": "trigger_type_not_found", "message": "no such type here"},
    }
    p.send(failure)
    assert a.take_one() == failure
    assert p.take() == [] and other.take() == []


# --- reattach ------------------------------------------------------------------------------


async def test_reattach_with_right_token_evicts_old_connection(engine: Engine) -> None:
    old, a = peer(engine), peer(engine)
    old.register("math::add")
    a.invoke("math::add", {}, "pending")
    old.take()
    new = peer(engine)
    new.send({"type": "reattach", "previous_worker_id": old.id, "reattach_token": old.conn.reattach_token})
    assert new.take() == []  # no reply to reattach
    # The old connection is torn down: its pending call stopped, its id gone.
    assert a.take_one()["error"]["code"] == "invocation_stopped"
    new.register("math::add")
    assert new.take() == []  # took over, no conflict
    a.invoke("math::add", {}, "1")
    assert new.take_one()["invocation_id"] == "1"
    assert old.take() == []
    workers = (await a.call("engine::workers::list", {}))["result"]["workers"]
    assert old.id not in {w["id"] for w in workers}


async def test_reattach_closes_the_old_socket(engine: Engine) -> None:
    old = peer(engine)
    new = peer(engine)
    new.send({"type": "reattach", "previous_worker_id": old.id, "reattach_token": old.conn.reattach_token})
    # The evicted socket must actually be closed, or the old worker lingers as a zombie.
    assert len(old.closed) == 1


async def test_reattach_with_wrong_token_is_ignored(engine: Engine) -> None:
    old, a = peer(engine), peer(engine)
    old.register("math::add")
    new = peer(engine)
    new.send({"type": "reattach", "previous_worker_id": old.id, "reattach_token": str(uuid.uuid4())})
    assert new.take() == [] and old.closed == []
    new.register("math::add")
    rej = new.take_one()
    assert rej["type"] == "registrationrejected" and rej["owner_worker_id"] == old.id
    a.invoke("math::add", {}, "1")
    assert old.take_one()["invocation_id"] == "1"


async def test_reattach_to_unknown_or_own_id_is_ignored(engine: Engine) -> None:
    w = peer(engine)
    w.register("f")
    w.send({"type": "reattach", "previous_worker_id": w.id, "reattach_token": w.conn.reattach_token})
    w.send({"type": "reattach", "previous_worker_id": str(uuid.uuid4()), "reattach_token": "t"})
    assert w.take() == [] and w.closed == []
    a = peer(engine)
    a.invoke("f", {}, "1")
    assert w.take_one()["invocation_id"] == "1"


# --- misc ------------------------------------------------------------------------------------


async def test_json_ping_gets_pong(engine: Engine) -> None:
    a = peer(engine)
    a.send({"type": "ping"})
    assert a.take() == [{"type": "pong"}]


async def test_json_pong_is_ignored(engine: Engine) -> None:
    a = peer(engine)
    a.send({"type": "pong"})
    assert a.take() == []


# --- builtins ----------------------------------------------------------------------------------


async def test_workers_register_void_stores_metadata_without_reply(engine: Engine) -> None:
    w, a = peer(engine), peer(engine)
    w.register("zeta::b")
    w.register("alpha::a")
    w.invoke(
        "engine::workers::register",
        {"name": "billing", "runtime": "python", "version": "1.2.3", "os": "linux"},
        action={"type": "void"},
    )
    w.invoke("engine::workers::register", {"name": "billing"})  # old SDK: no id, no action
    await asyncio.sleep(0.01)
    assert w.take() == []
    workers = (await a.call("engine::workers::list", {}))["result"]["workers"]
    # Old SDKs send no pid; their workers must still be listed.
    (entry,) = [x for x in workers if x["id"] == w.id]
    assert entry["name"] == "billing"
    assert entry["functions"] == ["alpha::a", "zeta::b"]
    assert entry["function_count"] == 2


async def test_workers_register_with_id_replies_success(engine: Engine) -> None:
    w = peer(engine)
    res = await w.call(
        "engine::workers::register", {"name": "w\x07ith\nctl", "description": "d" * 400, "pid": 42}
    )
    assert res["result"] == {"success": True}
    assert "error" not in res
    workers = (await w.call("engine::workers::list", {}))["result"]["workers"]
    (entry,) = [x for x in workers if x["id"] == w.id]
    assert entry["name"] == "withctl"
    assert entry["description"] == "d" * 280
    assert entry["pid"] == 42


async def test_function_listing_names_the_registering_worker(engine: Engine) -> None:
    w, a = peer(engine), peer(engine)
    w.invoke("engine::workers::register", {"name": "mathsvc"}, action={"type": "void"})
    w.register("math::add", description="adds", metadata={"team": "x"})
    await asyncio.sleep(0)
    listing = (await a.call("engine::functions::list", {}))["result"]["functions"]
    assert {
        "function_id": "math::add",
        "namespace": "default",
        "worker_name": "mathsvc",
        "description": "adds",
        "metadata": {"team": "x"},
    } in listing


async def test_functions_list_sorted_and_hides_engine_and_internal(engine: Engine) -> None:
    w1, w2, a = peer(engine), peer(engine), peer(engine)
    w1.register("zeta::a")
    w2.register("alpha::b")
    w1.register("mid::c")
    w2.register("hidden::x", metadata={"internal": True})
    res = await a.call("engine::functions::list", None)
    ids = [f["function_id"] for f in res["result"]["functions"]]
    assert ids == ["alpha::b", "mid::c", "zeta::a"]

    full = await a.call("engine::functions::list", {"include_internal": True})
    all_ids = [f["function_id"] for f in full["result"]["functions"]]
    assert all_ids == sorted(all_ids)
    assert "engine::functions::list" in all_ids and "hidden::x" in all_ids


async def test_functions_list_drops_functions_of_disconnected_worker(engine: Engine) -> None:
    w, a = peer(engine), peer(engine)
    w.register("gone::soon")
    w.disconnect()
    res = await a.call("engine::functions::list", {})
    assert "gone::soon" not in {f["function_id"] for f in res["result"]["functions"]}


async def test_triggers_list_shows_worker_provided_types(engine: Engine) -> None:
    p, a = peer(engine), peer(engine)
    p.invoke("engine::workers::register", {"name": "hooks"}, action={"type": "void"})
    p.send({"type": "registertriggertype", "id": "webhook", "description": "Webhook trigger"})
    await asyncio.sleep(0)
    types = (await a.call("engine::triggers::list", {}))["result"]["triggers"]
    assert {
        "id": "webhook",
        "namespace": "default",
        "worker_name": "hooks",
        "description": "Webhook trigger",
    } in types
    assert not any(t["id"].startswith("engine::") for t in types)
    internal = (await a.call("engine::triggers::list", {"include_internal": True}))["result"]["triggers"]
    assert "engine::functions-available" in {t["id"] for t in internal}


async def test_builtin_bad_input_gets_deserialization_error(engine: Engine) -> None:
    a = peer(engine)
    res = await a.call("engine::functions::list", "not an object")
    assert res["error"]["code"] == "deserialization_error"
    assert res["error"]["message"].startswith("Failed to deserialize input for engine::functions::list")
    assert "result" not in res


async def test_pending_limit_per_worker_gives_limit_exceeded() -> None:
    engine = Engine(Limits(max_pending_per_worker=2))
    builtins.install(engine)
    a, b = peer(engine), peer(engine)
    b.register("slow")
    a.invoke("slow", {}, "1")
    a.invoke("slow", {}, "2")
    a.invoke("slow", {}, "3")
    assert [f["invocation_id"] for f in b.take()] == ["1", "2"]
    res = a.take_one()
    assert res["invocation_id"] == "3"
    assert res["error"]["code"] == "LIMIT_EXCEEDED"
    # Once a result comes back there is room again.
    b.result("1", "slow", result=1)
    assert a.take_one()["result"] == 1
    a.invoke("slow", {}, "4")
    assert b.take_one()["invocation_id"] == "4"
    assert a.take() == []


async def test_pending_limit_slot_freed_when_colliding_call_is_stopped() -> None:
    # Two callers pick the same invocation id; the engine forwards the second
    # under a fresh id. When the target dies, both calls are stopped and both
    # callers must get their pending slot back.
    engine = Engine(Limits(max_pending_per_worker=1))
    builtins.install(engine)
    a, c, b = peer(engine), peer(engine), peer(engine)
    b.register("f")
    a.invoke("f", {}, "same")
    c.invoke("f", {}, "same")
    assert len(b.take()) == 2
    b.disconnect()
    assert c.take_one()["error"]["code"] == "invocation_stopped"
    assert a.take_one()["error"]["code"] == "invocation_stopped"

    b2 = peer(engine)
    b2.register("f")
    c.invoke("f", {}, "next")
    assert c.take() == []  # not LIMIT_EXCEEDED: c has nothing pending
    assert b2.take_one()["invocation_id"] == "next"


async def test_reattach_without_token_does_not_evict(engine: Engine) -> None:
    # Worker ids are public (engine::workers::list); only the secret token
    # proves the sender is the same worker (docs/protocol.md §3.8: "the token must match").
    victim, a = peer(engine), peer(engine)
    victim.register("math::add")
    intruder = peer(engine)
    intruder.send({"type": "reattach", "previous_worker_id": victim.id})
    assert victim.closed == []
    a.invoke("math::add", {}, "1")
    assert a.take() == []
    assert victim.take_one()["invocation_id"] == "1"


async def test_engine_prefix_refused_outside_default_namespace(engine: Engine) -> None:
    w = peer(engine)
    await w.call("engine::workers::register", {"name": "nsw", "namespace": "tenant"})
    w.register("engine::mine")
    assert w.take_one() == {
        "type": "registrationrejected",
        "code": "FUNCTION_NAMESPACE_CONFLICT",
        "namespace": "tenant",
        "function_id": "engine::mine",
        "owner_worker_id": "",
    }


async def test_null_invocation_id_means_no_reply(engine: Engine) -> None:
    a, b = peer(engine), peer(engine)
    b.register("f")
    a.send({"type": "invokefunction", "invocation_id": None, "function_id": "nope::x", "data": {}})
    a.send({"type": "invokefunction", "invocation_id": None, "function_id": "f", "data": {}})
    assert b.take_one()["function_id"] == "f"
    assert a.take() == []


async def test_worker_can_invoke_its_own_function(engine: Engine) -> None:
    a = peer(engine)
    a.register("self::f")
    a.invoke("self::f", {"n": 1}, "s1")
    fwd = a.take_one()
    assert fwd["type"] == "invokefunction" and fwd["invocation_id"] == "s1"
    a.result("s1", "self::f", result={"n": 2})
    res = a.take_one()
    assert (res["type"], res["invocation_id"], res["result"]) == ("invocationresult", "s1", {"n": 2})


async def test_newer_trigger_type_registration_replaces_provider(engine: Engine) -> None:
    p1, p2, a = peer(engine), peer(engine), peer(engine)
    p1.send({"type": "registertriggertype", "id": "webhook", "description": "v1"})
    p2.send({"type": "registertriggertype", "id": "webhook", "description": "v2"})
    a.send(
        {"type": "registertrigger", "id": "t1", "trigger_type": "webhook", "function_id": "h", "config": {}}
    )
    assert p1.take() == []
    assert p2.take_one()["id"] == "t1"
    # The old provider leaving does not take the type (or its bindings) away.
    p1.disconnect()
    types = (await a.call("engine::triggers::list", {}))["result"]["triggers"]
    assert [t["description"] for t in types if t["id"] == "webhook"] == ["v2"]
    a.send(
        {"type": "registertrigger", "id": "t2", "trigger_type": "webhook", "function_id": "h", "config": {}}
    )
    assert p2.take_one()["id"] == "t2"


async def test_workers_available_trigger_fires_on_connect_and_disconnect(engine: Engine) -> None:
    w = peer(engine)
    w.register("on::workers")
    w.send(
        {
            "type": "registertrigger",
            "id": "tw",
            "trigger_type": "engine::workers-available",
            "function_id": "on::workers",
            "config": {},
        }
    )
    assert w.take() == []  # accepted: no error ack
    other = peer(engine)
    other.disconnect()
    events = [f["data"] for f in w.take() if f["type"] == "invokefunction"]
    assert {"event": "worker_connected", "worker_id": other.id} in events
    assert {"event": "worker_disconnected", "worker_id": other.id} in events


async def test_functions_available_trigger_fires_with_function_ids(engine: Engine) -> None:
    w = peer(engine)
    w.register("on::functions")
    w.send(
        {
            "type": "registertrigger",
            "id": "tf",
            "trigger_type": "engine::functions-available",
            "function_id": "on::functions",
            "config": {},
        }
    )
    assert w.take() == []
    other = peer(engine)
    other.register("new::fn")
    (call,) = [f for f in w.take() if f["type"] == "invokefunction"]
    assert call["function_id"] == "on::functions"
    assert call["data"]["event"] == "functions_changed"
    assert "new::fn" in {f["function_id"] for f in call["data"]["functions"]}


async def test_log_trigger_type_accepted(engine: Engine) -> None:
    w = peer(engine)
    w.register("on::log")
    w.send(
        {
            "type": "registertrigger",
            "id": "tl",
            "trigger_type": "log",
            "function_id": "on::log",
            "config": {"level": "all", "severity_min": 0},
        }
    )
    assert w.take() == []
    listing = (await w.call("engine::registered-triggers::list", {}))["result"]["registered_triggers"]
    assert [t["id"] for t in listing if t["trigger_type"] == "log"] == ["tl"]


async def test_engine_register_trigger_is_durable(engine: Engine) -> None:
    p, a, b = peer(engine), peer(engine), peer(engine)
    p.send({"type": "registertriggertype", "id": "webhook", "description": "d"})
    res = await a.call(
        "engine::register_trigger", {"trigger_type": "webhook", "function_id": "h", "config": {"x": 1}}
    )
    trigger_id = res["result"]["id"]
    fwd = p.take_one()
    assert (fwd["type"], fwd["id"], fwd["config"]) == ("registertrigger", trigger_id, {"x": 1})
    a.disconnect()
    assert p.take() == []  # no owner, survives the caller's disconnect
    res = await b.call("engine::unregister_trigger", {"id": trigger_id})
    assert res["result"] == {"removed": True}
    assert p.take_one() == {"type": "unregistertrigger", "id": trigger_id, "trigger_type": "webhook"}
    res = await b.call("engine::unregister_trigger", {"id": trigger_id})
    assert res["result"] == {"removed": False}


async def test_call_future_resolves_with_the_result_and_forgets_on_cancel(engine: Engine) -> None:
    b = peer(engine)
    b.register("f")
    fut = engine.call_future("f", {"n": 1})
    (invoke,) = b.take()
    assert invoke["type"] == "invokefunction" and invoke["data"] == {"n": 1}
    assert is_uuid4(invoke["invocation_id"])
    assert engine.stats()["pending"] == 1
    b.result(invoke["invocation_id"], "f", result={"ok": True})
    assert json.loads(bytes(await fut)) == {"ok": True}
    assert engine.stats()["pending"] == 0

    abandoned = engine.call_future("f", {})
    (invoke,) = b.take()
    abandoned.cancel()
    await asyncio.sleep(0)
    assert engine.stats()["pending"] == 0
    b.result(invoke["invocation_id"], "f", result={"late": True})  # dropped, nothing breaks
    with pytest.raises(IIIError) as err:
        engine.call_future("nope", {})
    assert err.value.code == "function_not_found"
