"""Concurrent writers through the engine (docs/state.md §3.4, §8).

Raw-protocol clients only (the official-SDK variant lives elsewhere). Each
test runs once per State adapter.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

CLIENTS = 4
INCREMENTS = 1000


async def test_concurrent_increments_lose_nothing(state_engine: Any) -> None:
    clients = [await state_engine.client() for _ in range(CLIENTS)]
    op = {"type": "increment", "path": "count", "by": 1}

    async def bump(client: Any) -> dict[str, Any]:
        result: dict[str, Any] = await client.ok(
            "state::update", {"scope": "ctr", "key": "hits", "ops": [op]}
        )
        return result

    per_client = INCREMENTS // CLIENTS
    results = await asyncio.gather(*(bump(c) for c in clients for _ in range(per_client)))

    final = await clients[0].ok("state::get", {"scope": "ctr", "key": "hits"})
    assert final == {"count": INCREMENTS}
    assert type(final["count"]) is int
    # Every increment saw a distinct predecessor: the updates were serialised.
    assert sorted(r["new_value"]["count"] for r in results) == list(range(1, INCREMENTS + 1))
    olds = [r["old_value"] for r in results]
    assert olds.count(None) == 1, "exactly one update found the key absent"
    assert sorted(o["count"] for o in olds if o is not None) == list(range(1, INCREMENTS))
    assert all("errors" not in r for r in results)


async def test_concurrent_mixed_updates_of_one_key(state_engine: Any) -> None:
    clients = [await state_engine.client() for _ in range(CLIENTS)]
    await clients[0].ok("state::set", {"scope": "mix", "key": "doc", "value": {"log": []}})
    rounds = 100

    async def work(index: int, client: Any) -> None:
        for i in range(rounds):
            ops = [
                {"type": "increment", "path": f"c{index}", "by": 1},
                {"type": "append", "path": "log", "value": f"{index}:{i}"},
                {"type": "decrement", "path": "total", "by": -2},
            ]
            await client.ok("state::update", {"scope": "mix", "key": "doc", "ops": ops})

    await asyncio.gather(*(work(i, c) for i, c in enumerate(clients)))
    doc = await clients[0].ok("state::get", {"scope": "mix", "key": "doc"})
    assert doc["total"] == 2 * rounds * CLIENTS
    for index in range(CLIENTS):
        assert doc[f"c{index}"] == rounds
        # each client's own appends keep their order
        assert [x for x in doc["log"] if x.startswith(f"{index}:")] == [f"{index}:{i}" for i in range(rounds)]
    assert len(doc["log"]) == rounds * CLIENTS


async def test_concurrent_set_and_delete_hand_every_value_to_exactly_one_observer(state_engine: Any) -> None:
    """N clients loop set(k, unique) then delete(k); readers poll get(k).

    A write replaces exactly one previous state, so every value written is
    observed as "previous" exactly once: as a later set's old_value, as a
    delete's result, or as the value still stored at the end. A delete that
    returned a value someone else also got (or a value nobody wrote) would
    break this.
    """
    writers = [await state_engine.client() for _ in range(8)]
    reader = await state_engine.client()
    rounds = 60
    written: list[str] = []
    observed: list[str] = []
    reads: list[Any] = []
    done = asyncio.Event()

    async def writer(index: int, client: Any) -> None:
        for i in range(rounds):
            value = f"w{index}-{i}"
            written.append(value)
            result = await client.ok("state::set", {"scope": "race", "key": "k", "value": value})
            assert result["new_value"] == value
            if result["old_value"] is not None:
                observed.append(result["old_value"])
            deleted = await client.ok("state::delete", {"scope": "race", "key": "k"})
            if deleted is not client.MISSING:
                observed.append(deleted)

    async def read() -> None:
        while not done.is_set():
            reads.append(await reader.ok("state::get", {"scope": "race", "key": "k"}))

    reading = asyncio.create_task(read())
    await asyncio.gather(*(writer(i, c) for i, c in enumerate(writers)))
    done.set()
    await reading

    final = await reader.ok("state::get", {"scope": "race", "key": "k"})
    if final is not reader.MISSING:
        observed.append(final)
    counts = collections.Counter(observed)
    twice = {v: n for v, n in counts.items() if n > 1}
    assert not twice, f"values observed as previous more than once: {twice}"
    assert set(observed) <= set(written), f"values nobody wrote: {set(observed) - set(written)}"
    assert sorted(observed) == sorted(written), (
        f"{len(set(written) - set(observed))} written values vanished without being observed"
    )
    assert all(r is reader.MISSING or r in set(written) for r in reads)
