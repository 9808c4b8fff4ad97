"""Crash and restart with the durable store (`file_based`).

`kill -9` lands at random moments while several workers stream acknowledged
writes; after each restart every acknowledged write must be there and no
write may be half-applied. SIGTERM must answer or fail every in-flight call,
close sockets with 1001, flush and exit 0.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from pyiii import connect
from pyiii.errors import IIIError
from pyiii.sdk.worker import Worker

FILE_BASED = """
workers:
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state}}
"""

WRITERS = 4  # connections writing at once
KEYS_PER_WRITER = 6  # each key is written by one task, one update at a time
KILL_POINTS = 6


class Ledger:
    """What each writer sent and what the engine acknowledged."""

    def __init__(self) -> None:
        self.counter: dict[str, int] = {}  # key -> last value sent in an update
        self.acked: dict[str, int] = {}  # key -> last value whose update was acknowledged
        self.logged: set[str] = set()  # unique keys whose state::set was acknowledged
        self.acks = 0
        self.unacked_landed = 0  # updates that reached disk but whose ack the kill cut off


async def write_stream(worker: Worker, key: str, ledger: Ledger, stop: asyncio.Event) -> None:
    """Update ``key`` again and again: a, b and n must always move together."""
    while not stop.is_set():
        n = ledger.counter.get(key, 0) + 1
        ledger.counter[key] = n
        ops = [
            {"type": "set", "path": "a", "value": n},
            {"type": "increment", "path": "n", "by": 1},
            {"type": "set", "path": "b", "value": n},
        ]
        try:
            await worker.trigger("state::update", {"scope": "counters", "key": key, "ops": ops})
            ledger.acked[key] = n
            log_key = f"{key}-{n}"
            await worker.trigger("state::set", {"scope": "log", "key": log_key, "value": {"key": log_key}})
            ledger.logged.add(log_key)
            ledger.acks += 2
        except IIIError:
            return  # the engine died: this write may or may not have landed


async def check_store(url: str, ledger: Ledger) -> tuple[int, int]:
    """(acknowledged writes missing, half-applied values); syncs ledger to what survived."""
    reader = await connect(url, reconnect=False)
    try:
        lost = half = 0
        for key, sent in ledger.counter.items():
            value = await reader.trigger("state::get", {"scope": "counters", "key": key})
            acked = ledger.acked.get(key, 0)
            if value is None:
                lost += acked > 0
                ledger.counter[key] = 0
                continue
            a, b, n = value.get("a"), value.get("b"), value.get("n")
            if not (a == b == n):
                half += 1
            if not isinstance(a, int) or a < acked:
                lost += 1
            assert isinstance(a, int) and a <= sent, f"{key}: {value} but only {sent} was ever sent"
            ledger.unacked_landed += max(0, a - acked)
            # An unacknowledged update may have landed: continue from what is there.
            ledger.counter[key] = a
            ledger.acked[key] = a
        stored = {v["key"] for v in await reader.trigger("state::list", {"scope": "log"})}
        missing_logs = len(ledger.logged - stored)
        return lost + missing_logs, half
    finally:
        await reader.shutdown()


async def test_kill9_at_random_moments_loses_no_acknowledged_write(
    make_engine_proc: Any, tmp_path: Path
) -> None:
    rng = random.Random(20261128)
    eng = make_engine_proc(FILE_BASED)
    ledger = Ledger()
    report: list[str] = []
    total_lost = total_half = 0
    for point in range(KILL_POINTS):
        eng.start()
        lost, half = await check_store(eng.url, ledger)
        total_lost += lost
        total_half += half
        workers = [await connect(eng.url, reconnect=False) for _ in range(WRITERS)]
        stop = asyncio.Event()
        tasks = [
            asyncio.ensure_future(write_stream(w, f"w{i}-k{k}", ledger, stop))
            for i, w in enumerate(workers)
            for k in range(KEYS_PER_WRITER)
        ]
        before = ledger.acks
        delay = rng.uniform(0.2, 1.2)
        await asyncio.sleep(delay)
        in_flight = sum(1 for t in tasks if not t.done())
        eng.kill()  # SIGKILL while writes are in flight
        report.append(
            f"kill {point + 1}: after {delay:.2f}s, {ledger.acks - before} acks, {in_flight} in flight"
        )
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        for w in workers:
            await w.shutdown()
    eng.start()
    lost, half = await check_store(eng.url, ledger)
    total_lost += lost
    total_half += half
    eng.stop()
    writes = sum(ledger.acked.values())
    print(
        f"\n{KILL_POINTS} kill points; {writes} updates on disk, {len(ledger.logged)} acknowledged sets, "
        f"{ledger.unacked_landed} unacknowledged updates landed whole; "
        f"lost {total_lost}, half-applied {total_half}\n" + "\n".join(report)
    )
    assert total_lost == 0 and total_half == 0, report
    assert writes > 0 and len(ledger.logged) > 0
    # The store holds only the database (and SQLite's WAL side files).
    names = {p.name for p in (tmp_path / "data" / "state").iterdir()}
    assert names <= {"pyiii-state.sqlite3", "pyiii-state.sqlite3-wal", "pyiii-state.sqlite3-shm"}, names
