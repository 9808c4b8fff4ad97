"""Many connections: 100 workers x 16 in flight of state::update on 100 keys.

Baseline: 1 worker x 16 in flight, same calls, same engine (in_memory), same
client process, measured in alternating windows. The ratio says what 100
connections (and 1600 calls in flight, contending on 100 keys) cost compared
with one. All 100 workers live in the load-generator process, one uvloop.

    python benchmarks/many_workers.py      # = run.py --only workers
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Row,
    Target,
    engine,
    free_port,
    measure_interleaved,
    progress,
    run,
    section_main,
    with_ratio,
)
from state import CONFIGS, INCREMENT, KEYS, SCOPE, seed

SECTION = "many workers"
WORKERS = 100
PER_WORKER = 16


async def _rows(url: str, pid: int, seconds: float) -> list[Row]:
    from pyiii import connect

    workers = [await connect(url, name=f"bench-w{i}") for i in range(WORKERS)]
    try:
        await seed(workers[0])

        def update(n: int) -> object:
            # Call n goes to worker n % 100 (so each has ~16 in flight) and
            # walks all 100 keys.
            worker = workers[n % WORKERS]
            key = f"k{(n // WORKERS) % KEYS}"
            return worker.trigger("state::update", {"scope": SCOPE, "key": key, "ops": INCREMENT})

        one = workers[0]

        def update_one(n: int) -> object:
            return one.trigger("state::update", {"scope": SCOPE, "key": f"k{n % KEYS}", "ops": INCREMENT})

        base = f"state::update in_memory, 1 worker x {PER_WORKER} in flight"
        name = f"state::update in_memory, {WORKERS} workers x {PER_WORKER} in flight"
        progress(f"{base} / {name}")
        m = await measure_interleaved(
            [
                Target(base, update_one, [pid], inflight=PER_WORKER),
                Target(name, update, [pid], inflight=WORKERS * PER_WORKER),
            ],
            inflight=PER_WORKER,
            seconds=seconds,
        )
    finally:
        for w in workers:
            await w.shutdown()
    rows = [m[base].row(base, SECTION), with_ratio(m[name].row(name, SECTION), m[base].row(base, SECTION))]
    for r in rows:
        progress(f"{r.name}: {r.ops_per_s:.0f} ops/s, p50 {r.p50_us:.0f} µs")
    return rows


def many_worker_rows(seconds: float) -> list[Row]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, engine(port, Path(tmp), CONFIGS["in_memory"]) as eng:
        rows = run(_rows(f"ws://127.0.0.1:{port}", eng.pid, seconds))
    assert isinstance(rows, list)
    return rows


def main() -> None:
    section_main("workers", __doc__)


if __name__ == "__main__":
    main()
