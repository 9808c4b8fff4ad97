"""``worker.state``: the SDK's typed State helper, against a real in-process engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pyiii.errors import IIIError
from pyiii.sdk import Item, StateEntry, TxOp, VersionMismatch, Worker, WriteResult, connect


@pytest.fixture
async def worker(engine: str) -> AsyncIterator[Worker]:
    w = await connect(engine, name="state-helper-test")
    yield w
    await w.shutdown()


async def test_single_keys(worker: Worker) -> None:
    state = worker.state
    assert worker.state is state  # one helper per worker
    assert await state.get("users", "u1") is None
    assert await state.get_meta("users", "u1") == StateEntry(False, None, None)
    first = await state.set("users", "u1", {"name": "Ada"})
    assert first.old_value is None and first.new_value == {"name": "Ada"} and first.version
    entry = await state.get_meta("users", "u1")
    assert entry == StateEntry(True, {"name": "Ada"}, first.version, None)
    up = await state.update("users", "u1", [{"type": "increment", "path": "logins", "by": 1}])
    assert up.new_value == {"name": "Ada", "logins": 1}
    assert up.version is not None and up.version > first.version
    bad = await state.update("users", "u1", [{"type": "increment", "path": "name", "by": 1}])
    assert bad.errors[0]["code"] == "increment.not_number"
    assert await state.get("users", "u1") == {"name": "Ada", "logins": 1}
    assert await state.delete("users", "u1") == {"name": "Ada", "logins": 1}
    assert await state.delete("users", "u1") is None


async def test_version_mismatch(worker: Worker) -> None:
    state = worker.state
    v = (await state.set("s", "k", 1)).version
    assert v is not None
    with pytest.raises(VersionMismatch) as err:
        await state.set("s", "k", 2, expect_version=v + 1)
    assert isinstance(err.value, IIIError) and err.value.code == "VERSION_MISMATCH"
    assert err.value.current_version == v and err.value.details == {"current_version": v}
    with pytest.raises(VersionMismatch) as err:
        await state.update("s", "missing", [], expect_exists=True)
    assert err.value.current_version is None
    with pytest.raises(VersionMismatch):
        await state.delete("s", "k", expect_version=v - 1)
    assert await state.get("s", "k") == 1
    # The error body's extra fields reach plain trigger() callers too.
    with pytest.raises(IIIError) as plain:
        await worker.trigger("state::set", {"scope": "s", "key": "k", "value": 3, "expect_exists": False})
    assert plain.value.details == {"current_version": v}


async def test_modify_retries_until_it_wins(engine: str, worker: Worker) -> None:
    other = await connect(engine, name="state-helper-other")
    try:

        async def bump(w: Worker) -> None:
            for _ in range(25):

                async def add_one(value: object) -> int:
                    await asyncio.sleep(0)  # widen the read-write window
                    return (value if isinstance(value, int) else 0) + 1

                await w.state.modify("c", "n", add_one, attempts=1000)

        await asyncio.gather(bump(worker), bump(other), bump(worker))
        assert await worker.state.get("c", "n") == 75
    finally:
        await other.shutdown()


async def test_listing(worker: Worker) -> None:
    state = worker.state
    results = await state.set_many("big", {f"k{i:04d}": i for i in range(2500)})
    assert len(results) == 2500 and all(r.old_value is None for r in results)
    await state.set_many("big", [("other", "x")])
    assert await state.count("big") == 2501
    assert await state.count("big", "k1") == 1000
    page = await state.list("big", prefix="k", limit=3)
    assert page.items == [Item("k0000", 0), Item("k0001", 1), Item("k0002", 2)] and page.cursor
    pages = [p async for p in state.pages("big", prefix="k", page_size=1000)]
    assert [len(p.items) for p in pages] == [1000, 1000, 500] and pages[-1].cursor is None
    keys = [item.key async for item in state.items("big", page_size=700)]
    assert keys == [*(f"k{i:04d}" for i in range(2500)), "other"]
    assert (await state.values("big"))[:2] == [0, 1]
    assert "big" in await state.groups()
    assert await state.get_many("big", ["k0001", "nope"]) == [1, None]
    metas = await state.get_many_meta("big", ["k0001", "nope"])
    assert metas[0].exists and metas[0].value == 1 and metas[1] == StateEntry(False, None, None)


async def test_transaction_and_ttl(worker: Worker) -> None:
    state = worker.state
    a = await state.set("acct", "a", 100)
    results = await state.transaction(
        [
            TxOp.update("acct", "a", [{"type": "decrement", "path": "", "by": 30}], expect_version=a.version),
            TxOp.set("acct", "b", 30, expect_exists=False),
            {"op": "delete", "scope": "acct", "key": "nothing"},
        ]
    )
    assert [(r.old_value, r.new_value) for r in results] == [(100, 70), (None, 30), (None, None)]
    assert isinstance(results[0], WriteResult) and results[2].version is None
    with pytest.raises(VersionMismatch) as err:
        await state.transaction(
            [TxOp.set("acct", "c", 1), TxOp.delete("acct", "a", expect_version=a.version)]
        )
    assert err.value.index == 1 and err.value.current_version == results[0].version
    assert await state.get("acct", "c") is None

    brief = await state.set("tmp", "k", "v", ttl_ms=150)
    assert brief.expires_at_ms is not None
    assert (await state.get_meta("tmp", "k")).expires_at_ms == brief.expires_at_ms
    await asyncio.sleep(0.3)
    assert await state.get_meta("tmp", "k") == StateEntry(False, None, None)
