"""SDK wire behaviour against a scripted peer (real picows sockets, no engine code).

These pin exact frame order and timing that a real engine cannot be made to
produce on demand (a drop mid-call, a refused upgrade); the same flows run
against the real engine in test_worker_engine.py. ``ScriptedPeer`` speaks
just enough of the protocol: it greets every connection
with ``workerregistered``, records every frame, answers ``invokefunction``
calls through a test-provided ``responder`` and accepts ``/otel``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

from pyiii.errors import IIIError
from pyiii.sdk import Logger, connect, register_worker
from pyiii.sdk import sync as sdk_sync
from pyiii.sdk.worker import Worker

Msg = dict[str, Any]
Responder = Callable[[Msg], Msg | None]


class Conn(WSListener):
    """One worker session seen from the engine side."""

    def __init__(self, engine: ScriptedPeer, headers: dict[str, str]) -> None:
        self.engine = engine
        self.headers = headers
        self.frames: list[Msg] = []
        self.close_code: WSCloseCode | None = None
        self.worker_id = str(uuid.uuid4())
        self.reattach_token = str(uuid.uuid4())
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.engine.auth_error:
            self.send({"type": "error", "error": {"code": "AUTH_ERROR", "message": "bad token"}})
            transport.disconnect()
            return
        self.send({"type": "workerregistered", "worker_id": self.worker_id,
                   "reattach_token": self.reattach_token})  # fmt: skip

    def send(self, msg: Msg | str) -> None:
        assert self.transport is not None
        text = msg if isinstance(msg, str) else json.dumps(msg)
        self.transport.send(WSMsgType.TEXT, text.encode())

    def drop(self) -> None:
        assert self.transport is not None
        self.transport.disconnect(graceful=False)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()
            transport.send_close(self.close_code)
            transport.disconnect()
            return
        msg = json.loads(frame.get_payload_as_bytes())
        self.frames.append(msg)
        if msg["type"] == "invokefunction" and msg.get("invocation_id"):
            reply = self.engine.responder(msg)
            if reply is not None:
                self.send({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                           "function_id": msg["function_id"], **reply})  # fmt: skip

    def types(self) -> list[str]:
        return [f["type"] for f in self.frames]


class Otel(WSListener):
    def __init__(self, engine: ScriptedPeer) -> None:
        self.engine = engine

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            self.engine.otel.append(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


class ScriptedPeer:
    def __init__(self) -> None:
        self.conns: list[Conn] = []
        self.otel: list[bytes] = []
        self.accepting = True
        self.auth_error = False
        self.responder: Responder = lambda msg: None
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _route(self, request: WSUpgradeRequest) -> WSListener | None:
        if request.path == b"/otel":
            return Otel(self)
        if request.path != b"/" or not self.accepting:
            return None  # picows answers 404
        conn = Conn(self, {k.lower(): v for k, v in request.headers.items()})
        self.conns.append(conn)
        return conn

    async def start(self) -> None:
        self._server = await ws_create_server(self._route, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.disconnect(graceful=False)

    async def conn(self, index: int, timeout: float = 5.0) -> Conn:
        await until(lambda: len(self.conns) > index, timeout)
        return self.conns[index]

    async def invoke(self, conn: Conn, function_id: str, data: Any = None, **extra: Any) -> Msg:
        """Invoke a worker's function and wait for its invocationresult."""
        invocation_id = str(uuid.uuid4())
        conn.send({"type": "invokefunction", "invocation_id": invocation_id,
                   "function_id": function_id, "data": data, **extra})  # fmt: skip
        return await result_for(conn, invocation_id)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def result_for(conn: Conn, invocation_id: str) -> Msg:
    def find() -> Msg | None:
        return next((f for f in conn.frames if f.get("invocation_id") == invocation_id
                     and f["type"] == "invocationresult"), None)  # fmt: skip

    await until(lambda: find() is not None)
    found = find()
    assert found is not None
    return found


def invokes(conn: Conn, function_id: str) -> list[Msg]:
    return [f for f in conn.frames if f["type"] == "invokefunction" and f["function_id"] == function_id]


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedPeer]:
    engine = ScriptedPeer()
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
async def worker(peer: ScriptedPeer) -> AsyncIterator[Worker]:
    w = await connect(peer.url, name="unit")
    await peer.conn(0)
    yield w
    await w.shutdown()


def echo_add(msg: Msg) -> Msg:
    data = msg["data"]
    return {"result": {"c": data["a"] + data["b"]}}


# --- connect sequence ----------------------------------------------------------


async def test_connect_sequence_registrations_then_queue_then_announce(peer: ScriptedPeer) -> None:
    peer.responder = echo_add
    w = register_worker(peer.url, name="seq", token="s3cret", headers={"X-Team": "a"})
    assert not w.connected  # inside a running loop: returned before connecting
    w.register_function("math::add", lambda d: d, description="adds", metadata={"v": 1})
    trig = w.register_trigger({"type": "state", "function_id": "math::add", "config": {"scope": "s"}})
    queued = asyncio.ensure_future(w.trigger("math::add", {"a": 1, "b": 2}))
    await w.wait_connected()
    assert await queued == {"c": 3}
    conn = peer.conns[0]
    await until(lambda: len(conn.frames) >= 4)
    assert conn.types()[:4] == ["registerfunction", "registertrigger", "invokefunction", "invokefunction"]
    reg, rt, call, announce = conn.frames[:4]
    assert reg == {"type": "registerfunction", "id": "math::add", "description": "adds", "metadata": {"v": 1}}
    assert rt == {"type": "registertrigger", "id": trig.id, "trigger_type": "state",
                  "function_id": "math::add", "config": {"scope": "s"}}  # fmt: skip
    uuid.UUID(trig.id)
    assert call["function_id"] == "math::add"
    assert announce["function_id"] == "engine::workers::register"
    assert announce["action"] == {"type": "void"} and "invocation_id" not in announce
    info = announce["data"]
    assert info["runtime"] == "python" and info["name"] == "seq" and isinstance(info["pid"], int)
    assert info["telemetry"] == {"language": "python", "framework": "pyiii"}
    assert "reattach" not in conn.types()
    assert conn.headers["authorization"] == "Bearer s3cret"
    assert conn.headers["x-team"] == "a"
    assert w.worker_id == conn.worker_id
    await w.shutdown()


async def test_registration_after_connect_is_sent_live(peer: ScriptedPeer, worker: Worker) -> None:
    conn = peer.conns[0]
    ref = worker.register_function("late::fn", lambda d: d)
    await until(lambda: "registerfunction" in conn.types())
    ref.unregister()
    await until(lambda: "unregisterfunction" in conn.types())
    trig = worker.register_trigger({"trigger_type": "cron", "function_id": "x", "config": {}})
    trig.unregister()
    await until(lambda: "unregistertrigger" in conn.types())
    assert conn.frames[-1] == {"type": "unregistertrigger", "id": trig.id, "trigger_type": "cron"}
    with pytest.raises(ValueError):
        worker.register_function("dup", lambda d: d) and worker.register_function("dup", lambda d: d)


# --- trigger -------------------------------------------------------------------------


async def test_trigger_returns_decoded_result(peer: ScriptedPeer, worker: Worker) -> None:
    peer.responder = echo_add
    assert await worker.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}}) == {"c": 5}
    [call] = invokes(peer.conns[0], "math::add")
    uuid.UUID(call["invocation_id"])
    assert call["data"] == {"a": 2, "b": 3} and "action" not in call


async def test_trigger_absent_or_null_result_is_none(peer: ScriptedPeer, worker: Worker) -> None:
    peer.responder = lambda msg: {}
    assert await worker.trigger("x::none", {}) is None
    peer.responder = lambda msg: {"result": None}
    assert await worker.trigger("x::none", {}) is None


async def test_trigger_error_result_raises_iii_error(peer: ScriptedPeer, worker: Worker) -> None:
    peer.responder = lambda msg: {"error": {"code": "boom", "message": "it broke", "stacktrace": "tb"}}
    with pytest.raises(IIIError) as info:
        await worker.trigger("x::fail", {"a": 1})
    assert (info.value.code, info.value.message) == ("boom", "it broke")
    assert info.value.function_id == "x::fail" and info.value.stacktrace == "tb"


async def test_trigger_timeout_sends_nothing_more(peer: ScriptedPeer, worker: Worker) -> None:
    conn = peer.conns[0]
    before = len(conn.frames)
    with pytest.raises(IIIError) as info:
        await worker.trigger({"function_id": "slow::fn", "payload": 1, "timeout_ms": 50})
    assert info.value.code == "TIMEOUT"
    assert info.value.message == "invocation timed out after 50ms"
    [call] = conn.frames[before:]
    # A late answer is ignored and nothing (no cancel) goes to the engine.
    conn.send({"type": "invocationresult", "invocation_id": call["invocation_id"], "result": 1})
    await asyncio.sleep(0.2)
    assert len(conn.frames) == before + 1
    peer.responder = echo_add
    assert await worker.trigger("math::add", {"a": 1, "b": 1}) == {"c": 2}  # still healthy


async def test_void_trigger_sends_no_id_and_returns_none(peer: ScriptedPeer, worker: Worker) -> None:
    peer.responder = echo_add
    conn = peer.conns[0]
    req = {"function_id": "audit::log", "payload": {"m": 1}, "action": {"type": "void"}}
    assert await worker.trigger(req) is None
    await until(lambda: bool(invokes(conn, "audit::log")))
    [call] = invokes(conn, "audit::log")
    assert call == {"type": "invokefunction", "function_id": "audit::log", "data": {"m": 1},
                    "action": {"type": "void"}}  # fmt: skip


async def test_enqueue_trigger_returns_receipt(peer: ScriptedPeer, worker: Worker) -> None:
    peer.responder = lambda msg: {"result": {"messageReceiptId": "r1"}}
    got = await worker.trigger("pay::charge", {"n": 1}, action={"type": "enqueue", "queue": "payments"})
    assert got == {"messageReceiptId": "r1"}
    [call] = invokes(peer.conns[0], "pay::charge")
    assert call["action"] == {"type": "enqueue", "queue": "payments"} and call["invocation_id"]


# --- handlers ------------------------------------------------------------------------


async def test_sync_handler_runs_off_loop(peer: ScriptedPeer, worker: Worker) -> None:
    seen: list[str] = []

    @worker.function("math::add")
    def add(data: Msg) -> Msg:
        seen.append(threading.current_thread().name)
        return {"c": data["a"] + data["b"]}

    conn = peer.conns[0]
    await until(lambda: "registerfunction" in conn.types())
    reply = await peer.invoke(conn, "math::add", {"a": 1, "b": 2, "_caller_worker_id": "w"})
    assert reply["result"] == {"c": 3} and reply["function_id"] == "math::add"
    assert "error" not in reply
    assert seen[0].startswith("pyiii")


async def test_async_and_inline_handlers_and_metadata(peer: ScriptedPeer, worker: Worker) -> None:
    async def greet(data: Msg, metadata: Any) -> Msg:
        await asyncio.sleep(0)
        return {"hi": data["name"], "meta": metadata}

    worker.register_function("greet", greet)
    worker.register_function("cheap", lambda d: d * 2, inline=True)
    worker.register_function("noargs", lambda: "ok")
    conn = peer.conns[0]
    reply = await peer.invoke(conn, "greet", {"name": "ann"}, metadata={"m": 1})
    assert reply["result"] == {"hi": "ann", "meta": {"m": 1}}
    reply = await peer.invoke(conn, "greet", {"name": "bob"})
    assert reply["result"] == {"hi": "bob", "meta": None}
    assert (await peer.invoke(conn, "cheap", 21))["result"] == 42
    assert (await peer.invoke(conn, "noargs", {}))["result"] == "ok"


async def test_handler_errors_and_none(
    peer: ScriptedPeer, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    def bad(data: Any) -> None:
        raise ValueError("bad input")

    def missing_key(data: dict[str, Any]) -> None:
        data["b"]

    async def coded(data: Any) -> None:
        raise IIIError("custom_code", "nope")

    worker.register_function("bad", bad)
    worker.register_function("missing_key", missing_key)
    worker.register_function("coded", coded)
    worker.register_function("nothing", lambda d: None)
    worker.register_function("unserializable", lambda d: object())
    conn = peer.conns[0]
    caplog.set_level(logging.WARNING, logger="pyiii.sdk")
    err = (await peer.invoke(conn, "bad", {}))["error"]
    assert err["code"] == "invocation_failed" and err["message"] == "ValueError: bad input"
    assert "ValueError: bad input" in err["stacktrace"]
    # the bare str() of a KeyError is "'b'": the type makes it readable
    err = (await peer.invoke(conn, "missing_key", {"a": 1}))["error"]
    assert (err["code"], err["message"]) == ("invocation_failed", "KeyError: 'b'")
    assert 'data["b"]' in err["stacktrace"] and "in missing_key" in err["stacktrace"]
    logged = [r for r in caplog.records if r.name == "pyiii.sdk" and "missing_key" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert "KeyError: 'b'" in logged[0].getMessage() and "Traceback" in logged[0].getMessage()
    err = (await peer.invoke(conn, "coded", {}))["error"]
    assert (err["code"], err["message"]) == ("custom_code", "nope")
    reply = await peer.invoke(conn, "nothing", {})
    assert "result" not in reply and "error" not in reply
    err = (await peer.invoke(conn, "unserializable", {}))["error"]
    assert err["code"] == "serialization_error"


async def test_unknown_function_gets_function_not_found(peer: ScriptedPeer, worker: Worker) -> None:
    reply = await peer.invoke(peer.conns[0], "nope::x", {})
    assert reply["error"] == {"code": "function_not_found", "message": "Function 'nope::x' not found"}


async def test_void_invocation_runs_without_reply(peer: ScriptedPeer, worker: Worker) -> None:
    ran = asyncio.Event()

    async def handler(data: Any) -> str:
        ran.set()
        return "ignored"

    worker.register_function("void::fn", handler)
    conn = peer.conns[0]
    conn.send({"type": "invokefunction", "function_id": "void::fn", "data": {}})
    await asyncio.wait_for(ran.wait(), 5)
    await asyncio.sleep(0.05)
    assert "invocationresult" not in conn.types()


async def test_bad_frames_are_ignored(peer: ScriptedPeer, worker: Worker) -> None:
    worker.register_function("echo", lambda d: d, inline=True)
    conn = peer.conns[0]
    conn.send("this is not json")
    conn.send({"type": "nosuchtype"})
    conn.send({"type": "ping"})
    assert (await peer.invoke(conn, "echo", [1]))["result"] == [1]
    await until(lambda: "pong" in conn.types())
    assert worker.connected


# --- reconnect ---------------------------------------------------------------------


async def test_reconnect_reattaches_first_and_replays(peer: ScriptedPeer, worker: Worker) -> None:
    worker.register_function("math::add", lambda d: d)
    trig = worker.register_trigger({"type": "state", "function_id": "math::add", "config": None})
    first = peer.conns[0]
    await until(lambda: "registertrigger" in first.types())
    first.drop()
    second = await peer.conn(1)
    await until(lambda: len(second.frames) >= 4)
    assert second.types()[:4] == ["reattach", "registerfunction", "registertrigger", "invokefunction"]
    assert second.frames[0] == {"type": "reattach", "previous_worker_id": first.worker_id,
                                "reattach_token": first.reattach_token}  # fmt: skip
    assert second.frames[2]["id"] == trig.id and second.frames[2]["config"] is None
    assert second.frames[3]["function_id"] == "engine::workers::register"
    await until(lambda: worker.worker_id == second.worker_id)


async def test_drop_fails_in_flight_calls_with_invocation_stopped(peer: ScriptedPeer, worker: Worker) -> None:
    call = asyncio.ensure_future(worker.trigger("slow::fn", {}))
    conn = peer.conns[0]
    await until(lambda: bool(invokes(conn, "slow::fn")))
    conn.drop()
    with pytest.raises(IIIError) as info:
        await call
    assert info.value.code == "invocation_stopped"
    assert info.value.message == "connection to the engine was lost"


async def test_offline_queue_flushed_after_reconnect(peer: ScriptedPeer, worker: Worker) -> None:
    worker.register_function("mine", lambda d: d)
    first = peer.conns[0]
    peer.accepting = False
    first.drop()
    await until(lambda: not worker.connected)
    peer.responder = echo_add
    kept = asyncio.ensure_future(worker.trigger("math::add", {"a": 20, "b": 22}))
    expired = asyncio.ensure_future(worker.trigger("math::add", {"a": 0, "b": 0}, timeout_ms=50))
    void = asyncio.ensure_future(worker.trigger("audit::log", {"v": 1}, action={"type": "void"}))
    with pytest.raises(IIIError) as info:
        await expired
    assert info.value.code == "TIMEOUT"
    assert await void is None
    await asyncio.sleep(0.3)  # a couple of refused reconnect attempts
    peer.accepting = True
    assert await asyncio.wait_for(kept, 10) == {"c": 42}
    second = peer.conns[1]
    assert second.types()[:2] == ["reattach", "registerfunction"]
    calls = [f for f in second.frames if f["type"] == "invokefunction"]
    assert [c["function_id"] for c in calls] == ["math::add", "audit::log", "engine::workers::register"]
    assert calls[0]["data"] == {"a": 20, "b": 22}  # the expired call was dropped


# --- shutdown ----------------------------------------------------------------------


async def test_shutdown_fails_pending_and_closes_1000(peer: ScriptedPeer) -> None:
    async with await connect(peer.url, name="bye") as w:
        conn = await peer.conn(0)
        call = asyncio.ensure_future(w.trigger("slow::fn", {}))
        await until(lambda: bool(invokes(conn, "slow::fn")))
    with pytest.raises(IIIError) as info:
        await call
    assert info.value.code == "SHUTDOWN"
    await until(lambda: conn.close_code is not None)
    assert conn.close_code == WSCloseCode.OK
    await asyncio.sleep(0.5)
    assert len(peer.conns) == 1  # no reconnect after shutdown
    with pytest.raises(IIIError):
        await w.trigger("x", {})


async def test_connect_failure_raises_connection_lost() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(IIIError) as info:
        await connect(f"ws://127.0.0.1:{port}", reconnect=False)
    assert info.value.code == "CONNECTION_LOST"
    with pytest.raises(IIIError) as info:
        await connect(f"ws://127.0.0.1:{port}", connect_timeout=0.5)
    assert info.value.code == "CONNECTION_LOST"


async def test_auth_error_fails_connect_without_retrying(peer: ScriptedPeer) -> None:
    peer.auth_error = True
    with pytest.raises(IIIError) as info:
        await connect(peer.url, token="wrong", connect_timeout=5)
    assert (info.value.code, info.value.message) == ("AUTH_ERROR", "bad token")
    await asyncio.sleep(0.5)
    assert len(peer.conns) == 1


# --- logger ------------------------------------------------------------------------


def _log_records(frames: list[bytes]) -> list[tuple[str, Msg]]:
    out = []
    for frame in frames:
        assert frame.startswith(b"LOGS")
        export = json.loads(frame[4:])
        for resource in export["resourceLogs"]:
            [attr] = resource["resource"]["attributes"]
            assert attr["key"] == "service.name"
            for scope in resource["scopeLogs"]:
                assert scope["scope"] == {"name": "pyiii"}
                out += [(attr["value"]["stringValue"], r) for r in scope["logRecords"]]
    return out


async def test_logger_sends_logs_frames_to_otel(peer: ScriptedPeer, worker: Worker) -> None:
    logger = Logger("billing")

    async def handler(data: Any) -> None:
        logger.info("charged", {"amount": 5})

    def sync_handler(data: Any) -> None:
        Logger().error("sync failure")

    worker.register_function("pay::charge", handler)
    worker.register_function("pay::sync", sync_handler)
    conn = peer.conns[0]
    await peer.invoke(conn, "pay::charge", {})
    await peer.invoke(conn, "pay::sync", {})
    logger.warn("outside")
    await until(lambda: len(_log_records(peer.otel)) >= 3)
    records = {r["body"]["stringValue"]: (svc, r) for svc, r in _log_records(peer.otel)}
    svc, charged = records["charged"]
    assert svc == "billing"
    assert (charged["severityNumber"], charged["severityText"]) == (9, "INFO")
    int(charged["timeUnixNano"])
    attrs = {a["key"]: a["value"]["stringValue"] for a in charged["attributes"]}
    assert json.loads(attrs["log.data"]) == {"amount": 5}
    assert attrs["function_id"] == "pay::charge"
    svc, failed = records["sync failure"]
    assert svc == "unit"  # default service name: the worker's name
    assert failed["severityText"] == "ERROR"
    assert failed["attributes"] == [{"key": "function_id", "value": {"stringValue": "pay::sync"}}]
    _, outside = records["outside"]
    assert outside["severityText"] == "WARN" and outside["attributes"] == []


async def test_logger_without_worker_falls_back_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pyiii.log"):
        Logger("svc").info("no engine here", {"k": 1})
    assert "no engine here" in caplog.text and "svc" in caplog.text


# --- sync facade -------------------------------------------------------------------


async def test_sync_facade_from_plain_thread(peer: ScriptedPeer) -> None:
    peer.responder = echo_add
    out: dict[str, Any] = {}

    def script() -> Worker:
        w = register_worker(peer.url, name="script")  # no loop in this thread
        out["direct"] = w.trigger_sync({"function_id": "math::add", "payload": {"a": 1, "b": 1}})
        out["facade"] = sdk_sync.trigger("math::add", {"a": 2, "b": 2})
        sdk_sync.register_function("thread::fn", lambda d: {"got": d})
        return w

    w = await asyncio.to_thread(script)
    assert out == {"direct": {"c": 2}, "facade": {"c": 4}}
    assert w._thread is not None and w._thread.is_alive()
    # Awaiting from another loop (this test's) is forwarded to the worker's loop.
    assert await w.trigger("math::add", {"a": 3, "b": 3}) == {"c": 6}
    conn = peer.conns[0]
    assert (await peer.invoke(conn, "thread::fn", 7))["result"] == {"got": 7}
    await asyncio.to_thread(sdk_sync.shutdown)
    assert not w._thread.is_alive()
    await until(lambda: conn.close_code == WSCloseCode.OK)


async def test_blocking_register_worker_times_out() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(IIIError) as info:
        await asyncio.to_thread(register_worker, f"ws://127.0.0.1:{port}", connect_timeout=0.5)
    assert info.value.code == "CONNECTION_LOST"
    # The private loop thread was stopped, not leaked.
    assert not [t for t in threading.enumerate() if t.name == "pyiii-worker"]
