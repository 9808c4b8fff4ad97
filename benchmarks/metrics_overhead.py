"""What recording metrics costs the hot path: state::get with metrics on against off.

Rows (run.py, section ``metrics``): ``state::get`` in_memory, 64 in flight,
via the pyiii SDK, on two engines measured in alternating windows: one with
the State module only (metrics off: ``engine.metrics`` is None), one that
also loads the console (metrics on: every invocation counted and timed).
The target is on/off >= 0.95.

    python benchmarks/metrics_overhead.py        # = run.py --only metrics
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, Target, engine, free_port, measure_interleaved, print_rows, progress, run, with_ratio

INFLIGHT = 64
ROUNDS = 12
CONSOLE = "  - name: iii-console\n    config: {port: 0}\n"


def off_name(n: int = INFLIGHT) -> str:
    return f"state::get in_memory, metrics off, {n} in flight"


def on_name(n: int = INFLIGHT) -> str:
    return f"state::get in_memory, metrics on (console loaded), {n} in flight"


async def _measure(urls: dict[str, tuple[str, int]], seconds: float) -> list[Row]:
    from pyiii import connect
    from state import seed, state_calls

    closers: list[Any] = []
    targets = []
    try:
        for name, (url, pid) in urls.items():
            client = await connect(url, name=f"bench-{name}")
            closers.append(client.shutdown)
            await seed(client)
            targets.append(Target(name, state_calls(client)["state::get"], [pid]))
        # Twice the usual time in short alternating windows: the two rows differ by a few
        # percent at most, less than a busy machine's swings between two long windows.
        progress(f"metrics: {len(targets)} rows in {ROUNDS} alternating windows, {2 * seconds:g} s each")
        m = await measure_interleaved(targets, inflight=INFLIGHT, seconds=2 * seconds, rounds=ROUNDS)
    finally:
        for close in reversed(closers):
            await close()
    off = m[off_name()].row(off_name(), "metrics")
    on = m[on_name()].row(on_name(), "metrics")
    progress(f"{off.name}: {off.ops_per_s:.0f} ops/s; {on.name}: {on.ops_per_s:.0f} ops/s")
    return [off, with_ratio(on, off)]


def metrics_rows(seconds: float) -> list[Row]:
    from state import CONFIGS

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        urls: dict[str, tuple[str, int]] = {}
        for name, config in ((off_name(), CONFIGS["in_memory"]), (on_name(), CONFIGS["in_memory"] + CONSOLE)):
            port = free_port()
            workdir = tmp / str(port)
            workdir.mkdir()
            proc = stack.enter_context(engine(port, workdir, config))
            urls[name] = (f"ws://127.0.0.1:{port}", proc.pid)
        rows = run(_measure(urls, seconds))
    assert isinstance(rows, list)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print_rows("metrics on vs off", metrics_rows(args.seconds))
