"""Wire tolerance over a real socket (docs/protocol.md §1.3, §1.5, §10 items 1-3 and 9).

The client is the ``websockets`` library, the same one the official Python
SDK uses, so these are frames a real worker could send.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

RECV_TIMEOUT = 5.0
QUIET = 0.3  # how long "no frame arrives" is watched for


async def recv(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    """Next frame; it must be a text frame holding one JSON object."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"engine sent a binary frame: {raw[:80]!r}"
    frame = json.loads(raw)
    assert isinstance(frame, dict) and isinstance(frame.get("type"), str), raw[:200]
    return frame


async def assert_quiet(ws: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), QUIET)


async def worker(url: str, **kwargs: Any) -> ClientConnection:
    """Connect to ``/`` and consume ``workerregistered``."""
    ws = await websockets.connect(url, compression=None, **kwargs)
    first = await recv(ws)
    assert first["type"] == "workerregistered"
    return ws


async def send(ws: ClientConnection, msg: dict[str, Any]) -> None:
    await ws.send(json.dumps(msg))


async def call(
    ws: ClientConnection, function_id: str, data: Any = None, *, omit_data: bool = False, **extra: Any
) -> dict[str, Any]:
    inv_id = str(uuid.uuid4())
    msg: dict[str, Any] = {"type": "invokefunction", "invocation_id": inv_id, "function_id": function_id}
    if not omit_data:
        msg["data"] = data
    msg.update(extra)
    await send(ws, msg)
    while True:
        frame = await recv(ws)
        if frame["type"] == "invocationresult" and frame["invocation_id"] == inv_id:
            return frame


async def assert_alive(ws: ClientConnection) -> None:
    """The connection is open and the very next frame answers a JSON ping."""
    await send(ws, {"type": "ping"})
    assert await recv(ws) == {"type": "pong"}


@pytest.fixture
async def ws(engine: str) -> AsyncIterator[ClientConnection]:
    conn = await worker(engine)
    yield conn
    await conn.close()


# --- §10.3 parsing -----------------------------------------------------------------


async def test_missing_data_reaches_builtin_as_null(ws: ClientConnection) -> None:
    res = await call(ws, "engine::functions::list", omit_data=True)
    assert "error" not in res
    assert isinstance(res["result"]["functions"], list)
    ids = {f["function_id"] for f in res["result"]["functions"]}
    assert "state::get" in ids


async def test_missing_data_reaches_routed_function_as_null(engine: str, ws: ClientConnection) -> None:
    target = await worker(engine)
    try:
        await send(target, {"type": "registerfunction", "id": "echo::nodata"})
        await assert_alive(target)  # registration processed
        await send(ws, {"type": "invokefunction", "invocation_id": "nd-1", "function_id": "echo::nodata"})
        fwd = await recv(target)
        assert fwd["type"] == "invokefunction"
        assert fwd["invocation_id"] == "nd-1"
        assert fwd.get("data") is None
        await send(
            target,
            {
                "type": "invocationresult",
                "invocation_id": "nd-1",
                "function_id": "echo::nodata",
                "result": "ok",
            },
        )
        res = await recv(ws)
        assert (res["invocation_id"], res["result"]) == ("nd-1", "ok")
    finally:
        await target.close()


async def test_missing_config_on_registertrigger_read_as_null(engine: str, ws: ClientConnection) -> None:
    provider = await worker(engine)
    try:
        await send(provider, {"type": "registertriggertype", "id": "hook", "description": "d"})
        await assert_alive(provider)
        await send(
            ws, {"type": "registertrigger", "id": "t-nocfg", "trigger_type": "hook", "function_id": "h"}
        )
        fwd = await recv(provider)
        assert fwd["type"] == "registertrigger"
        assert (fwd["id"], fwd["trigger_type"], fwd["function_id"]) == ("t-nocfg", "hook", "h")
        assert fwd.get("config") is None
        await assert_alive(ws)  # no error ack to the registering worker
    finally:
        await provider.close()


async def test_missing_description_on_registertriggertype_defaults_to_empty(ws: ClientConnection) -> None:
    await send(ws, {"type": "registertriggertype", "id": "nodesc"})
    await assert_alive(ws)
    res = await call(ws, "engine::triggers::list", {})
    (entry,) = [t for t in res["result"]["triggers"] if t["id"] == "nodesc"]
    assert entry["description"] == ""


async def test_unknown_message_type_ignored(ws: ClientConnection) -> None:
    await send(ws, {"type": "frobnicate", "id": "x"})
    await assert_alive(ws)


async def test_unknown_fields_ignored(ws: ClientConnection) -> None:
    await send(ws, {"type": "registerfunction", "id": "extra::f", "future_field": {"a": 1}, "x": None})
    await send(ws, {"type": "ping", "seq": 7})
    assert await recv(ws) == {"type": "pong"}
    res = await call(ws, "engine::functions::list", {"prefix": "extra::"}, brand_new="yes", priority=3)
    assert [f["function_id"] for f in res["result"]["functions"]] == ["extra::f"]


@pytest.mark.parametrize("frame", ["", "   ", " \n\t\r\n "], ids=["empty", "spaces", "mixed-whitespace"])
async def test_empty_and_whitespace_frames_ignored(ws: ClientConnection, frame: str) -> None:
    await ws.send(frame)
    await assert_alive(ws)


@pytest.mark.parametrize("prefix", [b"OTLP", b"MTRC", b"LOGS"])
async def test_telemetry_binary_frames_on_root_ignored(ws: ClientConnection, prefix: bytes) -> None:
    body = {"resourceSpans": [], "resourceMetrics": [], "resourceLogs": []}
    await ws.send(prefix + json.dumps(body).encode())
    await ws.send(prefix + b"not even json")
    await assert_alive(ws)


async def test_logs_frame_on_root_is_printed(engine_proc: Any) -> None:
    ws = await worker(engine_proc.url)
    try:
        record = {
            "timeUnixNano": "1",
            "severityText": "WARN",
            "body": {"stringValue": "old sdk says hello on root"},
        }
        export = {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": [{"logRecords": [record]}]}]}
        await ws.send(b"LOGS" + json.dumps(export).encode())
        await assert_alive(ws)
        assert await asyncio.to_thread(engine_proc.wait_for_output, "old sdk says hello on root")
    finally:
        await ws.close()


async def test_binary_frame_with_json_is_parsed(ws: ClientConnection) -> None:
    await ws.send(b'{"type":"ping"}')
    assert await recv(ws) == {"type": "pong"}
    msg = {
        "type": "invokefunction",
        "invocation_id": "bin-1",
        "function_id": "engine::functions::list",
        "data": {},
    }
    await ws.send(json.dumps(msg).encode())
    res = await recv(ws)
    assert res["invocation_id"] == "bin-1" and "functions" in res["result"]


@pytest.mark.parametrize("inv_id", ["x", "not-a-uuid at all", "42"])
async def test_any_string_accepted_as_invocation_id(engine: str, ws: ClientConnection, inv_id: str) -> None:
    await send(
        ws,
        {
            "type": "invokefunction",
            "invocation_id": inv_id,
            "function_id": "engine::functions::list",
            "data": {},
        },
    )
    res = await recv(ws)
    assert res["invocation_id"] == inv_id and "functions" in res["result"]

    target = await worker(engine)
    try:
        await send(target, {"type": "registerfunction", "id": "echo::id"})
        await assert_alive(target)
        await send(
            ws, {"type": "invokefunction", "invocation_id": inv_id, "function_id": "echo::id", "data": 1}
        )
        fwd = await recv(target)
        assert fwd["invocation_id"] == inv_id
        await send(
            target,
            {"type": "invocationresult", "invocation_id": inv_id, "function_id": "echo::id", "result": 2},
        )
        res = await recv(ws)
        assert (res["invocation_id"], res["result"]) == (inv_id, 2)
    finally:
        await target.close()


async def test_json_pong_ignored(ws: ClientConnection) -> None:
    await send(ws, {"type": "pong"})
    await assert_alive(ws)  # the next frame is the pong to our ping, nothing before it


async def test_registerservice_accepted_silently(ws: ClientConnection) -> None:
    await send(
        ws,
        {
            "type": "registerservice",
            "id": "billing",
            "name": "Billing",
            "description": "d",
            "parent_service_id": None,
        },
    )
    await send(ws, {"type": "registerservice", "id": "bare"})
    await assert_alive(ws)


async def test_unregistertriggertype_accepted_silently(ws: ClientConnection) -> None:
    await send(ws, {"type": "unregistertriggertype", "id": "never-registered"})
    await assert_alive(ws)


@pytest.mark.parametrize("frame", ["{not json", '{"type": "ping"', "[1, 2", "null", "42", '"str"', "[]"])
async def test_invalid_json_does_not_close_connection(ws: ClientConnection, frame: str) -> None:
    await ws.send(frame)
    # Dropped, and the sender is told why (an `error` frame, which SDKs ignore).
    answer = await recv(ws)
    assert answer["type"] == "error" and answer["error"]["code"] == "deserialization_error", answer
    await assert_alive(ws)


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "invokefunction", "invocation_id": "bad-1", "function_id": 123, "data": {}},
        {"type": "invokefunction", "invocation_id": "bad-1", "data": {}},
        {"type": "invokefunction", "invocation_id": "bad-1", "function_id": "f", "action": "void"},
    ],
    ids=["function_id-not-string", "function_id-missing", "action-not-object"],
)
async def test_malformed_invoke_with_id_gets_deserialization_error(
    ws: ClientConnection, msg: dict[str, Any]
) -> None:
    await send(ws, msg)
    res = await recv(ws)
    assert res["type"] == "invocationresult"
    assert res["invocation_id"] == "bad-1"
    assert res["error"]["code"] == "deserialization_error"
    assert isinstance(res["error"]["message"], str) and res["error"]["message"]
    assert "result" not in res
    await assert_alive(ws)


# --- §10.1 listener ---------------------------------------------------------------------


async def test_control_ping_answered_on_root(ws: ClientConnection) -> None:
    waiter = await ws.ping(b"keepalive")
    latency = await asyncio.wait_for(waiter, RECV_TIMEOUT)
    assert latency >= 0


async def test_otel_path_accepts_upgrade_and_ignores_text(engine: str) -> None:
    otel = await websockets.connect(engine + "/otel", compression=None)
    try:
        # Not a worker: nothing is sent unprompted, and text frames get no answer.
        await otel.send(json.dumps({"type": "ping"}))
        await otel.send("hello")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(otel.recv(), QUIET)
        await otel.send(b"LOGS" + json.dumps({"resourceLogs": []}).encode())
        waiter = await otel.ping()
        await asyncio.wait_for(waiter, RECV_TIMEOUT)

        # The telemetry socket never shows up as a worker.
        ws = await worker(engine)
        try:
            res = await call(ws, "engine::workers::list", {})
            assert len(res["result"]["workers"]) == 1
        finally:
            await ws.close()
    finally:
        await otel.close()


@pytest.mark.parametrize("path", ["/nope", "/ws", "/otel/extra", "/ws/channels/unknown?key=x&dir=read"])
async def test_other_paths_get_404(engine: str, path: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(engine + path)
    assert info.value.response.status_code == 404


async def test_root_with_query_string_is_the_worker_protocol(engine: str) -> None:
    ws = await worker(engine + "/?sdk=node")
    try:
        await assert_alive(ws)
    finally:
        await ws.close()


async def test_message_of_16_mib_minus_1_kib_accepted(engine: str) -> None:
    ws = await worker(engine, max_size=None)
    try:
        target = 16 * 1024 * 1024 - 1024
        head = json.dumps(
            {
                "type": "invokefunction",
                "invocation_id": "big",
                "function_id": "state::set",
                "data": {"scope": "big", "key": "k", "value": ""},
            }
        )
        pad = target - len(head.encode())
        frame = head.replace('"value": ""', '"value": "' + "v" * pad + '"')
        assert len(frame.encode()) == target
        await ws.send(frame)
        res = await recv(ws, timeout=30)
        assert res["invocation_id"] == "big"
        assert "error" not in res, res.get("error")
        got = await call(ws, "state::get", {"scope": "big", "key": "k"})
        assert got["result"] == "v" * pad
    finally:
        await ws.close()


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "binary-cut-mid-utf8"])
async def test_fragmented_message_is_reassembled(ws: ClientConnection, as_bytes: bool) -> None:
    value = {"café": "☕" * 100}
    text = json.dumps(
        {
            "type": "invokefunction",
            "invocation_id": "frag-1",
            "function_id": "state::set",
            "data": {"scope": "frag", "key": "k", "value": value},
        },
        ensure_ascii=False,
    )
    payload: str | bytes = text.encode() if as_bytes else text
    cup = payload.index("☕".encode() if isinstance(payload, bytes) else "☕")
    cuts = [0, 7, 60, cup + 1, cup + 32, len(payload)]
    if isinstance(payload, bytes):  # the byte cuts split 3-byte characters
        with pytest.raises(UnicodeDecodeError):
            payload[: cup + 1].decode()

    async def fragments() -> AsyncIterator[str | bytes]:
        for start, end in itertools.pairwise(cuts):
            yield payload[start:end]

    await ws.send(fragments())
    res = await recv(ws)
    assert res["invocation_id"] == "frag-1"
    assert res["result"]["new_value"] == value
    await assert_alive(ws)


async def test_every_engine_frame_is_json_text(engine: str) -> None:
    """Drive one of each engine->worker frame kind; ``recv`` checks text + JSON."""
    a = await worker(engine)
    b = await worker(engine)
    try:
        await send(b, {"type": "registerfunction", "id": "svc::f"})
        await send(b, {"type": "registertriggertype", "id": "hook", "description": "d"})
        await assert_alive(b)
        await send(a, {"type": "registerfunction", "id": "svc::f"})
        assert (await recv(a))["type"] == "registrationrejected"
        await send(
            a,
            {
                "type": "registertrigger",
                "id": "t1",
                "trigger_type": "hook",
                "function_id": "svc::f",
                "config": {"path": "/é"},
            },
        )
        assert (await recv(b))["type"] == "registertrigger"
        await send(a, {"type": "unregistertrigger", "id": "t1", "trigger_type": "hook"})
        assert (await recv(b))["type"] == "unregistertrigger"
        await send(
            a, {"type": "registertrigger", "id": "t2", "trigger_type": "hook", "function_id": "svc::f"}
        )
        assert (await recv(b))["type"] == "registertrigger"
        await send(
            b,
            {
                "type": "triggerregistrationresult",
                "id": "t2",
                "trigger_type": "hook",
                "function_id": "svc::f",
                "error": {"code": "bad", "message": "no"},
            },
        )
        assert (await recv(a))["type"] == "triggerregistrationresult"

        await send(
            a,
            {
                "type": "invokefunction",
                "invocation_id": "i1",
                "function_id": "svc::f",
                "data": {"s": '\u2028\x00"\\'},
            },
        )
        fwd = await recv(b)
        assert fwd["data"]["s"] == '\u2028\x00"\\'
        await send(
            b,
            {
                "type": "invocationresult",
                "invocation_id": "i1",
                "function_id": "svc::f",
                "error": {"code": "E", "message": "m", "stacktrace": None},
            },
        )
        err = await recv(a)
        assert err["error"] == {"code": "E", "message": "m"}
        assert (await call(a, "nope::x", {}))["error"]["code"] == "function_not_found"
        assert "result" in await call(a, "state::set", {"scope": "s", "key": "k", "value": [1]})
        await assert_alive(a)

        # In-flight call to a worker that leaves: invocation_stopped, also JSON text.
        await send(a, {"type": "invokefunction", "invocation_id": "i2", "function_id": "svc::f", "data": {}})
        assert (await recv(b))["invocation_id"] == "i2"
        await b.close()
        stopped = await recv(a)
        assert stopped["invocation_id"] == "i2"
        assert stopped["error"] == {"code": "invocation_stopped", "message": "Invocation stopped"}
    finally:
        await a.close()
        await b.close()


# --- reattach over a real socket ----------------------------------------------------------


async def test_reattach_closes_the_previous_socket(engine: str) -> None:
    old = await websockets.connect(engine, compression=None)
    hello = await recv(old)
    new = await worker(engine)
    try:
        await send(
            new,
            {
                "type": "reattach",
                "previous_worker_id": hello["worker_id"],
                "reattach_token": hello["reattach_token"],
            },
        )
        await assert_alive(new)
        # The evicted socket is closed by the engine.
        await asyncio.wait_for(old.wait_closed(), 2.0)
    finally:
        await old.close()
        await new.close()
