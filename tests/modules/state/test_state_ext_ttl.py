"""Expiry (``ttl_ms``) through the engine, on every adapter.

An expired key reads as absent everywhere and fires one ``state:deleted``
with ``"expired": true``. ``set`` without ``ttl_ms`` clears an expiry,
``update`` without it keeps the key's expiry. file_based keeps expiries
across restarts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from pyiii.modules.state.triggers import StateTriggers


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def meta(client: Any, scope: str, key: str) -> dict[str, Any]:
    result: dict[str, Any] = await client.ok("state::get", {"scope": scope, "key": key, "with_meta": True})
    return result


async def test_key_expires_and_fires_once(client: Any) -> None:
    sink = await client.sink("changes")
    await client.register_trigger("state", "changes", {"scope": "t"})
    before = now_ms()
    out = await client.ok("state::set", {"scope": "t", "key": "k", "value": {"a": 1}, "ttl_ms": 600})
    assert out == {"old_value": None, "new_value": {"a": 1}}  # ttl_ms adds nothing to the result
    await client.ok("state::set", {"scope": "t", "key": "stay", "value": 1})
    m = await meta(client, "t", "k")
    assert m["exists"] and before + 600 <= m["expires_at_ms"] <= now_ms() + 600
    assert "expires_at_ms" not in await meta(client, "t", "stay")
    assert await client.ok("state::count", {"scope": "t"}) == {"count": 2}

    events = await sink.wait_for(3, timeout=5)
    assert events[2] == {
        "type": "state",
        "event_type": "state:deleted",
        "scope": "t",
        "key": "k",
        "old_value": {"a": 1},
        "new_value": None,
        "expired": True,
    }
    assert now_ms() >= m["expires_at_ms"]
    assert await client.ok("state::get", {"scope": "t", "key": "k"}) is client.MISSING
    assert await meta(client, "t", "k") == {"exists": False, "value": None, "version": None}
    assert await client.ok("state::list", {"scope": "t"}) == [1]
    assert await client.ok("state::count", {"scope": "t"}) == {"count": 1}
    await asyncio.sleep(0.3)
    assert len(sink.events) == 3  # exactly once


async def test_expired_keys_are_absent_everywhere(client: Any) -> None:
    await client.ok("state::set", {"scope": "gone", "key": "a", "value": 1, "ttl_ms": 150})
    await client.ok("state::set", {"scope": "mixed", "key": "a", "value": 1, "ttl_ms": 150})
    await client.ok("state::set", {"scope": "mixed", "key": "b", "value": 2})
    v = (await meta(client, "mixed", "a"))["version"]
    await asyncio.sleep(0.25)
    assert (await client.ok("state::list_groups", {}))["groups"] == ["mixed"]
    assert await client.ok("state::list", {"scope": "mixed", "with_keys": True}) == {
        "items": [{"key": "b", "value": 2}],
        "cursor": None,
    }
    assert await client.ok("state::get_many", {"scope": "mixed", "keys": ["a", "b"]}) == {"values": [None, 2]}
    status, body = await client.call(
        "state::set", {"scope": "mixed", "key": "a", "value": 3, "expect_version": v}
    )
    assert (status, body["code"], body["current_version"]) == ("error", "VERSION_MISMATCH", None)
    status, body = await client.call(
        "state::update", {"scope": "mixed", "key": "a", "ops": [], "expect_exists": True}
    )
    assert status == "error"
    # Writing an expired key creates it anew.
    out = await client.ok("state::set", {"scope": "mixed", "key": "a", "value": 4, "expect_exists": False})
    assert out == {"old_value": None, "new_value": 4}


async def test_set_clears_and_update_keeps_the_expiry(client: Any) -> None:
    await client.ok("state::set", {"scope": "t", "key": "k", "value": {"n": 0}, "ttl_ms": 60_000})
    expiry = (await meta(client, "t", "k"))["expires_at_ms"]
    up = await client.ok(
        "state::update",
        {"scope": "t", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 1}], "with_meta": True},
    )
    assert up["expires_at_ms"] == expiry  # update without ttl_ms keeps it
    assert (await meta(client, "t", "k"))["expires_at_ms"] == expiry
    up = await client.ok("state::update", {"scope": "t", "key": "k", "ops": [], "ttl_ms": 120_000})
    longer = (await meta(client, "t", "k"))["expires_at_ms"]
    assert longer > expiry
    await client.ok("state::set", {"scope": "t", "key": "k", "value": 1})  # set without ttl_ms clears it
    assert "expires_at_ms" not in await meta(client, "t", "k")

    # An update with ttl_ms on an absent key creates it with that expiry.
    await client.ok("state::update", {"scope": "t", "key": "u", "ops": [], "ttl_ms": 400})
    await client.ok("state::update", {"scope": "t", "key": "u", "ops": []})  # keeps the 400 ms
    await asyncio.sleep(0.55)
    assert await client.ok("state::get", {"scope": "t", "key": "u"}) is client.MISSING


async def test_overwritten_key_does_not_expire(client: Any) -> None:
    sink = await client.sink("changes")
    await client.register_trigger("state", "changes", {"scope": "t"})
    await client.ok("state::set", {"scope": "t", "key": "k", "value": 1, "ttl_ms": 400})
    await client.ok("state::set", {"scope": "t", "key": "k", "value": 2})
    await asyncio.sleep(0.55)
    assert await client.ok("state::get", {"scope": "t", "key": "k"}) == 2
    assert [e["event_type"] for e in sink.events] == ["state:created", "state:updated"]


async def test_expiry_survives_restart(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest, running_state_engine_cm: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if adapter != "file_based":
        pytest.skip("only file_based keeps state across an engine restart")
    workdir = tmp_path / "engine"
    async with running_state_engine_cm(adapter, workdir, request) as eng:
        c = await eng.client()
        await c.ok("state::set", {"scope": "t", "key": "short", "value": "s", "ttl_ms": 700})
        short_expiry = (await meta(c, "t", "short"))["expires_at_ms"]
        await c.ok("state::set", {"scope": "t", "key": "medium", "value": "m", "ttl_ms": 1700})
        await c.ok("state::set", {"scope": "t", "key": "plain", "value": "p"})
    assert now_ms() < short_expiry, "the first engine took too long to stop for this test"
    await asyncio.sleep((short_expiry - now_ms()) / 1000 + 0.05)  # "short" expires while the engine is down

    published: list[tuple[bytes, str, str, bytes | None, bytes | None]] = []
    real_publish = StateTriggers.publish

    def record(self: StateTriggers, event_type: bytes, scope: str, key: str, old: Any, new: Any) -> None:
        published.append((event_type, scope, key, old, new))
        real_publish(self, event_type, scope, key, old, new)

    monkeypatch.setattr(StateTriggers, "publish", record)
    async with running_state_engine_cm(adapter, workdir, request) as eng:
        c = await eng.client()
        sink = await c.sink("changes")
        await c.register_trigger("state", "changes", {"scope": "t"})
        assert await c.ok("state::get", {"scope": "t", "key": "short"}) is c.MISSING
        assert await c.ok("state::list", {"scope": "t"}) == ["m", "p"]
        # Expired while down: removed, and its event fired once the module
        # started (after the removal was committed).
        async with asyncio.timeout(5):
            while not published:
                await asyncio.sleep(0.01)
        assert [(p[0], p[2], p[3]) for p in published] == [(b"state:expired", "short", b'"s"')]
        # "medium" expires while we watch. (The trigger may or may not have
        # been registered early enough to see "short" too.)
        async with asyncio.timeout(5):
            while not sink.of_key("medium"):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert sink.of_key("medium") == [
            {
                "type": "state",
                "event_type": "state:deleted",
                "scope": "t",
                "key": "medium",
                "old_value": "m",
                "new_value": None,
                "expired": True,
            }
        ]
        assert len(sink.of_key("short")) <= 1 and len(sink.events) <= 2
        assert [p[2] for p in published] == ["short", "medium"]
    published.clear()
    async with running_state_engine_cm(adapter, workdir, request) as eng:
        c = await eng.client()
        assert await c.ok("state::list", {"scope": "t"}) == ["p"]
        assert published == []  # the removals were durable: nothing expires twice
