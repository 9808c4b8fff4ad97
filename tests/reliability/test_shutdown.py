"""SIGTERM: stop accepting, answer or fail every in-flight call, close with 1012, flush, exit 0.

The engine closes worker sockets with 1012 (service restart), not 1001: the
official Python SDK 0.11.6 treats 1000/1001 as a deliberate goodbye and
never reconnects (see Engine.stop_all).
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from typing import Any

from relkit import Closed, raw_worker

from pyiii import connect

FILE_BASED = """
workers:
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state}}
"""


async def test_sigterm_fails_inflight_calls_closes_1012_flushes_and_exits_0(make_engine_proc: Any) -> None:
    eng = make_engine_proc(FILE_BASED).start()
    slow_worker = await connect(eng.url, reconnect=False)
    started = asyncio.Event()

    async def slow(_: Any) -> Any:
        started.set()
        await asyncio.sleep(60)
        return {"slept": True}

    slow_worker.register_function("slow::sleep", slow)
    caller = await raw_worker(eng.url)
    # Acknowledged before the signal.
    for i in range(50):
        reply = await caller.call("state::set", {"scope": "before", "key": f"k{i}", "value": {"i": i}})
        assert "error" not in reply, reply
    # A call parked on a slow worker, then a burst of writes still in flight when SIGTERM lands.
    await caller.send_json(
        {"type": "invokefunction", "invocation_id": "slow-1", "function_id": "slow::sleep", "data": {}}
    )
    await asyncio.wait_for(started.wait(), 5)
    burst = [str(uuid.uuid4()) for _ in range(300)]
    for n, inv in enumerate(burst):
        await caller.send_json(
            {
                "type": "invokefunction",
                "invocation_id": inv,
                "function_id": "state::set",
                "data": {"scope": "burst", "key": f"k{n}", "value": n},
            }
        )
    assert eng.proc is not None
    eng.proc.send_signal(signal.SIGTERM)

    answers: dict[str, dict[str, Any]] = {}
    while True:
        got = await caller.recv(timeout=10)
        if isinstance(got, Closed):
            break
        assert isinstance(got, str)
        msg = json.loads(got)
        answers[msg["invocation_id"]] = msg
    # The slow call was failed with a clear code, not left hanging.
    assert answers["slow-1"]["error"]["code"] == "SHUTTING_DOWN", answers["slow-1"]
    # Close code 1012 (service restart: come back later) with a reason.
    assert got.code == 1012 and got.reason, got
    assert eng.proc.wait(15) == 0, eng.output
    acked = [n for n, inv in enumerate(burst) if inv in answers and "error" not in answers[inv]]
    refused = [inv for inv in burst if inv in answers and "error" in answers[inv]]
    assert all(answers[inv]["error"]["code"] == "SHUTTING_DOWN" for inv in refused)
    await slow_worker.shutdown()

    # Every acknowledged write is on disk.
    eng.start()
    reader = await raw_worker(eng.url)
    for i in range(50):
        reply = await reader.call("state::get", {"scope": "before", "key": f"k{i}"})
        assert reply.get("result") == {"i": i}, reply
    for n in acked:
        reply = await reader.call("state::get", {"scope": "burst", "key": f"k{n}"})
        assert reply.get("result") == n, reply
    await reader.close()
    print(
        f"\nSIGTERM with 301 calls in flight: {len(acked)} writes acknowledged (all on disk after restart), "
        f"{len(refused)} refused with SHUTTING_DOWN, {300 - len(acked) - len(refused)} unanswered "
        "(sent after the socket closed)"
    )
