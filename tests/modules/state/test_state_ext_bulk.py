"""``state::get_many`` and ``state::set_many``, on every adapter."""

from __future__ import annotations

import asyncio
from typing import Any


async def test_get_many(client: Any) -> None:
    await client.ok("state::set", {"scope": "s", "key": "a", "value": {"x": 1}})
    await client.ok("state::set", {"scope": "s", "key": "n", "value": None})
    out = await client.ok("state::get_many", {"scope": "s", "keys": ["a", "missing", "n", "a"]})
    assert out == {"values": [{"x": 1}, None, None, {"x": 1}]}
    meta = await client.ok(
        "state::get_many", {"scope": "s", "keys": ["a", "missing", "n"], "with_meta": True}
    )
    a, missing, n = meta["values"]
    assert a["exists"] and a["value"] == {"x": 1} and isinstance(a["version"], int)
    assert missing == {"exists": False, "value": None, "version": None}
    assert n["exists"] and n["value"] is None  # a stored null is not a missing key
    assert await client.ok("state::get_many", {"scope": "s", "keys": []}) == {"values": []}
    assert await client.ok("state::get_many", {"scope": "nope", "keys": ["a"]}) == {"values": [None]}
    for payload in ({"scope": "s"}, {"scope": "s", "keys": "a"}, {"scope": "s", "keys": [1]}):
        status, body = await client.call("state::get_many", payload)
        assert (status, body["code"]) == ("error", "deserialization_error")


async def test_set_many(state_engine: Any) -> None:
    client = await state_engine.client()
    sink = await client.sink("changes")
    await client.register_trigger("state", "changes", {"scope": "s"})
    await client.ok("state::set", {"scope": "s", "key": "b", "value": "old"})
    await sink.wait_for(1)
    adapter = state_engine.module.adapter
    commits = getattr(adapter, "commits", None)
    out = await client.ok(
        "state::set_many",
        {
            "scope": "s",
            "items": [
                {"key": "a", "value": 1},
                {"key": "b", "value": {"new": True}},
                {"key": "c", "value": None, "ttl_ms": 60_000},
            ],
        },
    )
    assert out == {
        "results": [
            {"old_value": None, "new_value": 1},
            {"old_value": "old", "new_value": {"new": True}},
            {"old_value": None, "new_value": None},
        ]
    }
    if commits is not None:  # file_based: one durable commit for the whole call
        assert adapter.commits == commits + 1
    events = await sink.wait_for(4)
    await asyncio.sleep(0.05)
    assert sorted((e["key"], e["event_type"]) for e in events[1:]) == [
        ("a", "state:created"),
        ("b", "state:updated"),
        ("c", "state:created"),
    ]
    assert len(sink.events) == 4
    c = await client.ok("state::get", {"scope": "s", "key": "c", "with_meta": True})
    assert c["exists"] and c["expires_at_ms"] > 0

    with_meta = await client.ok(
        "state::set_many",
        {"scope": "s", "items": [{"key": "a", "value": 2}], "with_meta": True, "ttl_ms": 60_000},
    )
    (result,) = with_meta["results"]
    assert result["old_value"] == 1 and result["version"] > 0 and result["expires_at_ms"] > 0
    assert await client.ok("state::set_many", {"scope": "s", "items": []}) == {"results": []}


async def test_set_many_checks_every_value_first(make_state_engine: Any) -> None:
    eng = await make_state_engine(max_value_bytes=10)
    client = await eng.client()
    status, body = await client.call(
        "state::set_many",
        {"scope": "s", "items": [{"key": "a", "value": 1}, {"key": "b", "value": "x" * 50}]},
    )
    assert (status, body["code"]) == ("error", "VALUE_TOO_LARGE") and "items[1]" in body["message"]
    assert await client.ok("state::get", {"scope": "s", "key": "a"}) is client.MISSING
    for items in ([{"key": "a"}], [{"value": 1}], [{"key": "a", "value": 1, "ttl_ms": 0}], {"a": 1}):
        status, body = await client.call("state::set_many", {"scope": "s", "items": items})
        assert (status, body["code"]) == ("error", "deserialization_error"), items
