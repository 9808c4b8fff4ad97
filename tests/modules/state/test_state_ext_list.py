"""Listing by key (``prefix``/``limit``/``cursor``/``with_keys``) and ``state::count``.

Without the new fields ``state::list`` is exactly what it was (values in
first-insertion order). With any of them it pages through the keys in
code-point order; the cursor is the last key returned, so a scope that
changes between pages still yields every key that existed throughout
exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

TOTAL_KEYS = 100_000
PAGE = 1000


async def test_plain_list_is_unchanged(client: Any) -> None:
    for k in ["c", "a", "b"]:
        await client.ok("state::set", {"scope": "s", "key": k, "value": k.upper()})
    assert await client.ok("state::list", {"scope": "s"}) == ["C", "A", "B"]
    # null fields count as not given
    assert await client.ok("state::list", {"scope": "s", "prefix": None, "limit": None}) == ["C", "A", "B"]


async def test_pages_in_key_order(client: Any) -> None:
    keys = ["b", "a", "user:2", "user:10", "user:1", "", "é", "日本", "users", "user"]
    for i, k in enumerate(keys):
        await client.ok("state::set", {"scope": "s", "key": k, "value": i})
    everything = await client.ok("state::list", {"scope": "s", "with_keys": True})
    assert everything["cursor"] is None
    assert [item["key"] for item in everything["items"]] == sorted(keys)
    assert all(item["value"] == keys.index(item["key"]) for item in everything["items"])

    values = await client.ok("state::list", {"scope": "s", "prefix": "user:"})
    assert values == {"items": [keys.index(k) for k in ["user:1", "user:10", "user:2"]], "cursor": None}
    page1 = await client.ok("state::list", {"scope": "s", "prefix": "user", "limit": 2, "with_keys": True})
    assert [i["key"] for i in page1["items"]] == ["user", "user:1"]
    assert isinstance(page1["cursor"], str)
    page2 = await client.ok(
        "state::list",
        {"scope": "s", "prefix": "user", "limit": 2, "with_keys": True, "cursor": page1["cursor"]},
    )
    assert [i["key"] for i in page2["items"]] == ["user:10", "user:2"]
    page3 = await client.ok(
        "state::list",
        {"scope": "s", "prefix": "user", "limit": 2, "with_keys": True, "cursor": page2["cursor"]},
    )
    assert page3 == {"items": [{"key": "users", "value": keys.index("users")}], "cursor": None}
    # A page that ends exactly at the last key says so.
    exact = await client.ok("state::list", {"scope": "s", "prefix": "user:", "limit": 3})
    assert exact["cursor"] is None
    assert await client.ok("state::list", {"scope": "empty", "limit": 5}) == {"items": [], "cursor": None}
    assert await client.ok("state::list", {"scope": "s", "with_keys": False, "prefix": "zz"}) == {
        "items": [],
        "cursor": None,
    }


async def test_count(client: Any) -> None:
    assert await client.ok("state::count", {"scope": "s"}) == {"count": 0}
    for k in ["a", "ab", "abc", "b", ""]:
        await client.ok("state::set", {"scope": "s", "key": k, "value": 0})
    assert await client.ok("state::count", {"scope": "s"}) == {"count": 5}
    assert await client.ok("state::count", {"scope": "s", "prefix": "ab"}) == {"count": 2}
    assert await client.ok("state::count", {"scope": "s", "prefix": ""}) == {"count": 5}
    await client.ok("state::delete", {"scope": "s", "key": "abc"})
    assert await client.ok("state::count", {"scope": "s", "prefix": "ab"}) == {"count": 1}


async def test_bad_list_input(client: Any) -> None:
    await client.ok("state::set", {"scope": "s", "key": "k", "value": 0})
    for payload in (
        {"scope": "s", "limit": 0},
        {"scope": "s", "limit": -1},
        {"scope": "s", "limit": "5"},
        {"scope": "s", "cursor": "not a cursor"},
        {"scope": "s", "cursor": "k!!"},
        {"scope": "s", "cursor": 5},
        {"scope": "s", "prefix": 1},
        {"scope": "s", "with_keys": "yes"},
    ):
        status, body = await client.call("state::list", payload)
        assert (status, body["code"]) == ("error", "deserialization_error"), payload
    status, body = await client.call("state::count", {"scope": 1})
    assert (status, body["code"]) == ("error", "deserialization_error")


async def test_paging_while_another_worker_writes(state_engine: Any) -> None:
    """Page through 100k keys while a second client creates, deletes and
    overwrites keys: every key that existed throughout comes back exactly
    once, and keys come back in strictly increasing order."""
    loader, reader, writer = [await state_engine.client() for _ in range(3)]
    keys = [f"key:{i:06d}" for i in range(0, 2 * TOTAL_KEYS, 2)]  # odd numbers are free for new keys
    chunk = 5000
    await asyncio.gather(
        *(
            loader.ok(
                "state::set_many",
                {
                    "scope": "big",
                    "items": [{"key": k, "value": i + j} for j, k in enumerate(keys[i : i + chunk])],
                },
            )
            for i in range(0, len(keys), chunk)
        )
    )
    assert await reader.ok("state::count", {"scope": "big"}) == {"count": TOTAL_KEYS}

    rng = random.Random(7)
    volatile = set(rng.sample(keys, 2000))  # the writer may delete these
    stable = set(keys) - volatile
    done = asyncio.Event()
    wrote = asyncio.Event()
    writes = 0

    async def write() -> None:
        nonlocal writes
        volatile_list = sorted(volatile)
        while not done.is_set():
            batch: list[dict[str, Any]] = []
            for _ in range(20):
                r = rng.random()
                if r < 0.4:
                    batch.append({"op": "delete", "scope": "big", "key": rng.choice(volatile_list)})
                elif r < 0.7:
                    new = f"key:{rng.randrange(1, 2 * TOTAL_KEYS, 2):06d}"
                    batch.append({"op": "set", "scope": "big", "key": new, "value": "new"})
                else:
                    batch.append(
                        {"op": "set", "scope": "big", "key": rng.choice(keys), "value": "overwritten"}
                    )
            await writer.ok("state::transaction", {"ops": batch})
            writes += 1
            wrote.set()

    async def read() -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            payload: dict[str, Any] = {"scope": "big", "prefix": "key:", "limit": PAGE, "with_keys": True}
            if cursor is not None:
                payload["cursor"] = cursor
            page = await reader.ok("state::list", payload)
            seen += [item["key"] for item in page["items"]]
            cursor = page["cursor"]
            if cursor is None:
                return seen
            # The writer commits at least one batch between any two pages.
            wrote.clear()
            await wrote.wait()

    writing = asyncio.create_task(write())
    try:
        seen = await read()
    finally:
        done.set()
        await writing
    assert writes >= TOTAL_KEYS // PAGE - 1
    assert all(a < b for a, b in itertools.pairwise(seen)), "keys out of order or repeated"
    missing = stable - set(seen)
    assert not missing, f"{len(missing)} keys that existed throughout were not returned"
