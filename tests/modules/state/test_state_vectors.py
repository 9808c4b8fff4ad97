"""Every update-op vector (tests/data/update-ops-vectors.json) through the engine.

For each vector: store the initial value with ``state::set`` (absent key when
``initial`` is null without ``initial_exists``; a stored JSON null with it),
call ``state::update`` with the raw ``ops``, and check what a worker sees:
``new_value`` and ``old_value`` (type-exact: 3 is not 3.0), the per-op
``errors`` (op_index, code, plus a message and doc_url), the state trigger's
event type (``state:created`` iff the key was absent) and a following
``state::get``. Whole-call failures must store nothing and fire nothing.
Spec: docs/state.md §3.4, §4, §5, §10.

One engine per adapter for the whole module; each vector uses its own key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from support.data import UPDATE_OPS_VECTORS  # tests/support, on sys.path via tests/conftest.py
from support.jsonvalues import same_json  # tests/support, on sys.path via tests/conftest.py

# json.loads keeps 3 and 3.0 apart and big integers exact.
VECTORS: list[dict[str, Any]] = json.loads(UPDATE_OPS_VECTORS.read_text(encoding="utf-8"))
DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"
SCOPE = "vectors"


def show(value: object) -> str:
    return json.dumps(value)[:300]


class Harness:
    def __init__(self, client: Any, sink: Any) -> None:
        self.client = client
        self.sink = sink


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(
    adapter: str,
    tmp_path_factory: pytest.TempPathFactory,
    running_state_engine_cm: Any,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Harness]:
    workdir = tmp_path_factory.mktemp(f"vectors-{adapter}")
    async with running_state_engine_cm(adapter, workdir, request) as eng:
        client = await eng.client()
        sink = await client.sink("vectors::events")
        await client.register_trigger("state", "vectors::events", {"scope": SCOPE})
        yield Harness(client, sink)


def test_vector_file_is_there() -> None:
    assert len(VECTORS) == 92
    assert len({v["name"] for v in VECTORS}) == len(VECTORS)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[v["name"] for v in VECTORS])
async def test_vector(harness: Harness, index: int) -> None:
    vector = VECTORS[index]
    client, sink = harness.client, harness.sink
    key = f"v{index}"
    initial = vector["initial"]
    exists = initial is not None or bool(vector.get("initial_exists"))
    expect = vector["expect"]

    if exists:
        assert same_json(
            await client.ok("state::set", {"scope": SCOPE, "key": key, "value": initial}),
            {"old_value": None, "new_value": initial},
        )
    before = 1 if exists else 0
    await wait_events(sink, key, before)

    frame = await client.call_raw(
        "state::update",
        json.dumps({"scope": SCOPE, "key": key, "ops": vector["ops"]}),
    )

    if "error_code" in expect:
        assert "error" in frame, f"expected {expect['error_code']}, got {show(frame)}"
        assert frame["error"]["code"] == expect["error_code"], frame
        assert frame["error"]["message"].startswith("Failed to deserialize input for state::update:")
        stored = await client.call_frame("state::get", {"scope": SCOPE, "key": key})
        if exists:
            assert "result" in stored and same_json(stored["result"], initial), show(stored)
        else:
            assert "result" not in stored, f"a rejected update stored something: {show(stored)}"
        # No event: a marker write to the same key is the next event after the initial set.
        await client.ok("state::set", {"scope": SCOPE, "key": key, "value": "marker"})
        events = await wait_events(sink, key, before + 1)
        assert events[-1]["new_value"] == "marker", f"the rejected update fired {show(events[-1])}"
        return

    assert "error" not in frame, f"update failed: {show(frame)}"
    result = frame["result"]
    assert same_json(result["new_value"], expect["new_value"]), (
        f"new_value {show(result['new_value'])} != expected {show(expect['new_value'])}"
    )
    assert "old_value" in result and same_json(result["old_value"], initial), show(result)
    if expect.get("errors"):
        got = [(e.get("op_index"), e.get("code")) for e in result.get("errors", [])]
        assert got == [(e["op_index"], e["code"]) for e in expect["errors"]], show(result)
        for err in result["errors"]:
            assert isinstance(err.get("message"), str) and err["message"], err
            assert err.get("doc_url") == DOC_URL, err
    else:
        assert "errors" not in result, f"errors must be omitted when empty: {show(result)}"
    assert set(result) <= {"old_value", "new_value", "errors"}, show(result)

    stored = await client.call_frame("state::get", {"scope": SCOPE, "key": key})
    assert "result" in stored, f"get after update has no result: {show(stored)}"
    assert same_json(stored["result"], expect["new_value"]), show(stored)

    events = await wait_events(sink, key, before + 1)
    last = events[-1]
    expected_event = {
        "type": "state",
        "event_type": "state:updated" if exists else "state:created",
        "scope": SCOPE,
        "key": key,
        "old_value": initial,
        "new_value": expect["new_value"],
    }
    assert same_json(last, expected_event), f"event {show(last)} != {show(expected_event)}"


async def wait_events(sink: Any, key: str, count: int, timeout: float = 5.0) -> list[Any]:
    """The events of ``key`` once there are ``count`` of them (and no more)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(sink.of_key(key)) < count and loop.time() < deadline:
        await asyncio.sleep(0.002)
    events = sink.of_key(key)
    assert len(events) == count, f"{key}: expected {count} events, got {[show(e) for e in events]}"
    return events
