"""Configured limits: hitting one gives a clear error naming the setting, never a crash or unbounded RAM."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from relkit import OP_CONT, OP_TEXT, Closed, RawWS, raw_worker, rss_kib

from pyiii import connect
from pyiii.errors import IIIError


def limits_config(**limits: int) -> str:
    body = ", ".join(f"{k}: {v}" for k, v in limits.items())
    return f"""
workers:
  - name: iii-worker-manager
    config:
      limits: {{{body}}}
  - name: iii-state
    config:
      adapter: {{name: kv, config: {{store_method: in_memory}}}}
"""


async def test_max_connections_refuses_with_reason_and_recovers(make_engine_proc: Any) -> None:
    eng = make_engine_proc(limits_config(max_connections=3)).start()
    held = [await raw_worker(eng.url) for _ in range(3)]
    extra = await RawWS.connect(eng.url)
    refusal = await extra.recv_json()
    assert refusal["type"] == "error" and refusal["error"]["code"] == "LIMIT_EXCEEDED", refusal
    assert "limits.max_connections" in refusal["error"]["message"]
    closed = await extra.recv()
    assert isinstance(closed, Closed) and closed.code == 1013 and "max_connections" in closed.reason, closed
    # The connections already held are unaffected...
    for ws in held:
        assert "error" not in await ws.call("state::get", {"scope": "s", "key": "k"})
    # ...and a slot freed is a slot available.
    await held.pop().close()
    await asyncio.sleep(0.2)
    again = await raw_worker(eng.url)
    assert "error" not in await again.call("state::list_groups", {})
    await again.close()
    for ws in held:
        await ws.close()


async def test_max_pending_per_worker_refuses_extra_calls_until_results_return(make_engine_proc: Any) -> None:
    eng = make_engine_proc(limits_config(max_pending_per_worker=5)).start()
    server = await connect(eng.url)
    release = asyncio.Event()

    async def slow(_: Any) -> Any:
        await release.wait()
        return "done"

    server.register_function("slow::wait", slow)
    caller = await connect(eng.url)
    await caller.trigger("state::list_groups", {})  # the registration above has been processed
    calls = [asyncio.ensure_future(caller.trigger("slow::wait", {})) for _ in range(5)]
    await asyncio.sleep(0.3)
    try:
        await caller.trigger("slow::wait", {})
        raise AssertionError("a sixth pending call was accepted")
    except IIIError as err:
        assert err.code == "LIMIT_EXCEEDED", err
        assert "limit is 5" in err.message, err.message
    # Built-ins are not counted: the worker is not blocked from everything.
    assert await caller.trigger("state::get", {"scope": "s", "key": "k"}) is None
    release.set()
    assert await asyncio.gather(*calls) == ["done"] * 5
    assert await caller.trigger("slow::wait", {}) == "done"
    stats = await caller.trigger("engine::stats", {})
    assert stats["pending"] == 0 and stats["calling"] == 0 and stats["serving"] == 0, stats
    await caller.shutdown()
    await server.shutdown()


async def test_frames_over_max_frame_bytes_close_1009_with_reason(make_engine_proc: Any) -> None:
    eng = make_engine_proc(limits_config(max_frame_bytes=65536)).start()
    # One frame: picows refuses it by its header, before reading the payload.
    ws = await raw_worker(eng.url)
    await ws.send_text(b" " * 65537)
    closed = await ws.recv()
    assert isinstance(closed, Closed) and closed.code == 1009 and "65537 > 65536" in closed.reason, closed
    assert eng.wait_for_output("limits.max_frame_bytes = 65536")  # the console names the setting
    # Fragments that add up to more than the limit.
    ws = await raw_worker(eng.url)
    ws.writer.write(RawWS.encode_frame(OP_TEXT, b" " * 40000, fin=False))
    ws.writer.write(RawWS.encode_frame(OP_CONT, b" " * 40000))
    closed = await ws.recv()
    assert isinstance(closed, Closed) and closed.code == 1009 and "max_frame_bytes" in closed.reason, closed
    # At the limit is fine.
    ws = await raw_worker(eng.url)
    frame = json.dumps(
        {
            "type": "invokefunction",
            "invocation_id": "a",
            "function_id": "state::set",
            "data": {"scope": "s", "key": "k"},
        }
    )
    value = '"' + "x" * (65536 - len(frame) - len(',"value":""')) + '"'
    payload = frame[:-2] + ',"value":' + value + "}}"
    assert len(payload) == 65536
    await ws.send_text(payload)
    reply = await ws.recv_json()
    assert reply.get("invocation_id") == "a" and "error" not in reply, reply
    await ws.close()


async def test_worker_that_does_not_read_is_throttled_then_dropped(make_engine_proc: Any) -> None:
    """Unread replies never pile up without bound in the engine.

    A worker flooding calls without reading the results is throttled (the
    engine stops reading it); a worker that receives trigger calls without
    reading them is dropped once they pile up over max_send_buffer_bytes.
    """
    eng = make_engine_proc(
        limits_config(max_frame_bytes=262144, max_send_buffer_bytes=8 * 1024 * 1024)
    ).start()
    assert eng.proc is not None
    watcher = await connect(eng.url)
    rss_start = rss_kib(eng.proc.pid)

    # 1. A flood of calls whose results are never read.
    flooder = await raw_worker(eng.url, rcvbuf=65536, read_limit=16384)
    value = "v" * 2000
    await flooder.call("state::set", {"scope": "flood", "key": "big", "value": value})
    request = RawWS.encode_frame(
        OP_TEXT,
        json.dumps(
            {
                "type": "invokefunction",
                "invocation_id": "x",
                "function_id": "state::get",
                "data": {"scope": "flood", "key": "big"},
            }
        ).encode(),
    )
    sent = 0
    throttled = False
    while sent < 400_000:
        flooder.writer.write(request * 1000)
        sent += 1000
        try:
            await asyncio.wait_for(flooder.writer.drain(), 2)
        except TimeoutError:
            throttled = True  # the engine stopped reading us: TCP pushes back
            break
    assert throttled, f"{sent} unread calls (~{sent * 2 // 1024} MiB of replies) and the engine kept reading"
    # Others are still served, and the engine did not buffer the replies.
    assert await watcher.trigger("state::get", {"scope": "flood", "key": "big"}) == value
    flood_growth = rss_kib(eng.proc.pid) - rss_start
    assert flood_growth < 64 * 1024, f"engine grew {flood_growth} KiB while a worker did not read"
    flooder.writer.transport.abort()

    # 2. A worker bound to a trigger that never reads what the engine sends it.
    deaf = await raw_worker(eng.url, rcvbuf=65536, read_limit=16384)
    await deaf.send_json({"type": "registerfunction", "id": "deaf::on_state"})
    await deaf.send_json(
        {
            "type": "registertrigger",
            "id": "t1",
            "trigger_type": "state",
            "function_id": "deaf::on_state",
            "config": {"scope": "deaf"},
        }
    )
    await deaf.call("state::list_groups", {})
    big = "y" * 100_000
    for i in range(400):  # ~40 MiB of events for the deaf worker
        await watcher.trigger("state::set", {"scope": "deaf", "key": f"k{i}", "value": big})
    # Dropped with a reason in the console; its registrations are gone; the engine is fine.
    assert eng.wait_for_output("limits.max_send_buffer_bytes", timeout=10), eng.output[-2000:]
    functions = await watcher.trigger("engine::functions::list", {})
    assert "deaf::on_state" not in {f["function_id"] for f in functions["functions"]}
    stats = await watcher.trigger("engine::stats", {})
    assert stats["connections"] == 1 and stats["pending"] == 0, stats
    grown = rss_kib(eng.proc.pid) - rss_start
    print(
        f"\nengine RSS: +{flood_growth // 1024} MiB after {sent} unread calls (throttled), "
        f"+{grown // 1024} MiB after the deaf worker was dropped (40 MiB of it is the stored values)"
    )
    assert grown < 150 * 1024, grown
    with contextlib.suppress(Exception):
        deaf.writer.transport.abort()
    await watcher.shutdown()


async def test_one_reply_larger_than_the_send_buffer_limit_is_delivered(make_engine_proc: Any) -> None:
    """The limit is on frames piling up behind unread ones, not on the size of one answer."""
    eng = make_engine_proc(limits_config(max_frame_bytes=262144, max_send_buffer_bytes=1048576)).start()
    writer = await connect(eng.url)
    for i in range(40):  # a 4 MB scope: its state::list is one 4 MB frame
        await writer.trigger("state::set", {"scope": "big", "key": f"k{i}", "value": "z" * 100_000})
    reader = await raw_worker(eng.url, rcvbuf=65536)  # the reply has to wait in the engine's buffer
    for _ in range(3):
        reply = await reader.call("state::list", {"scope": "big"})
        assert len(reply["result"]) == 40, str(reply)[:200]
    await reader.close()
    await writer.shutdown()
