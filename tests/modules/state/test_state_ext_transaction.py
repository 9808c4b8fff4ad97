"""``state::transaction``: several writes, all or nothing, on every adapter.

Items apply in order (a later item sees the earlier ones); a failed
precondition anywhere leaves every key as it was and fires nothing; triggers
fire after the commit, once per changed key. file_based commits a
transaction in one SQLite transaction, so a ``kill -9`` leaves it entirely
applied or not at all.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

INC = [{"type": "increment", "path": "n", "by": 1}]

KV_CONFIG = """\
workers:
  - name: iii-state
    config:
      adapter: { name: kv, config: { store_method: file_based, file_path: ./data/state_store.db } }
"""


async def meta(client: Any, scope: str, key: str) -> dict[str, Any]:
    result: dict[str, Any] = await client.ok("state::get", {"scope": scope, "key": key, "with_meta": True})
    return result


async def test_transaction_applies_in_order(client: Any) -> None:
    await client.ok("state::set", {"scope": "a", "key": "gone", "value": "bye"})
    out = await client.ok(
        "state::transaction",
        {
            "ops": [
                {"op": "set", "scope": "a", "key": "x", "value": {"n": 1}},
                {"op": "update", "scope": "a", "key": "x", "ops": INC},
                {"op": "update", "scope": "b", "key": "y", "ops": [{"type": "set", "path": "z", "value": 0}]},
                {
                    "op": "update",
                    "scope": "b",
                    "key": "y",
                    "ops": [{"type": "append", "path": "z", "value": 1}],
                },
                {"op": "delete", "scope": "a", "key": "gone"},
                {"op": "delete", "scope": "a", "key": "never"},
                {"op": "set", "scope": "c", "key": "t", "data": 5, "ttl_ms": 60_000},
            ]
        },
    )
    r = out["results"]
    assert [(x["old_value"], x["new_value"]) for x in r] == [
        (None, {"n": 1}),
        ({"n": 1}, {"n": 2}),
        (None, {"z": 0}),
        ({"z": 0}, {"z": 0}),
        ("bye", None),
        (None, None),
        (None, 5),
    ]
    assert r[3]["errors"][0]["code"] == "append.type_mismatch"
    assert r[0]["version"] < r[1]["version"]
    assert "version" not in r[4] and "version" not in r[5]
    assert r[6]["expires_at_ms"] > 0
    assert await client.ok("state::get", {"scope": "a", "key": "x"}) == {"n": 2}
    assert (await meta(client, "a", "x"))["version"] == r[1]["version"]
    assert await client.ok("state::get", {"scope": "a", "key": "gone"}) is client.MISSING
    assert (await client.ok("state::list_groups", {}))["groups"] == ["a", "b", "c"]
    assert await client.ok("state::transaction", {"ops": []}) == {"results": []}


async def test_failing_last_precondition_changes_nothing(client: Any) -> None:
    sink = await client.sink("changes")
    await client.register_trigger("state", "changes", {})
    await client.ok("state::set", {"scope": "s", "key": "a", "value": 1})
    await client.ok("state::set", {"scope": "s", "key": "b", "value": 2})
    await sink.wait_for(2)
    before = {k: await meta(client, "s", k) for k in ("a", "b", "c")}
    groups = await client.ok("state::list_groups", {})
    status, body = await client.call(
        "state::transaction",
        {
            "ops": [
                {"op": "set", "scope": "s", "key": "a", "value": 10},
                {"op": "update", "scope": "s", "key": "c", "ops": INC},
                {"op": "delete", "scope": "s", "key": "b"},
                {"op": "set", "scope": "other", "key": "x", "value": 1},
                {
                    "op": "set",
                    "scope": "s",
                    "key": "b",
                    "value": 3,
                    "expect_version": before["b"]["version"] + 99,
                },
            ]
        },
    )
    assert status == "error" and body["code"] == "VERSION_MISMATCH"
    assert body["index"] == 4
    assert body["current_version"] is None  # item 2 deleted b within the transaction
    assert body["message"].startswith("ops[4]:")
    assert {k: await meta(client, "s", k) for k in ("a", "b", "c")} == before
    assert await client.ok("state::list_groups", {}) == groups
    await client.ok("state::set", {"scope": "marker", "key": "m", "value": 0})
    await sink.wait_for(3)
    await asyncio.sleep(0.05)
    assert [e["scope"] for e in sink.events] == ["s", "s", "marker"]  # the transaction fired nothing

    # Preconditions see the key as the earlier items left it.
    v = before["a"]["version"]
    status, body = await client.call(
        "state::transaction",
        {
            "ops": [
                {"op": "set", "scope": "s", "key": "a", "value": 5, "expect_version": v},
                {"op": "set", "scope": "s", "key": "a", "value": 6, "expect_version": v},
            ]
        },
    )
    assert (status, body["index"], body["current_version"]) == ("error", 1, body["current_version"])
    assert body["current_version"] > v
    assert await client.ok("state::get", {"scope": "s", "key": "a"}) == 1
    status, body = await client.call(
        "state::transaction",
        {"ops": [{"op": "delete", "scope": "s", "key": "zz", "expect_exists": True}]},
    )
    assert (status, body["code"], body["index"], body["current_version"]) == (
        "error",
        "VERSION_MISMATCH",
        0,
        None,
    )


async def test_triggers_fire_after_commit_once_per_key(client: Any) -> None:
    sink = await client.sink("changes")
    await client.register_trigger("state", "changes", {})
    await client.ok("state::set", {"scope": "s", "key": "old", "value": "o"})
    await sink.wait_for(1)
    await client.ok(
        "state::transaction",
        {
            "ops": [
                {"op": "set", "scope": "s", "key": "k", "value": 1},
                {"op": "update", "scope": "s", "key": "k", "ops": [{"type": "set", "path": "", "value": 2}]},
                {"op": "set", "scope": "s", "key": "old", "value": "p"},
                {"op": "delete", "scope": "s", "key": "old"},
                {"op": "set", "scope": "t", "key": "tmp", "value": 0},
                {"op": "delete", "scope": "t", "key": "tmp"},  # created and deleted: no change
                {"op": "set", "scope": "t", "key": "u", "value": "u"},
            ]
        },
    )
    events = await sink.wait_for(4)
    await asyncio.sleep(0.1)
    got = sorted((e["scope"], e["key"], e["event_type"], e["old_value"], e["new_value"]) for e in events[1:])
    assert got == [
        ("s", "k", "state:created", None, 2),
        ("s", "old", "state:deleted", "o", None),
        ("t", "u", "state:created", None, "u"),
    ]


async def test_transaction_input_errors(make_state_engine: Any) -> None:
    eng = await make_state_engine(max_value_bytes=16)
    client = await eng.client()
    bad_items: list[dict[str, Any]] = [
        {"op": "merge", "scope": "s", "key": "k"},
        {"op": "set", "scope": "s", "key": "k"},
        {"op": "set", "scope": "s", "key": "k", "value": 1, "data": 1},
        {"op": "update", "scope": "s", "key": "k"},
        {"op": "update", "scope": "s", "key": "k", "ops": [{"type": "multiply"}]},
        {"op": "delete", "scope": "s", "key": "k", "ttl_ms": 5},
        {"op": "set", "key": "k", "value": 1},
        {"op": "set", "scope": "s", "key": "k", "value": 1, "ttl_ms": 0},
    ]
    for bad in bad_items:
        status, body = await client.call(
            "state::transaction", {"ops": [{"op": "set", "scope": "s", "key": "first", "value": 1}, bad]}
        )
        assert status == "error" and body["code"] == "deserialization_error", (bad, body)
    for payload in ({}, {"ops": None}, {"ops": {}}):
        status, body = await client.call("state::transaction", payload)
        assert (status, body["code"]) == ("error", "deserialization_error")
    status, body = await client.call(
        "state::transaction",
        {
            "ops": [
                {"op": "set", "scope": "s", "key": "first", "value": 1},
                {"op": "set", "scope": "s", "key": "big", "value": "x" * 100},
            ]
        },
    )
    assert (status, body["code"]) == ("error", "VALUE_TOO_LARGE") and "ops[1]" in body["message"]
    assert await client.ok("state::get", {"scope": "s", "key": "first"}) is client.MISSING


async def test_kill_9_mid_transaction_is_all_or_nothing(make_engine_proc: Any, connect_client: Any) -> None:
    """Groups of 40 keys written together; after kill -9 every group is whole."""
    eng = make_engine_proc(KV_CONFIG).start()
    groups, keys_per_group = 8, 40
    client = await connect_client(eng.url)
    acked: dict[int, int] = {}
    sent: dict[int, int] = {}
    total_acked = 0
    killed = asyncio.Event()
    in_flight_at_kill = 0

    async def writer(g: int) -> None:
        nonlocal total_acked, in_flight_at_kill
        n = 0
        while not killed.is_set():
            n += 1
            value = {"g": g, "n": n, "pad": "x" * 200}
            ops: list[dict[str, Any]] = [
                {"op": "set", "scope": f"g{g}", "key": f"k{i:02d}", "value": value}
                for i in range(keys_per_group)
            ]
            ops.append({"op": "update", "scope": "counters", "key": f"g{g}", "ops": INC})
            sent[g] = n
            try:
                status, body = await client.call("state::transaction", {"ops": ops}, timeout=20)
            except Exception:  # the engine was killed under this call
                return
            assert status == "ok", body
            acked[g] = n
            total_acked += 1
            if total_acked == 150 and not killed.is_set():
                in_flight_at_kill = await client.in_flight_soon()
                assert eng.proc is not None
                eng.proc.send_signal(signal.SIGKILL)
                killed.set()

    await asyncio.gather(*(writer(g) for g in range(groups)))
    await client.close()
    assert eng.proc is not None and eng.proc.wait(15) == -signal.SIGKILL
    assert in_flight_at_kill > 0, "the kill should land while transactions are in flight"

    eng.start()
    c = await connect_client(eng.url)
    try:
        for g in range(groups):
            values = await c.ok("state::list", {"scope": f"g{g}"})
            counter = await c.ok("state::get", {"scope": "counters", "key": f"g{g}"})
            ns = {v["n"] for v in values}
            assert len(values) == keys_per_group and len(ns) == 1, f"group {g} is torn: {sorted(ns)}"
            (n,) = ns
            assert counter == {"n": n}, (g, n, counter)
            assert acked.get(g, 0) <= n <= sent[g], (g, n, acked.get(g), sent[g])
    finally:
        await c.close()
