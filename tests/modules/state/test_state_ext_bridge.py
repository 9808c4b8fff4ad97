"""The State extensions through the bridge: engine B forwards to engine A.

A keeps State in memory; B runs ``adapter: bridge``. Preconditions,
transactions and listings are evaluated on A; a VERSION_MISMATCH keeps its
``current_version``; B's own triggers fire for the writes it forwarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyiii.errors import IIIError
from pyiii.modules.state.config import StateConfig
from pyiii.sdk import TxOp, VersionMismatch, Worker, connect
from support.engines import running_engine  # tests/support, on sys.path via tests/conftest.py


@pytest.fixture
async def bridged() -> AsyncIterator[tuple[Worker, Worker]]:
    """(worker on A, worker on B), B bridging its State to A."""
    async with running_engine(StateConfig()) as url_a:  # noqa: SIM117 - B needs A's URL
        async with running_engine(StateConfig(adapter="bridge", bridge_url=url_a)) as url_b:
            a = await connect(url_a, name="on-a")
            b = await connect(url_b, name="on-b")
            try:
                yield a, b
            finally:
                await a.shutdown()
                await b.shutdown()


async def test_extensions_through_the_bridge(bridged: tuple[Worker, Worker]) -> None:
    a, b = bridged
    events: list[Any] = []
    b.register_function("b::changes", lambda data: events.append(data))
    b.register_trigger({"type": "state", "function_id": "b::changes", "config": {"scope": "s"}})
    await b.trigger("state::list_groups", {})

    first = await b.state.set("s", "k", 1, ttl_ms=60_000)
    assert first.version is not None and first.expires_at_ms is not None
    assert await a.state.get_meta("s", "k") == await b.state.get_meta("s", "k")
    with pytest.raises(VersionMismatch) as err:
        await b.state.set("s", "k", 2, expect_version=first.version + 1)
    assert err.value.current_version == first.version
    with pytest.raises(IIIError) as plain:
        await b.trigger("state::delete", {"scope": "s", "key": "k", "expect_exists": False})
    assert plain.value.code == "VERSION_MISMATCH"
    assert plain.value.details == {"current_version": first.version}

    results = await b.state.transaction(
        [TxOp.update("s", "k", [{"type": "set", "path": "", "value": 5}], expect_version=first.version),
         TxOp.set("s", "new", "n")]
    )  # fmt: skip
    assert [(r.old_value, r.new_value) for r in results] == [(1, 5), (None, "n")]
    with pytest.raises(VersionMismatch) as err:
        await b.state.transaction([TxOp.set("s", "x", 1), TxOp.delete("s", "zz", expect_exists=True)])
    assert err.value.index == 1

    await b.state.set_many("s", {f"m{i}": i for i in range(5)})
    assert await b.state.count("s", "m") == 5
    page = await b.state.list("s", prefix="m", limit=2)
    assert [i.key for i in page.items] == ["m0", "m1"]
    rest = await b.state.list("s", prefix="m", limit=10, cursor=page.cursor)
    assert [i.key for i in rest.items] == ["m2", "m3", "m4"] and rest.cursor is None
    assert await b.state.get_many("s", ["m1", "nope"]) == [1, None]
    assert await b.trigger("state::list", {"scope": "s"}) == [5, "n", 0, 1, 2, 3, 4]

    async with asyncio.timeout(5):
        while len(events) < 8:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    kinds = [(e["key"], e["event_type"]) for e in events]
    assert kinds[:3] == [("k", "state:created"), ("k", "state:updated"), ("new", "state:created")]
    assert sorted(kinds[3:]) == [(f"m{i}", "state:created") for i in range(5)]
    assert len(events) == 8  # the failed transaction fired nothing


async def test_operator_functions_through_the_bridge(bridged: tuple[Worker, Worker]) -> None:
    a, b = bridged
    await a.trigger("state::set", {"scope": "op", "key": "k1", "value": 1, "ttl_ms": 60_000})
    await a.trigger("state::set", {"scope": "op", "key": "k2", "value": 2})
    assert await b.trigger("state::scopes", {}) == await a.trigger("state::scopes", {})
    assert (await b.trigger("state::scopes", {}))["scopes"] == [{"scope": "op", "keys": 2}]
    page = await b.trigger("state::keys", {"scope": "op", "with_values": True, "limit": 1})
    assert page == await a.trigger("state::keys", {"scope": "op", "with_values": True, "limit": 1})
    assert page["items"][0]["key"] == "k1" and "expires_at_ms" in page["items"][0]
    rest = await b.trigger("state::keys", {"scope": "op", "cursor": page["cursor"]})
    assert [i["key"] for i in rest["items"]] == ["k2"] and rest["cursor"] is None
    items = [
        {"scope": "op", "key": "k2", "value": "theirs", "version": 9},
        {"scope": "op", "key": "k3", "value": "new", "version": 99},
    ]
    out = await b.trigger("state::import", {"items": items})
    assert out["imported"] == 1 and [s["reason"] for s in out["skipped"]] == ["exists"]
    assert await a.state.get_meta("op", "k3") == await b.state.get_meta("op", "k3")
    assert (await a.trigger("state::get", {"scope": "op", "key": "k3", "with_meta": True}))["version"] == 99
    with pytest.raises(IIIError) as err:
        await b.trigger("state::import", {"items": [{"scope": "op", "key": "x"}]})
    assert err.value.code == "deserialization_error"
