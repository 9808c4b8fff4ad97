"""Versions and compare-and-set through the engine (raw protocol), on every adapter.

``with_meta`` exposes a key's version; ``expect_version`` / ``expect_exists``
make set, update and delete conditional. A failed precondition is
``VERSION_MISMATCH`` with ``current_version``, changes nothing and fires
nothing. Without the new fields every result is exactly what it was before.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

INC = [{"type": "increment", "path": "n", "by": 1}]


async def meta(client: Any, scope: str, key: str) -> dict[str, Any]:
    result: dict[str, Any] = await client.ok("state::get", {"scope": scope, "key": key, "with_meta": True})
    return result


async def test_default_results_are_unchanged(client: Any) -> None:
    """The official SDKs' calls get byte-for-byte the results they always got."""
    frame = await client.call_raw("state::set", '{"scope":"s","key":"k","value":{"a":1}}')
    assert json.dumps(frame["result"]) == '{"old_value": null, "new_value": {"a": 1}}'
    frame = await client.call_raw("state::update", '{"scope":"s","key":"k","ops":[]}')
    assert frame["result"] == {"old_value": {"a": 1}, "new_value": {"a": 1}}
    frame = await client.call_raw("state::get", '{"scope":"s","key":"k"}')
    assert frame["result"] == {"a": 1}
    frame = await client.call_raw("state::get", '{"scope":"s","key":"missing"}')
    assert "result" not in frame
    frame = await client.call_raw("state::list", '{"scope":"s"}')
    assert frame["result"] == [{"a": 1}]
    frame = await client.call_raw("state::delete", '{"scope":"s","key":"k"}')
    assert frame["result"] == {"a": 1}
    frame = await client.call_raw("state::delete", '{"scope":"s","key":"k"}')
    assert "result" not in frame and "error" not in frame


async def test_with_meta_reports_versions(client: Any) -> None:
    assert await meta(client, "s", "k") == {"exists": False, "value": None, "version": None}
    first = await client.ok("state::set", {"scope": "s", "key": "k", "value": None, "with_meta": True})
    assert first["old_value"] is None and first["new_value"] is None
    v1 = first["version"]
    assert isinstance(v1, int) and v1 > 0
    assert await meta(client, "s", "k") == {"exists": True, "value": None, "version": v1}  # null != absent
    root = [{"type": "set", "path": "", "value": {"n": 1}}]
    second = await client.ok("state::update", {"scope": "s", "key": "k", "ops": root, "with_meta": True})
    assert second["version"] > v1
    assert second["new_value"] == {"n": 1}
    assert (await meta(client, "s", "k"))["version"] == second["version"]
    # The version of a key only grows, across delete and re-create too (no ABA).
    await client.ok("state::delete", {"scope": "s", "key": "k"})
    third = await client.ok("state::set", {"scope": "s", "key": "k", "value": 1, "with_meta": True})
    assert third["version"] > second["version"]
    # The update result keeps its per-op errors next to the version.
    bad = await client.ok(
        "state::update",
        {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "x", "value": 1}], "with_meta": True},
    )
    assert bad["errors"][0]["code"] == "set.target_not_object" and bad["version"] > third["version"]


async def test_expect_version(client: Any) -> None:
    sink = await client.sink("changes")
    await client.register_trigger("state", "changes", {"scope": "s"})
    v = (await client.ok("state::set", {"scope": "s", "key": "k", "value": 1, "with_meta": True}))["version"]

    status, body = await client.call(
        "state::set", {"scope": "s", "key": "k", "value": 2, "expect_version": v + 100}
    )
    assert status == "error" and body["code"] == "VERSION_MISMATCH"
    assert body["current_version"] == v
    assert str(v + 100) in body["message"] and str(v) in body["message"]
    status, body = await client.call(
        "state::update", {"scope": "s", "key": "k", "ops": INC, "expect_version": 0}
    )
    assert (status, body["code"], body["current_version"]) == ("error", "VERSION_MISMATCH", v)
    status, body = await client.call("state::delete", {"scope": "s", "key": "k", "expect_version": v - 1})
    assert (status, body["code"], body["current_version"]) == ("error", "VERSION_MISMATCH", v)
    status, body = await client.call(
        "state::set", {"scope": "s", "key": "nope", "value": 1, "expect_version": v}
    )
    assert (status, body["code"], body["current_version"]) == ("error", "VERSION_MISMATCH", None)
    assert "does not exist" in body["message"]
    assert await meta(client, "s", "k") == {"exists": True, "value": 1, "version": v}
    assert await client.ok("state::get", {"scope": "s", "key": "nope"}) is client.MISSING

    ok = await client.ok("state::set", {"scope": "s", "key": "k", "value": 2, "expect_version": v})
    assert ok == {"old_value": 1, "new_value": 2}  # no version unless with_meta
    v2 = (await meta(client, "s", "k"))["version"]
    up = await client.ok("state::update", {"scope": "s", "key": "k", "ops": [], "expect_version": v2})
    assert up == {"old_value": 2, "new_value": 2}
    v3 = (await meta(client, "s", "k"))["version"]
    assert await client.ok("state::delete", {"scope": "s", "key": "k", "expect_version": v3}) == 2
    events = await sink.wait_for(4)
    await asyncio.sleep(0.1)
    assert [e["event_type"] for e in sink.events] == [
        "state:created",
        "state:updated",
        "state:updated",
        "state:deleted",
    ]  # failed preconditions fired nothing
    assert events[1]["new_value"] == 2


async def test_expect_exists(client: Any) -> None:
    created = await client.ok("state::set", {"scope": "s", "key": "k", "value": 1, "expect_exists": False})
    assert created == {"old_value": None, "new_value": 1}
    status, body = await client.call(
        "state::set", {"scope": "s", "key": "k", "value": 2, "expect_exists": False}
    )
    assert (
        status == "error" and body["code"] == "VERSION_MISMATCH" and isinstance(body["current_version"], int)
    )
    status, body = await client.call(
        "state::update", {"scope": "s", "key": "x", "ops": INC, "expect_exists": True}
    )
    assert (status, body["code"], body["current_version"]) == ("error", "VERSION_MISMATCH", None)
    assert (
        await client.ok("state::get", {"scope": "s", "key": "x"}) is client.MISSING
    )  # update did not create it
    assert (await client.ok("state::update", {"scope": "s", "key": "k", "ops": [], "expect_exists": True}))[
        "old_value"
    ] == 1
    status, body = await client.call("state::delete", {"scope": "s", "key": "x", "expect_exists": True})
    assert (status, body["code"]) == ("error", "VERSION_MISMATCH")
    assert (
        await client.ok("state::delete", {"scope": "s", "key": "x", "expect_exists": False}) is client.MISSING
    )
    # Both at once: both must hold.
    v = (await meta(client, "s", "k"))["version"]
    status, body = await client.call(
        "state::set", {"scope": "s", "key": "k", "value": 3, "expect_exists": False, "expect_version": v}
    )
    assert status == "error"
    assert (await client.ok("state::get", {"scope": "s", "key": "k"})) == 1


async def test_bad_precondition_fields_are_decoding_errors(client: Any) -> None:
    for extra in (
        {"expect_version": "1"},
        {"expect_version": 1.5},
        {"expect_exists": 1},
        {"with_meta": "yes"},
        {"ttl_ms": 0},
        {"ttl_ms": -5},
        {"ttl_ms": 1.5},
    ):
        status, body = await client.call("state::set", {"scope": "s", "key": "k", "value": 1, **extra})
        assert status == "error" and body["code"] == "deserialization_error", (extra, body)
    # null means "not given"
    assert await client.ok(
        "state::set", {"scope": "s", "key": "k", "value": 1, "expect_version": None, "expect_exists": None}
    ) == {"old_value": None, "new_value": 1}


# -- racing writers ------------------------------------------------------------------


async def cas_increment(client: Any, key: str, pause: Any) -> tuple[int, int]:
    """Read-modify-write with retries; returns (value written, attempts)."""
    attempts = 0
    while True:
        attempts += 1
        current = await meta(client, "race", key)
        await pause()
        payload: dict[str, Any] = {"scope": "race", "key": key, "value": (current["value"] or 0) + 1}
        if current["exists"]:
            payload["expect_version"] = current["version"]
        else:
            payload["expect_exists"] = False
        status, body = await client.call("state::set", payload)
        if status == "ok":
            assert body["old_value"] == current["value"]  # exactly what this writer read
            return payload["value"], attempts
        assert body["code"] == "VERSION_MISMATCH", body


async def test_racing_compare_and_set_writers_lose_nothing(state_engine: Any) -> None:
    """Randomized concurrent runs: every increment lands exactly once."""
    writers = [await state_engine.client() for _ in range(3)]
    per_writer = 15
    for seed in range(6):
        rng = random.Random(seed)
        key = f"counter{seed}"

        async def pause(rng: random.Random = rng) -> None:
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0 if rng.random() < 0.7 else 0.001)

        async def work(client: Any, key: str = key) -> list[tuple[int, int]]:
            return [await cas_increment(client, key, pause) for _ in range(per_writer)]

        results = await asyncio.gather(*(work(c) for c in writers))
        written = sorted(v for r in results for v, _ in r)
        assert written == list(range(1, len(writers) * per_writer + 1)), seed  # no lost, no duplicate
        assert await writers[0].ok("state::get", {"scope": "race", "key": key}) == len(writers) * per_writer


_runs = iter(range(1_000_000))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(schedule=st.lists(st.sampled_from([0, 1]), min_size=4, max_size=24), use_update=st.booleans())
async def test_compare_and_set_interleavings(
    state_engine: Any, schedule: list[int], use_update: bool
) -> None:
    """Hypothesis picks the exact order of every read and write of two writers.

    A model tracks the key's version: a conditional write must succeed iff
    nobody wrote since its writer read, and the final count equals the
    number of successful writes. (One engine serves every example; each
    example uses a key of its own.)
    """
    while len(state_engine.clients) < 2:
        await state_engine.client()
    clients = state_engine.clients[:2]
    key = f"k{next(_runs)}"
    read: list[dict[str, Any] | None] = [None, None]
    model_version: int | None = None
    successes = 0
    for who in schedule:
        client = clients[who]
        seen = read[who]
        if seen is None:
            read[who] = await meta(client, "il", key)
            continue
        expect: dict[str, Any] = (
            {"expect_version": seen["version"]} if seen["exists"] else {"expect_exists": False}
        )
        if use_update:
            payload: dict[str, Any] = {"scope": "il", "key": key, "ops": INC, **expect}
            status, body = await client.call("state::update", payload)
        else:
            value = {"n": (seen["value"] or {"n": 0})["n"] + 1}
            status, body = await client.call(
                "state::set", {"scope": "il", "key": key, "value": value, **expect}
            )
        should_succeed = seen["version"] == model_version
        assert (status == "ok") == should_succeed, (schedule, status, body)
        if status == "ok":
            successes += 1
            model_version = (await meta(client, "il", key))["version"]
        else:
            assert body["code"] == "VERSION_MISMATCH" and body["current_version"] == model_version
        read[who] = None
    final = await clients[0].ok("state::get", {"scope": "il", "key": key})
    assert (final or {"n": 0})["n"] == successes
