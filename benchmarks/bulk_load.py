"""1M small values in one scope: load time, engine RSS, list and get at that size.

* Load 1,000,000 distinct 100-byte JSON objects into one scope of an
  in_memory engine, with ``state::set_many`` when the engine has it (probed
  at run time), else pipelined ``state::set`` with 256 in flight.
* Engine RSS (VmRSS from /proc) once loaded, against the RSS of a raw Python
  dict holding the same keys and the same encoded values (``dict[str, bytes]``,
  the most compact plain-Python form), built in a fresh interpreter so
  nothing else shares its heap.
* state::list of the whole scope (a ~100 MB reply; the latency includes the
  SDK decoding it into 1M dicts) and state::get of random keys, 1 in flight,
  against state::get on a 100-key scope of the same engine (alternating
  windows), so the ratio shows what the size alone costs.

    python benchmarks/bulk_load.py [--values N]        # = run.py --only bulk
    python benchmarks/bulk_load.py --dict-rss N        # the dict baseline alone (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Row,
    Target,
    cpu_seconds,
    engine,
    free_port,
    measure_interleaved,
    memory_mb,
    progress,
    run,
    with_ratio,
)

VALUE_BYTES = 100
SCOPE = "bulk"
PIPELINE = 256
BATCH = 1000  # values per state::set_many call
BATCH_INFLIGHT = 4
LIST_CALLS = 3


def key_for(i: int) -> str:
    return f"k{i:07d}"


def value_for(i: int) -> bytes:
    """A distinct JSON object of exactly VALUE_BYTES bytes."""
    head = f'{{"id":{i},"email":"user{i:07d}@example.com","pad":"'.encode()
    return head + b"x" * (VALUE_BYTES - len(head) - 2) + b'"}'


def dict_rss(n: int) -> dict[str, float]:
    """In this (fresh) process: RSS before and after building {key: value bytes}."""
    idle = memory_mb_self()
    data = {key_for(i): value_for(i) for i in range(n)}
    loaded = memory_mb_self()
    assert len(data) == n
    return {"idle_mb": idle, "rss_mb": loaded}


def memory_mb_self() -> float:
    import os

    return memory_mb(os.getpid())["VmRSS"]


def _dict_baseline(n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--dict-rss", str(n)], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


# --------------------------------------------------------------------------- loading


# Payload shapes tried for state::set_many (the function is new; the first one
# that stores what it is given wins).
def _many_items(scope: str, pairs: list[tuple[str, bytes]]) -> dict[str, Any]:
    from msgspec import Raw

    return {"scope": scope, "items": [{"key": k, "value": Raw(v)} for k, v in pairs]}


def _many_entries(scope: str, pairs: list[tuple[str, bytes]]) -> dict[str, Any]:
    from msgspec import Raw

    return {"scope": scope, "entries": [{"key": k, "value": Raw(v)} for k, v in pairs]}


def _many_values(scope: str, pairs: list[tuple[str, bytes]]) -> dict[str, Any]:
    from msgspec import Raw

    return {"scope": scope, "values": {k: Raw(v) for k, v in pairs}}


SET_MANY_SHAPES = (_many_items, _many_entries, _many_values)


async def _probe_set_many(worker: Any) -> Any:
    """The set_many payload builder this engine accepts, or None."""
    for shape in SET_MANY_SHAPES:
        scope = f"bench-probe-{shape.__name__}"
        try:
            await worker.trigger("state::set_many", shape(scope, [("a", b'{"x":1}'), ("b", b'{"x":2}')]))
            if await worker.trigger("state::get", {"scope": scope, "key": "b"}) == {"x": 2}:
                return shape
        except Exception:
            continue
    return None


async def _load(worker: Any, n: int) -> tuple[str, list[float], float]:
    """Load n values; (method, per-call latencies, seconds)."""
    from msgspec import Raw

    shape = await _probe_set_many(worker)
    latencies: list[float] = []
    next_index = 0
    perf = time.perf_counter

    if shape is not None:
        method = f"state::set_many, {BATCH} values/call, {BATCH_INFLIGHT} calls in flight"

        async def loop() -> None:
            nonlocal next_index
            while next_index < n:
                lo, next_index = next_index, min(n, next_index + BATCH)
                pairs = [(key_for(i), value_for(i)) for i in range(lo, next_index)]
                t0 = perf()
                await worker.trigger("state::set_many", shape(SCOPE, pairs))
                latencies.append(perf() - t0)

        inflight = BATCH_INFLIGHT
    else:
        method = f"state::set, {PIPELINE} in flight (no state::set_many)"

        async def loop() -> None:
            nonlocal next_index
            while next_index < n:
                i = next_index
                next_index += 1
                payload = {"scope": SCOPE, "key": key_for(i), "value": Raw(value_for(i))}
                t0 = perf()
                await worker.trigger("state::set", payload)
                latencies.append(perf() - t0)

        inflight = PIPELINE
    start = perf()
    await asyncio.gather(*(loop() for _ in range(inflight)))
    return method, latencies, perf() - start


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1e6


async def _rows(url: str, pid: int, n: int, seconds: float) -> list[Row]:
    from pyiii import connect

    section = f"{n:,} small values in one scope"

    idle = memory_mb(pid)["VmRSS"]
    # The whole scope comes back as one frame of ~n * 101 bytes.
    worker = await connect(url, name="bench-bulk", max_frame_bytes=max(64 << 20, n * 2 * VALUE_BYTES))
    rows: list[Row] = []
    try:
        progress(f"load {n:,} x {VALUE_BYTES} B values into one scope")
        cpu0, client0 = cpu_seconds(pid), time.process_time()
        method, lat, took = await _load(worker, n)
        load = Row(
            f"load {n:,} x {VALUE_BYTES} B values into one scope (values/s)",
            n / took,
            _pct(lat, 0.5),
            _pct(lat, 0.99),
            section=section,
            server_cpu=(cpu_seconds(pid) - cpu0) / took,
            client_cpu=(time.process_time() - client0) / took,
            note=f"{took:.1f} s; {method}; p50/p99 per call",
            extra={"seconds": took, "method": method},
        )
        rows.append(load)
        progress(f"{load.name}: {took:.1f} s ({method})")
        await asyncio.sleep(0.3)
        mem = memory_mb(pid)
        progress("raw Python dict RSS (fresh process)")
        d = _dict_baseline(n)
        dict_row = Row(
            f"raw Python dict[str, bytes] of the same {n:,} values (fresh process)",
            None, None, None, section=section,
            note=f"RSS {d['rss_mb']:.0f} MB (interpreter alone {d['idle_mb']:.0f} MB)",
            extra={"rss_mb": d["rss_mb"], "idle_rss_mb": d["idle_mb"]},
        )
        engine_row = Row(
            f"engine RSS with {n:,} values",
            None, None, None, section=section,
            baseline=dict_row.name, ratio=mem["VmRSS"] / d["rss_mb"], ratio_of="RSS",
            note=f"RSS {mem['VmRSS']:.0f} MB (idle engine {idle:.0f} MB, peak {mem['VmHWM']:.0f} MB)",
            extra={"rss_mb": mem["VmRSS"], "idle_rss_mb": idle, "peak_rss_mb": mem["VmHWM"]},
        )
        rows += [engine_row, dict_row]
        progress(f"{engine_row.name}: {engine_row.note}; dict: {dict_row.note}")

        progress(f"state::list at {n:,} values")
        times, size = [], 0
        cpu0, client0 = cpu_seconds(pid), time.process_time()
        for _ in range(LIST_CALLS):
            t0 = time.perf_counter()
            listed = await worker.trigger("state::list", {"scope": SCOPE}, timeout_ms=120_000)
            times.append(time.perf_counter() - t0)
            size = len(listed)
            del listed
        total = sum(times)
        rows.append(
            Row(
                f"state::list of the scope at {n:,} values, 1 in flight",
                LIST_CALLS / total, _pct(times, 0.5), max(times) * 1e6, section=section,
                server_cpu=(cpu_seconds(pid) - cpu0) / total,
                client_cpu=(time.process_time() - client0) / total,
                note=f"{LIST_CALLS} calls, p99 = slowest; {size:,} values returned; "
                "includes the SDK decoding the reply",
                extra={"values_returned": size},
            )
        )
        if size != n:
            raise RuntimeError(f"state::list returned {size} values, expected {n}")
        progress(f"state::get at {n:,} values vs a 100-key scope, same engine")
        from state import SCOPE as SMALL_SCOPE
        from state import seed, state_calls

        await seed(worker)
        small = state_calls(worker)["state::get"]

        def get(i: int) -> object:
            return worker.trigger("state::get", {"scope": SCOPE, "key": key_for((i * 7919) % n)})

        base = "state::get, 100-key scope in the same engine, 1 in flight"
        name = f"state::get at {n:,} values (random keys), 1 in flight"
        m = await measure_interleaved(
            [Target(base, small, [pid]), Target(name, get, [pid])], inflight=1, seconds=seconds
        )
        small_row = m[base].row(base, section, note=f"scope {SMALL_SCOPE!r}")
        rows += [with_ratio(m[name].row(name, section), small_row), small_row]
    finally:
        await worker.shutdown()
    return rows


# state::list answers with the whole scope in one frame (~n * 101 bytes); the
# engine drops a connection whose unsent frames exceed
# limits.max_send_buffer_bytes (64 MiB by default), so raise it for this engine.
LIMITS = "  - name: iii-worker-manager\n    config:\n      limits: {{max_send_buffer_bytes: {}}}\n"


def bulk_rows(seconds: float, n: int = 1_000_000) -> list[Row]:
    port = free_port()
    from state import CONFIGS

    config = CONFIGS["in_memory"] + LIMITS.format(max(64 << 20, n * 4 * VALUE_BYTES))
    with tempfile.TemporaryDirectory() as tmp, engine(port, Path(tmp), config) as eng:
        rows = run(_rows(f"ws://127.0.0.1:{port}", eng.pid, n, seconds))
    assert isinstance(rows, list)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--dict-rss", type=int, help="build the dict baseline in this process, print JSON")
    args = parser.parse_args()
    if args.dict_rss:
        print(json.dumps(dict_rss(args.dict_rss)))
        return
    import run as runner

    runner.main(["--only", "bulk", "--seconds", str(args.seconds), "--values", str(args.values)])


if __name__ == "__main__":
    main()
