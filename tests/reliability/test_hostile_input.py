"""Hostile input over a real socket, generated with hypothesis.

Each example sends a batch of random and mutated frames — invalid JSON, wrong
types in every field of every message type, huge strings, 100k-deep arrays,
binary frames, invalid UTF-8, broken fragment sequences, frames over the size
limit, reserved bits and opcodes — from fresh raw connections, and then checks
what a user would: the engine process is up, a fresh connection is greeted
and served, a bystander worker's function still answers on its original
connection, and the stored state is byte-for-byte what it was unless a valid
write was sent. Every bad frame must be answered with an error, or the
connection closed with a code and a reason.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relkit import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, Closed, RawWS, raw_worker, rss_kib

from pyiii import register_worker
from pyiii.protocol import nesting_exceeds

MAX_FRAME = 1 << 20  # configured below; small so oversized frames are cheap to send
MAX_DEPTH = 64  # the default limits.max_nesting_depth
CONFIG = f"""
workers:
  - name: iii-worker-manager
    config:
      limits: {{max_frame_bytes: {MAX_FRAME}}}
  - name: iii-state
    config:
      adapter: {{name: kv, config: {{store_method: in_memory}}}}
"""
EXAMPLES = 200

# --- the message model the oracle judges frames by (docs/protocol.md §2) --------------------------------

STR, OPT_STR, ANY, ACTION, OBJ = "str", "opt_str", "any", "action", "obj"
MESSAGES: dict[str, tuple[dict[str, str], set[str]]] = {  # type -> (field kinds, required fields)
    "invokefunction": (
        {
            "function_id": STR,
            "data": ANY,
            "invocation_id": OPT_STR,
            "action": ACTION,
            "metadata": ANY,
            "namespace": OPT_STR,
            "traceparent": OPT_STR,
            "baggage": OPT_STR,
        },
        {"function_id"},
    ),
    "invocationresult": (
        {
            "invocation_id": STR,
            "function_id": STR,
            "result": ANY,
            "error": ANY,
            "traceparent": OPT_STR,
            "baggage": OPT_STR,
        },
        {"invocation_id"},
    ),
    "registerfunction": (
        {
            "id": STR,
            "description": OPT_STR,
            "request_format": ANY,
            "response_format": ANY,
            "metadata": ANY,
            "invocation": ANY,
        },
        {"id"},
    ),
    "unregisterfunction": ({"id": STR}, {"id"}),
    "registertriggertype": (
        {
            "id": STR,
            "description": OPT_STR,
            "trigger_request_format": ANY,
            "call_request_format": ANY,
            "namespace": OPT_STR,
        },
        {"id"},
    ),
    "registertrigger": (
        {
            "id": STR,
            "trigger_type": STR,
            "function_id": STR,
            "config": ANY,
            "metadata": ANY,
            "namespace": OPT_STR,
            "trigger_namespace": OPT_STR,
        },
        {"id", "trigger_type", "function_id"},
    ),
    "unregistertrigger": ({"id": STR, "trigger_type": OPT_STR}, {"id"}),
    "triggerregistrationresult": (
        {"id": STR, "trigger_type": STR, "function_id": STR, "error": ANY},
        {"id", "trigger_type", "function_id"},
    ),
    "registerservice": (
        {"id": STR, "name": OPT_STR, "description": OPT_STR, "parent_service_id": OPT_STR},
        {"id"},
    ),
    "reattach": ({"previous_worker_id": STR, "reattach_token": OPT_STR}, {"previous_worker_id"}),
    "ping": ({}, set()),
    "pong": ({}, set()),
    "unregistertriggertype": ({"id": STR}, {"id"}),
    "workerregistered": ({"worker_id": STR, "reattach_token": STR}, {"worker_id"}),
    "error": ({"error": OBJ}, {"error"}),
}
# Function ids a fuzzed call may name. No engine::register_trigger: its bindings outlive the
# connection, and the checks below assume a fuzzing connection leaves nothing behind.
FUNCTION_IDS = [
    "state::get",
    "state::set",
    "state::update",
    "state::delete",
    "state::list",
    "state::list_groups",
    "bystander::echo",
    "nope::missing",
    "engine::functions::list",
    "engine::stats",
]
STATE_WRITES = {"state::set", "state::update", "state::delete"}


@dataclass
class Value:
    """A JSON value as text, with how deeply it nests arrays/objects."""

    text: str
    depth: int
    kind: str  # "null" | "str" | "obj" | "other"


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


def _kind(v: Any) -> str:
    return "null" if v is None else "str" if isinstance(v, str) else "obj" if isinstance(v, dict) else "other"


json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_any = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=12,
)


@st.composite
def values(draw: st.DrawFn) -> Value:
    pick = draw(st.integers(0, 99))
    if pick < 60:
        v = draw(json_any)
        return Value(json.dumps(v, ensure_ascii=draw(st.booleans())), _depth(v), _kind(v))
    if pick < 70:
        return Value(json.dumps(draw(st.sampled_from(FUNCTION_IDS))), 0, "str")
    if pick < 78:  # nested just under, at or over the limit
        d = draw(st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 7]))
        inner = draw(st.sampled_from(["[", '{"k":']))
        close = "]" if inner == "[" else "}"
        return Value(inner * d + "1" + close * d, d, "obj" if inner != "[" else "other")
    if pick < 84:  # 100k nested arrays
        return Value("[" * 100_000 + "]" * 100_000, 100_000, "other")
    if pick < 92:  # a huge string
        n = draw(st.integers(50_000, 700_000))
        return Value('"' + "x" * n + '"', 0, "str")
    # strings full of brackets, quotes and escapes (the nesting check must not count them)
    s = draw(st.text(alphabet='[]{}"\\ax', max_size=40))
    return Value(json.dumps(s), 0, "str")


def state_payload(draw: st.DrawFn, fid: str) -> Value:
    scope = draw(st.sampled_from(["fuzz", "bystander", "x/../y"]))
    key = draw(st.sampled_from(["k0", "k1", "new", "../../etc/passwd"]))
    body: dict[str, Any] = {"scope": scope, "key": key}
    if fid == "state::set":
        body["value"] = draw(json_any)
    elif fid == "state::update":
        body["ops"] = [{"type": "set", "path": "f", "value": draw(json_leaf)}]
    text = json.dumps(body)
    return Value(text, _depth(body), "obj")


@dataclass
class Frame:
    """What to put on the wire, and what the engine must do about it."""

    wire: list[bytes] = field(repr=False)
    expect: str  # "error" | "quiet" (valid or ignorable: anything but a close) | "close"
    close_codes: set[int] = field(default_factory=set)
    limit: bool = False  # the error must name max_nesting_depth
    writes: bool = False  # a valid state write: the snapshot may change
    label: str = ""
    preview: str = ""  # the start of the payload, for failure reports


def judge(msg_type: Any, fields: dict[str, Value], has_type: bool) -> tuple[str, bool]:
    """The oracle for a JSON object frame: ("error" | "quiet", limit?)."""
    if any(v.depth > MAX_DEPTH for v in fields.values()) or (
        has_type and isinstance(msg_type, Value) and msg_type.depth > MAX_DEPTH
    ):
        return "error", True
    if not has_type or not isinstance(msg_type, Value) or msg_type.kind != "str":
        return "error", False
    name = json.loads(msg_type.text)
    if name not in MESSAGES:
        return "quiet", False  # unknown types are ignored (docs/protocol.md §1.3)
    kinds, required = MESSAGES[name]
    if not required <= fields.keys():
        return "error", False
    for key, value in fields.items():
        kind = kinds.get(key)
        ok = (
            kind is None
            or kind == ANY
            or (kind == STR and value.kind == "str")
            or (kind == OPT_STR and value.kind in ("str", "null"))
            or (kind == OBJ and value.kind == "obj")
            or (kind == ACTION and (value.kind == "null" or _action_ok(value.text)))
        )
        if not ok:
            return "error", False
    return "quiet", False


def _action_ok(text: str) -> bool:
    try:
        v = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(v, dict)
        and isinstance(v.get("type"), str)
        and (v.get("queue") is None or isinstance(v.get("queue"), str))
    )


@st.composite
def json_frames(draw: st.DrawFn) -> Frame:
    """A message of a known (or unknown) type with mutated, missing or extra fields."""
    name = draw(st.sampled_from([*MESSAGES, "bogus", "unregistertriggertype"]))
    kinds, _ = MESSAGES.get(name, ({"id": STR}, set()))
    fields: dict[str, Value] = {}
    for key, kind in kinds.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # drop the field
        if draw(st.integers(0, 3)) > 0:  # a well-typed value
            if key == "function_id" or key == "id":
                fields[key] = Value(json.dumps(draw(st.sampled_from(FUNCTION_IDS))), 0, "str")
            elif key == "data" and name == "invokefunction" and "function_id" in fields:
                fid = json.loads(fields["function_id"].text)
                is_state = isinstance(fid, str) and fid.startswith("state::")
                fields[key] = state_payload(draw, fid) if is_state else draw(values())
            elif key == "action":
                a = draw(st.sampled_from([None, {"type": "void"}, {"type": "enqueue", "queue": "q"}]))
                fields[key] = Value(json.dumps(a), _depth(a), _kind(a))
            elif kind in (STR, OPT_STR):
                fields[key] = Value(json.dumps(draw(st.text(max_size=30))), 0, "str")
            elif kind == OBJ:
                fields[key] = Value('{"code":"X","message":"m"}', 1, "obj")
            else:
                fields[key] = draw(values())
        else:
            fields[key] = draw(values())  # anything, often the wrong type
    if draw(st.integers(0, 4)) == 0:
        fields[draw(st.sampled_from(["zzz", "extra", "data2"]))] = draw(values())
    type_choice = draw(st.integers(0, 19))
    has_type = type_choice != 0
    msg_type = Value(json.dumps(name), 0, "str") if type_choice > 1 else draw(values())
    parts = ([f'"type":{msg_type.text}'] if has_type else []) + [
        f"{json.dumps(k)}:{v.text}" for k, v in fields.items()
    ]
    text = "{" + ",".join(parts) + "}"
    expect, limit = judge(msg_type, fields, has_type)
    fid = json.loads(fields["function_id"].text) if "function_id" in fields else None
    writes = expect == "quiet" and name == "invokefunction" and isinstance(fid, str) and fid in STATE_WRITES
    payload = text.encode()
    if len(payload) > MAX_FRAME:
        return Frame(
            [RawWS.encode_frame(OP_TEXT, payload)], "close", {1009}, label="json over max_frame_bytes"
        )
    how = draw(st.sampled_from(["text", "text", "binary", "fragments"]))
    if how == "fragments" and len(payload) > 1:
        cuts = sorted(draw(st.sets(st.integers(1, len(payload) - 1), min_size=1, max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        wire = [
            RawWS.encode_frame(OP_TEXT if i == 0 else OP_CONT, p, fin=i == len(pieces) - 1)
            for i, p in enumerate(pieces)
        ]
    else:
        wire = [RawWS.encode_frame(OP_BINARY if how == "binary" else OP_TEXT, payload)]
    return Frame(wire, expect, limit=limit, writes=writes, label=f"{name} ({how})", preview=text[:300])


@st.composite
def wire_frames(draw: st.DrawFn) -> Frame:
    """Frames that break the WebSocket or UTF-8 rules, random bytes, and a few valid odd ones."""
    kind = draw(
        st.sampled_from(
            [
                "bad_utf8",
                "random_text",
                "random_binary",
                "empty",
                "telemetry",
                "oversize",
                "oversize_fragments",
                "stray_continuation",
                "interleaved",
                "rsv",
                "opcode",
                "unmasked",
                "big_ping",
                "fragmented_ping",
                "bad_close_code",
                "close",
            ]
        )
    )
    enc = RawWS.encode_frame
    if kind == "bad_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]))
        payload = (
            b'{"type":"invokefunction","invocation_id":"u1","function_id":"state::set","data":{"scope":"s","key":"'
            + bad
            + b'","value":1}}'
        )
        return Frame([enc(OP_TEXT, payload)], "close", {1007}, label=kind)
    if kind in ("random_text", "random_binary"):
        payload = draw(st.binary(max_size=200))
        op = OP_TEXT if kind == "random_text" else OP_BINARY
        if op == OP_BINARY and payload[:4] in (b"OTLP", b"MTRC", b"LOGS"):
            return Frame([enc(op, payload)], "quiet", label=kind)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return Frame([enc(op, payload)], "close", {1007}, label=kind)
        if not text.strip():
            return Frame([enc(op, payload)], "quiet", label=kind)
        try:
            v = json.loads(text)
        except ValueError:
            return Frame([enc(op, payload)], "error", label=kind)
        return Frame([enc(op, payload)], "error" if not isinstance(v, dict) else "quiet", label=kind)
    if kind == "empty":
        return Frame([enc(OP_TEXT, draw(st.sampled_from([b"", b"  ", b"\n\t"])))], "quiet", label=kind)
    if kind == "telemetry":
        body = draw(
            st.sampled_from(
                [b"{}", b'{"resourceLogs":5}', b'{"resourceLogs":[1,{"x":[]}]}', b"\xff\xfe", b"[" * 5000]
            )
        )
        return Frame(
            [enc(OP_BINARY, draw(st.sampled_from([b"LOGS", b"OTLP", b"MTRC"])) + body)], "quiet", label=kind
        )
    if kind == "oversize":
        n = MAX_FRAME + draw(st.integers(1, 4096))
        return Frame([enc(OP_TEXT, b" " * n)], "close", {1009}, label=kind)
    if kind == "oversize_fragments":
        half = MAX_FRAME // 2 + 1
        wire = [
            enc(OP_TEXT, b" " * half, fin=False),
            enc(OP_CONT, b" " * half, fin=False),
            enc(OP_CONT, b"}"),
        ]
        return Frame(wire, "close", {1009}, label=kind)
    if kind == "stray_continuation":
        return Frame([enc(OP_CONT, b'{"type":"ping"}')], "close", {1002}, label=kind)
    if kind == "interleaved":
        wire = [enc(OP_TEXT, b'{"type":', fin=False), enc(OP_TEXT, b'{"type":"ping"}')]
        return Frame(wire, "close", {1002}, label=kind)
    if kind == "rsv":
        rsv = draw(st.integers(1, 7))
        return Frame([enc(OP_TEXT, b'{"type":"ping"}', rsv=rsv)], "close", {1002}, label=kind)
    if kind == "opcode":
        op = draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]))
        return Frame([enc(op, b"x")], "close", {1002}, label=kind)
    if kind == "unmasked":
        return Frame([enc(OP_TEXT, b'{"type":"ping"}', mask=False)], "close", {1002}, label=kind)
    if kind == "big_ping":
        return Frame([enc(OP_PING, b"p" * draw(st.integers(126, 1000)))], "close", {1002}, label=kind)
    if kind == "fragmented_ping":
        return Frame([enc(OP_PING, b"p", fin=False)], "close", {1002}, label=kind)
    if kind == "bad_close_code":
        code = draw(st.sampled_from([0, 999, 1004, 1005, 1015, 2000, 2999]))
        # picows reads an explicit 0 as "no code"; answering that with 1000 is fine too.
        codes = {1002, 1000} if code == 0 else {1002}
        return Frame(
            [enc(OP_CLOSE, struct.pack("!H", code) + b"bye")], "close", codes, label=f"{kind} {code}"
        )
    return Frame([enc(OP_CLOSE, struct.pack("!H", 1000))], "close", {1000}, label=kind)


frames = st.one_of(json_frames(), json_frames(), wire_frames())


# --- running a batch ------------------------------------------------------------------------


def _is_error_answer(msg: dict[str, Any]) -> bool:
    if msg.get("type") == "error":
        return True
    return msg.get("type") == "invocationresult" and isinstance(msg.get("error"), dict)


async def run_batch(url: str, batch: list[Frame], stats: dict[str, int]) -> None:
    ws = await raw_worker(url)
    try:
        for frame in batch:
            if ws.closed is not None:
                ws = await raw_worker(url)  # a fresh connection is always greeted
            for chunk in frame.wire:
                ws.writer.write(chunk)
            await ws.writer.drain()
            stats["frames"] += len(frame.wire)
            if frame.expect == "close":
                while not isinstance(got := await ws.recv(10), Closed):
                    pass
                assert got.code in frame.close_codes, f"{frame.label}: closed with {got}"
                assert got.code == 1000 or got.reason, f"{frame.label}: close {got.code} without a reason"
                stats[f"close {got.code}"] = stats.get(f"close {got.code}", 0) + 1
                continue
            # A marker call: everything the engine says about the frame comes before its answer.
            stats["markers"] = marker = stats.get("markers", 0) + 1
            await ws.send_json(
                {"type": "invokefunction", "invocation_id": f"mark-{marker}", "function_id": "engine::stats"}
            )
            answers: list[dict[str, Any]] = []
            while True:
                got = await ws.recv(10)
                assert not isinstance(got, Closed), (
                    f"{frame.label}: connection closed ({got}), expected {frame.expect}"
                )
                msg = json.loads(got)
                if msg.get("invocation_id") == f"mark-{marker}":
                    break
                answers.append(msg)
            errors = [m for m in answers if _is_error_answer(m)]
            if frame.expect == "error":
                assert errors, f"{frame.label}: a bad frame got no error answer: {answers}"
                stats["answered with an error"] += 1
                if frame.limit:
                    body = errors[0].get("error", {})
                    assert body.get("code") == "LIMIT_EXCEEDED", body
                    assert "max_nesting_depth" in body.get("message", ""), body
                    stats["nesting limit"] += 1
            else:
                stats["accepted or ignored"] += 1
    finally:
        await ws.close()


async def snapshot(url: str) -> list[str]:
    """Every scope and its values, as the exact text frames the engine sends."""
    ws = await raw_worker(url)
    try:
        await ws.send_json(
            {"type": "invokefunction", "invocation_id": "g", "function_id": "state::list_groups", "data": {}}
        )
        groups_frame = await ws.recv()
        assert isinstance(groups_frame, str)
        frames = [groups_frame]
        for i, scope in enumerate(json.loads(groups_frame)["result"]["groups"]):
            await ws.send_json(
                {
                    "type": "invokefunction",
                    "invocation_id": f"s{i}",
                    "function_id": "state::list",
                    "data": {"scope": scope},
                }
            )
            got = await ws.recv()
            assert isinstance(got, str)
            frames.append(got)
        return frames
    finally:
        await ws.close()


async def fresh_connection_served(url: str) -> None:
    ws = await raw_worker(url)  # greeted with workerregistered
    try:
        reply = await ws.call("state::get", {"scope": "bystander", "key": "k0"})
        assert "error" not in reply, reply
    finally:
        await ws.close()


# --- the test -------------------------------------------------------------------------------


def test_hostile_frames_leave_engine_bystanders_and_state_intact(make_engine_proc: Any) -> None:
    eng = make_engine_proc(CONFIG).start()
    assert eng.proc is not None
    bystander = register_worker(eng.url, name="bystander")
    observer = register_worker(eng.url, name="observer")
    try:
        bystander.register_function("bystander::echo", lambda d: {"echo": d}, inline=True)
        bystander_id = bystander.worker_id
        for i in range(5):
            observer.trigger_sync(
                "state::set", {"scope": "bystander", "key": f"k{i}", "value": {"i": i, "s": "x[{"}}
            )
        assert observer.trigger_sync("bystander::echo", {"n": 0})["echo"]["n"] == 0
        rss_before = rss_kib(eng.proc.pid)
        stats = {
            "frames": 0,
            "examples": 0,
            "answered with an error": 0,
            "accepted or ignored": 0,
            "nesting limit": 0,
        }
        baseline = asyncio.run(snapshot(eng.url))

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.large_base_example,
            ],
        )
        @given(st.lists(frames, min_size=1, max_size=4))
        def batch_is_handled(batch: list[Frame]) -> None:
            nonlocal baseline
            asyncio.run(run_batch(eng.url, batch, stats))
            stats["examples"] += 1
            assert eng.proc is not None and eng.proc.poll() is None, "the engine died:\n" + eng.output[-3000:]
            asyncio.run(fresh_connection_served(eng.url))
            n = stats["examples"]
            assert observer.trigger_sync("bystander::echo", {"n": n}, timeout_ms=5000)["echo"]["n"] == n
            assert bystander.connected and bystander.worker_id == bystander_id, (
                "the bystander was disconnected"
            )
            after = asyncio.run(snapshot(eng.url))
            if any(f.writes for f in batch):
                stats["batches with a valid state write"] = (
                    stats.get("batches with a valid state write", 0) + 1
                )
                baseline = after
            else:
                assert after == baseline, f"state changed without a valid write: {[f.label for f in batch]}"

        batch_is_handled()

        # Nothing leaked: only the bystander and the observer are connected, no call is pending.
        table = observer.trigger_sync("engine::stats", {})
        assert table["pending"] == 0 and table["connections"] == 2, table
        rss_after = rss_kib(eng.proc.pid)
        print(
            f"\nhostile input: {stats['examples']} batches, {stats['frames']} frames; "
            + ", ".join(
                f"{k}: {v}" for k, v in sorted(stats.items()) if k not in ("frames", "examples", "markers")
            )
            + f"; engine RSS {rss_before // 1024} MiB -> {rss_after // 1024} MiB"
        )
        assert rss_after < rss_before + 256 * 1024, (rss_before, rss_after)
    finally:
        observer.shutdown_sync()
        bystander.shutdown_sync()


# --- the nesting check itself -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(json_any, st.integers(0, 8))
def test_nesting_check_matches_real_depth(value: Any, limit: int) -> None:
    text = json.dumps(value).encode()
    assert nesting_exceeds(text, limit) == (_depth(value) > limit)


@pytest.mark.parametrize("depth", [100_000, 1_000, MAX_DEPTH + 2])
async def test_deep_payload_gets_limit_error_fast_and_connection_stays(engine: str, depth: int) -> None:
    """100k nested arrays: no crash, no hang, a clear error naming the setting."""
    ws = await raw_worker(engine)
    deep = "[" * depth + "]" * depth
    loop = asyncio.get_running_loop()
    start = loop.time()
    await ws.send_text(
        '{"type":"invokefunction","invocation_id":"d1","function_id":"state::set",'
        f'"data":{{"scope":"s","key":"k","value":{deep}}}}}'
    )
    reply = await ws.recv_json()
    took = loop.time() - start
    assert reply["invocation_id"] == "d1" and reply["error"]["code"] == "LIMIT_EXCEEDED", reply
    assert "max_nesting_depth" in reply["error"]["message"]
    assert took < 1.0, took
    reply = await ws.call("state::get", {"scope": "s", "key": "k"})
    assert "result" not in reply and "error" not in reply, reply  # nothing was stored
    await ws.close()


async def test_unusable_result_fails_the_call_at_once(engine: str) -> None:
    """A worker answering with a broken result does not leave its caller waiting for a timeout."""
    server = await raw_worker(engine)
    await server.send_json({"type": "registerfunction", "id": "broken::fn"})
    caller = await raw_worker(engine)
    await caller.call("state::list_groups", {})  # (a round trip: the registration is in)
    for bad_result in ('"result":' + "[" * 100_000 + "]" * 100_000, '"result":1,"traceparent":5'):
        await caller.send_json(
            {"type": "invokefunction", "invocation_id": "c1", "function_id": "broken::fn", "data": {}}
        )
        call = await server.recv_json()
        assert call["type"] == "invokefunction" and call["invocation_id"] == "c1", call
        await server.send_text(
            '{"type":"invocationresult","invocation_id":"c1","function_id":"broken::fn",' + bad_result + "}"
        )
        told = await server.recv_json()  # the worker is told what was wrong with its frame
        assert told["type"] == "error", told
        reply = await caller.recv_json(timeout=2)
        assert reply["invocation_id"] == "c1" and reply["error"]["code"] in (
            "LIMIT_EXCEEDED",
            "deserialization_error",
        )
        assert "unusable result" in reply["error"]["message"], reply
    stats = await caller.call("engine::stats", {})
    assert stats["result"]["pending"] == 0, stats
    await caller.close()
    await server.close()
