"""State functions through the engine, against the transport ceiling.

Rows: state::get / state::set / state::update (increment) via the pyiii SDK,
in_memory and file_based, 1 and 64 in flight. Ratios: each row against the
ceiling at the same concurrency; file_based set against in_memory set.

    python benchmarks/state.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, engine, free_port, measure, print_rows, progress, run, save, with_ratio
from pyiii import connect
from transport_ceiling import ceiling_rows

STATE_CONFIG = "workers:\n  - name: iii-state\n    config:\n      adapter: {{name: kv, config: {{{}}}}}\n"
CONFIGS = {
    "in_memory": STATE_CONFIG.format("store_method: in_memory"),
    "file_based": STATE_CONFIG.format("store_method: file_based, file_path: ./data/state"),
}
VALUE = {"id": "u1", "name": "Alice", "email": "alice@example.com", "loginCount": 0}


async def state_rows(url: str, store: str, seconds: float) -> list[Row]:
    worker = await connect(url, name="bench-state")
    rows: list[Row] = []
    try:
        for i in range(100):
            await worker.trigger("state::set", {"scope": "bench", "key": f"k{i}", "value": VALUE})
        calls = {
            "state::get": lambda n: worker.trigger("state::get", {"scope": "bench", "key": f"k{n % 100}"}),
            "state::set": lambda n: worker.trigger(
                "state::set", {"scope": "bench", "key": f"k{n % 100}", "value": VALUE}
            ),
            "state::update": lambda n: worker.trigger(
                "state::update",
                {
                    "scope": "bench",
                    "key": f"k{n % 100}",
                    "ops": [{"type": "increment", "path": "loginCount", "by": 1}],
                },
            ),
        }
        for name, call in calls.items():
            for inflight in (1, 64):
                label = f"{name} {store}, {inflight} in flight"
                progress(label)
                ops, p50, p99 = await measure(call, inflight=inflight, seconds=seconds)
                rows.append(Row(label, ops, p50, p99))
    finally:
        await worker.shutdown()
    return rows


def store_rows(store: str, seconds: float) -> list[Row]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, engine(port, Path(tmp), CONFIGS[store]):
        rows = run(state_rows(f"ws://127.0.0.1:{port}", store, seconds))
    assert isinstance(rows, list)
    return rows


def all_rows(seconds: float) -> list[Row]:
    ceiling = {r.name.rsplit(", ", 1)[1]: r for r in ceiling_rows(seconds)}
    rows = list(ceiling.values())
    by_name: dict[str, Row] = {}
    for store in CONFIGS:
        for row in store_rows(store, seconds):
            by_name[row.name] = row
            rows.append(with_ratio(row, ceiling[row.name.rsplit(", ", 1)[1]]))
    for inflight in (1, 64):
        mem = by_name[f"state::set in_memory, {inflight} in flight"]
        disk = by_name[f"state::set file_based, {inflight} in flight"]
        rows.append(
            with_ratio(
                Row(
                    f"state::set file_based vs in_memory, {inflight} in flight",
                    disk.ops_per_s,
                    disk.p50_us,
                    disk.p99_us,
                ),
                mem,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    rows = all_rows(args.seconds)
    print_rows("State via the pyiii SDK", rows)
    save("state", rows)


if __name__ == "__main__":
    main()
