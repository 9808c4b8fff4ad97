"""``state::scopes``, ``state::keys`` and ``state::import`` on every adapter.

Listing pages through scopes and keys with their metadata; an import keeps
versions and expiries, writes only absent keys and says why it skipped the
others; later writes still get larger versions than every imported one.
"""

from __future__ import annotations

import json
import time
from typing import Any


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def all_keys(client: Any, scope: str, **extra: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.ok("state::keys", {"scope": scope, "cursor": cursor, **extra})
        out += page["items"]
        cursor = page["cursor"]
        if cursor is None:
            return out


async def test_scopes_with_counts_paged(client: Any) -> None:
    for scope, n in (("a", 3), ("b", 1), ("c", 2), ("d", 1)):
        await client.ok(
            "state::set_many", {"scope": scope, "items": [{"key": f"k{i}", "value": i} for i in range(n)]}
        )
    first = await client.ok("state::scopes", {"limit": 3})
    assert first["scopes"] == [
        {"scope": "a", "keys": 3},
        {"scope": "b", "keys": 1},
        {"scope": "c", "keys": 2},
    ]
    second = await client.ok("state::scopes", {"limit": 3, "cursor": first["cursor"]})
    assert second == {"scopes": [{"scope": "d", "keys": 1}], "cursor": None}
    assert (await client.ok("state::scopes", {"prefix": "c"}))["scopes"] == [{"scope": "c", "keys": 2}]
    assert await client.ok("state::scopes", {"prefix": "zz"}) == {"scopes": [], "cursor": None}


async def test_keys_paged_with_prefix_versions_and_expiry(client: Any) -> None:
    for i in range(25):
        await client.ok("state::set", {"scope": "s", "key": f"user:{i:02d}", "value": {"n": i}})
    await client.ok("state::set", {"scope": "s", "key": "other", "value": 1, "ttl_ms": 60_000})
    users = await all_keys(client, "s", prefix="user:", limit=10)
    assert [u["key"] for u in users] == [f"user:{i:02d}" for i in range(25)]
    assert all("value" not in u and u["version"] >= 1 for u in users)
    meta = await client.ok("state::get", {"scope": "s", "key": "user:07", "with_meta": True})
    assert users[7]["version"] == meta["version"]
    other = await client.ok("state::keys", {"scope": "s", "prefix": "o", "with_values": True})
    assert other["cursor"] is None and len(other["items"]) == 1
    item = other["items"][0]
    assert item["value"] == 1 and item["expires_at_ms"] > now_ms()
    assert await client.ok("state::keys", {"scope": "nope"}) == {"items": [], "cursor": None}


async def test_bad_listing_inputs_are_rejected(client: Any) -> None:
    for fid, data in (
        ("state::keys", {}),
        ("state::keys", {"scope": "s", "limit": 0}),
        ("state::keys", {"scope": "s", "cursor": "garbage"}),
        ("state::scopes", {"limit": 100_000}),
    ):
        status, body = await client.call(fid, data)
        assert status == "error" and body["code"] == "deserialization_error", (fid, data, body)


async def test_import_keeps_versions_and_expiries_into_absent_keys_only(client: Any) -> None:
    await client.ok("state::set", {"scope": "imp", "key": "present", "value": "mine"})
    present = await client.ok("state::get", {"scope": "imp", "key": "present", "with_meta": True})
    expiry = now_ms() + 60_000
    items = [
        {"scope": "imp", "key": "a", "value": {"x": 1}, "version": 500},
        {"scope": "imp", "key": "b", "value": [1, 2], "version": 7, "expires_at_ms": expiry},
        {"scope": "imp", "key": "present", "value": "theirs", "version": 3},
        {"scope": "imp", "key": "old", "value": 1, "version": 9, "expires_at_ms": now_ms() - 1000},
        {"scope": "other", "key": "c", "value": None, "version": 42},
        {"scope": "imp", "key": "a", "value": "again", "version": 501},
        {"scope": "imp", "key": "big", "value": "BIG", "version": 5},
        {"scope": "imp", "key": "fresh", "value": "no version"},
    ]
    # 1e400 is valid JSON that no double holds: refused like on state::set.
    text = json.dumps({"items": items}).replace('"BIG"', "1e400")
    status, out = client.outcome(await client.call_raw("state::import", text))
    assert status == "ok", out
    assert out["imported"] == 4
    skipped = {(s["index"], s["reason"]) for s in out["skipped"]}
    assert skipped == {(2, "exists"), (3, "expired"), (5, "exists"), (6, "invalid")}
    by_index = {s["index"]: s for s in out["skipped"]}
    assert by_index[2]["current_version"] == present["version"]
    assert by_index[5]["current_version"] == 500
    assert by_index[6]["code"] == "deserialization_error"

    def get(scope: str, key: str) -> Any:
        return client.ok("state::get", {"scope": scope, "key": key, "with_meta": True})

    assert await get("imp", "a") == {"exists": True, "value": {"x": 1}, "version": 500}
    assert await get("imp", "b") == {"exists": True, "value": [1, 2], "version": 7, "expires_at_ms": expiry}
    assert await get("other", "c") == {"exists": True, "value": None, "version": 42}
    assert (await get("imp", "present"))["value"] == "mine"
    assert not (await get("imp", "old"))["exists"]
    assert (await get("imp", "fresh"))["value"] == "no version"
    # Later writes never reuse an imported version (no ABA for compare-and-set).
    after = await client.ok("state::set", {"scope": "imp", "key": "new", "value": 1, "with_meta": True})
    assert after["version"] > 7
    moved = await client.ok("state::set", {"scope": "imp", "key": "a", "value": 2, "with_meta": True})
    assert moved["version"] > 500


async def test_import_fires_created_events(client: Any) -> None:
    sink = await client.sink("imported")
    await client.register_trigger("state", "imported", {"scope": "ev"})
    out = await client.ok("state::import", {"items": [{"scope": "ev", "key": "k", "value": 1, "version": 3}]})
    assert out == {"imported": 1, "skipped": []}
    events = await sink.wait_for(1, timeout=5)
    assert events[0]["event_type"] == "state:created" and events[0]["new_value"] == 1


async def test_import_rejects_malformed_items_whole(client: Any) -> None:
    for items in (
        [{"scope": "x", "key": "k"}],
        [{"scope": "x", "key": "k", "value": 1, "version": 0}],
        [{"scope": "x", "key": "k", "value": 1, "version": "7"}],
    ):
        status, body = await client.call("state::import", {"items": items})
        assert status == "error" and body["code"] == "deserialization_error", body
        assert "items[0]" in body["message"], body
    assert await client.ok("state::scopes", {}) == {"scopes": [], "cursor": None}
