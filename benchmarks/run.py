"""Every benchmark row in one table, with the targets met or not (``make bench``).

    python benchmarks/run.py                        # everything (~3-4 min on 2 cores)
    python benchmarks/run.py --only state           # one section (its baselines come along)
    python benchmarks/run.py --only state,redis --seconds 1
    python benchmarks/run.py --skip dump            # everything but the 1M dump/restore
    python benchmarks/run.py --only dump --dump-values 100000   # a short dump/restore

Sections: ceiling, state, invoke, redis, node, workers, bulk, queue, dump, rbac, stream,
metrics, http (see README.md).
A full run writes benchmarks/results/latest.json; a partial run writes
benchmarks/results/only-<sections>.json. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Row,
    Target,
    cpu_per_op_us,
    engine,
    free_port,
    measure_interleaved,
    print_rows,
    progress,
    run,
    save,
    with_ratio,
)

SECTIONS = (
    "ceiling",
    "state",
    "invoke",
    "redis",
    "node",
    "workers",
    "bulk",
    "queue",
    "dump",
    "rbac",
    "stream",
    "metrics",
    "http",
)
CORE = {"ceiling", "state", "invoke", "redis"}
INFLIGHTS = (1, 64)
STORES = ("in_memory", "file_based")
REDIS_CONFIG = (
    "workers:\n  - name: iii-state\n    config:\n"
    "      adapter: {{name: redis, config: {{redis_url: '{url}'}}}}\n"
)
OPS = ("state::get", "state::set", "state::update", "state::transaction")
WRITES = OPS[1:]
FSYNC = "fsync: 120-byte append + fsync on the file_based engine's disk, 1 in flight"


def ceiling_name(n: int) -> str:
    return f"ceiling: bare picows echo, pyiii SDK client, {n} in flight"


def state_name(op: str, store: str, n: int) -> str:
    return f"{op} {store}, {n} in flight"


def routed_name(n: int) -> str:
    return f"cross-worker trigger A -> engine -> B -> A, {n} in flight"


def redis_name(cmd: str, n: int) -> str:
    return f"redis-py {cmd} (asyncio + hiredis), {n} in flight"


# --------------------------------------------------------------------------- core


async def _core(selected: set[str], servers: dict[str, Any], seconds: float) -> list[Row]:
    """Ceiling, state, cross-worker and redis rows, measured in alternating windows."""
    from invoke import ECHO_FUNCTION
    from pyiii import connect
    from redis_baseline import redis_calls, redis_client
    from state import fsync_call, seed, state_calls
    from transport_ceiling import PAYLOAD

    closers: list[Any] = []
    specs: list[tuple[str, str, Any, list[int], int | None]] = []  # (key, section, call, pids, inflight)

    def add(key: str, section: str, call: Any, pids: list[int]) -> None:
        specs.append((key, section, call, pids, None))

    try:
        if "echo" in servers:
            url, pid = servers["echo"]
            client = await connect(url, name="bench-ceiling")
            closers.append(client.shutdown)
            add("ceiling", "ceiling", lambda _n, c=client: c.trigger("echo", PAYLOAD), [pid])
        for store in STORES:
            if store not in servers:
                continue
            url, pid = servers[store]
            client = await connect(url, name=f"bench-{store}")
            closers.append(client.shutdown)
            await seed(client)
            calls = state_calls(client)
            for op in OPS:
                if "state" in selected or (op == "state::get" and store == "in_memory"):
                    add(f"{op} {store}", "state", calls[op], [pid])
            if store == "in_memory" and "worker" in servers:
                add(
                    "routed",
                    "cross-worker trigger",
                    lambda _n, c=client: c.trigger(ECHO_FUNCTION, PAYLOAD),
                    [pid, servers["worker"]],
                )
        if "redis_adapter" in servers:
            # The engine's redis adapter, against the same redis-server as redis-py.
            url, pid = servers["redis_adapter"]
            client = await connect(url, name="bench-redis-adapter")
            closers.append(client.shutdown)
            await seed(client)
            calls = state_calls(client)
            for op in OPS:
                add(f"{op} redis", "redis adapter", calls[op], [pid, servers["redis"][1]])
        if "redis" in servers:
            port, pid = servers["redis"]
            rc = await redis_client(port)
            closers.append(rc.aclose)
            for cmd, call in redis_calls(rc).items():
                add(f"redis {cmd}", "redis-py", call, [pid])

        measured: dict[str, Row] = {}
        for n in INFLIGHTS:
            names = {key: _row_name(key, n) for key, *_ in specs}
            targets = [Target(names[key], call, pids) for key, _, call, pids, _ in specs]
            if n == 1 and "fsync_dir" in servers:
                # The disk's share of one durable commit, in the same windows as the rows.
                names["fsync"] = FSYNC
                targets.append(Target(FSYNC, fsync_call(servers["fsync_dir"])))
                specs_n = [*specs, ("fsync", "disk", None, [], None)]
            else:
                specs_n = specs
            progress(
                f"{n} in flight: {len(targets)} rows in alternating windows, "
                f"{seconds:g} s each (4 windows) after {0.3:g} s warm-up"
            )
            m = await measure_interleaved(targets, inflight=n, seconds=seconds)
            for key, section, *_ in specs_n:
                row = m[names[key]].row(names[key], section)
                measured[row.name] = row
                progress(f"{row.name}: {row.ops_per_s:.0f} ops/s, p50 {row.p50_us:.0f} µs")
    finally:
        for close in reversed(closers):
            await close()
    return _core_table(selected, measured)


def _row_name(key: str, n: int) -> str:
    if key == "ceiling":
        return ceiling_name(n)
    if key == "routed":
        return routed_name(n)
    if key.startswith("redis "):
        return redis_name(key.split()[1], n)
    op, store = key.split()
    return state_name(op, store, n)


def _copy(row: Row, name: str, section: str) -> Row:
    return dataclasses.replace(row, name=name, section=section, baseline=None, ratio=None)


def _core_table(selected: set[str], m: dict[str, Row]) -> list[Row]:
    rows: list[Row] = []
    for n in INFLIGHTS:
        if ceiling_name(n) in m:
            rows.append(m[ceiling_name(n)])
    if "state" in selected:
        for store in STORES:
            for op in OPS:
                for n in INFLIGHTS:
                    rows.append(with_ratio(m[state_name(op, store, n)], m[ceiling_name(n)]))
        if FSYNC in m:
            rows.append(m[FSYNC])
    if "invoke" in selected:
        for n in INFLIGHTS:
            rows.append(with_ratio(m[routed_name(n)], m[ceiling_name(n)]))
    if "redis" in selected:
        for cmd in ("GET", "SET"):
            for n in INFLIGHTS:
                rows.append(m[redis_name(cmd, n)])
        for n in INFLIGHTS:
            row = _copy(m[state_name("state::get", "in_memory", n)],
                        f"state::get pyiii in_memory vs redis-py GET, {n} in flight", "comparisons")
            rows.append(with_ratio(row, m[redis_name("GET", n)]))
        # Every adapter write against redis-py SET: one round trip is the bound.
        for op in OPS:
            cmd = "GET" if op == "state::get" else "SET"
            for n in INFLIGHTS:
                if state_name(op, "redis", n) in m:
                    rows.append(with_ratio(m[state_name(op, "redis", n)], m[redis_name(cmd, n)]))
    if "state" in selected:
        for op in WRITES:
            for n in INFLIGHTS:
                verb = op.split("::")[1]
                row = _copy(m[state_name(op, "file_based", n)],
                            f"state::{verb} file_based vs in_memory, {n} in flight", "comparisons")
                rows.append(with_ratio(row, m[state_name(op, "in_memory", n)]))
    return rows


def core_rows(selected: set[str], seconds: float) -> list[Row]:
    from invoke import echo_worker
    from redis_baseline import hiredis_in_use, redis_server
    from state import CONFIGS
    from transport_ceiling import echo_server

    servers: dict[str, Any] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        progress("starting servers")
        if selected & {"ceiling", "state", "invoke"}:
            port = free_port()
            proc = stack.enter_context(echo_server(port))
            servers["echo"] = (f"ws://127.0.0.1:{port}", proc.pid)
        for store in STORES:
            if store == "file_based" and "state" not in selected:
                continue
            if store == "in_memory" and not selected & {"state", "invoke", "redis"}:
                continue
            port = free_port()
            (tmp / store).mkdir()
            proc = stack.enter_context(engine(port, tmp / store, CONFIGS[store]))
            servers[store] = (f"ws://127.0.0.1:{port}", proc.pid)
            if store == "file_based":
                servers["fsync_dir"] = tmp / store
        if "invoke" in selected:
            servers["worker"] = stack.enter_context(echo_worker(servers["in_memory"][0])).pid
        if "redis" in selected:
            if not hiredis_in_use():
                progress("warning: hiredis is not installed; redis-py uses its pure-Python parser")
            redis = stack.enter_context(redis_server())
            assert redis.proc is not None
            servers["redis"] = (redis.port, redis.proc.pid)
            port = free_port()
            (tmp / "redis").mkdir()
            config = REDIS_CONFIG.format(url=f"redis://127.0.0.1:{redis.port}")
            proc = stack.enter_context(engine(port, tmp / "redis", config))
            servers["redis_adapter"] = (f"ws://127.0.0.1:{port}", proc.pid)
        rows = run(_core(selected, servers, seconds))
    assert isinstance(rows, list)
    return rows


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass
class TargetResult:
    target: str
    value: float | None
    limit: float
    met: bool | None
    detail: str = ""
    unit: str = "x"


def evaluate(rows: Sequence[Row]) -> list[TargetResult]:
    by = {r.name: r for r in rows}

    def ratio(a: str, b: str, attr: str = "ops_per_s") -> float | None:
        ra, rb = by.get(a), by.get(b)
        if ra is None or rb is None:
            return None
        va, vb = getattr(ra, attr), getattr(rb, attr)
        return va / vb if va and vb else None

    def at_least(target: str, value: float | None, limit: float, detail: str = "") -> TargetResult:
        return TargetResult(target, value, limit, None if value is None else value >= limit, detail)

    def at_most(target: str, value: float | None, limit: float, detail: str = "") -> TargetResult:
        return TargetResult(target, value, limit, None if value is None else value <= limit, detail)

    get64 = state_name("state::get", "in_memory", 64)
    out = [
        at_least("state::get via pyiii >= 0.6x ceiling (in_memory, 64 in flight)",
                 ratio(get64, ceiling_name(64)), 0.6),
        at_least("state::get via pyiii >= 2x redis-py GET (in_memory, 64 in flight)",
                 ratio(get64, redis_name("GET", 64)), 2.0),
        at_least("cross-worker trigger >= 0.3x ceiling (64 in flight)",
                 ratio(routed_name(64), ceiling_name(64)), 0.3,
                 _detail("1 in flight", ratio(routed_name(1), ceiling_name(1)))),
    ]
    # Issue 17: the write paths.
    fb = {(op, n): ratio(state_name(op, "file_based", n), state_name(op, "in_memory", n))
          for op in WRITES for n in INFLIGHTS}
    out.append(at_least("file_based state::set >= 0.8x in_memory (64 in flight)", fb[("state::set", 64)],
                        0.8, ", ".join(f"{op.split('::')[1]} {fb[(op, 64)]:.2f}x" for op in WRITES[1:]
                                       if fb[(op, 64)] is not None)))
    bound_detail = ""
    bound = None
    fsync, mem1 = by.get(FSYNC), by.get(state_name("state::set", "in_memory", 1))
    if fsync is not None and mem1 is not None and fsync.p50_us and mem1.p50_us:
        bounds = {}
        for op in WRITES:
            row, base = by.get(state_name(op, "file_based", 1)), by.get(state_name(op, "in_memory", 1))
            if row is not None and base is not None and row.p50_us and base.p50_us:
                bounds[op] = row.p50_us / (base.p50_us + fsync.p50_us)
        bound = bounds.get("state::set")
        fb1 = by[state_name("state::set", "file_based", 1)].p50_us
        bound_detail = (f"{fb1:.0f} µs against {mem1.p50_us:.0f} + fsync {fsync.p50_us:.0f}; "
                        + ", ".join(f"{op.split('::')[1]} {v:.2f}x" for op, v in bounds.items()
                                    if op != "state::set"))
    out.append(at_most("file_based state::set p50 <= 1.1x (in_memory p50 + one fsync p50), 1 in flight",
                       bound, 1.1, bound_detail))
    for op, cmd in (("state::set", "SET"), ("state::get", "GET")):
        for n in reversed(INFLIGHTS):
            detail = ""
            if op == "state::set":
                detail = ", ".join(
                    f"{w.split('::')[1]} {v:.2f}x" for w in WRITES[1:]
                    if (v := ratio(state_name(w, "redis", n), redis_name("SET", n))) is not None)
                detail = f"vs SET: {detail}" if detail else ""
            out.append(at_least(f"redis adapter {op} >= 0.8x redis-py {cmd} ({n} in flight)",
                                ratio(state_name(op, "redis", n), redis_name(cmd, n)), 0.8, detail))
    p50 = {op: ratio(state_name(op, "in_memory", 1), ceiling_name(1), "p50_us") for op in OPS[:3]}
    known = {op: v for op, v in p50.items() if v is not None}
    worst = max(known, key=lambda op: known[op]) if known else None
    out.append(at_most("p50 at 1 in flight <= 1.15x ceiling's (worst of in_memory get/set/update)",
                       known[worst] if worst else None, 1.15,
                       ", ".join(f"{op.split('::')[1]} {v:.2f}x" for op, v in known.items())))
    if any(r.section == "queue" for r in rows):
        from queues import arq_name, queue_name

        redis_vs_arq = [ratio(queue_name("redis", n), arq_name(n)) for n in INFLIGHTS]
        out.append(at_least("queue redis >= 1x arq jobs/s (64 in flight)", redis_vs_arq[1], 1.0,
                            _detail("1 in flight", redis_vs_arq[0])))
        file_vs_mem = [ratio(queue_name("file_based", n), queue_name("in_memory", n)) for n in INFLIGHTS]
        out.append(at_least("queue file_based >= 0.8x in_memory jobs/s (64 in flight)", file_vs_mem[1], 0.8,
                            _detail("1 in flight, one fsync per publish", file_vs_mem[0])))
        p50_file = by.get(queue_name("file_based", 1))
        p50_ms = at_most("queue publish -> handler p50 at 1 in flight <= 2 ms (file_based)",
                         p50_file.p50_us / 1000 if p50_file else None, 2.0)
        out.append(dataclasses.replace(p50_ms, unit=" ms"))
    from rbac_listener import INFLIGHT as RBAC_INFLIGHT
    from rbac_listener import internal_name, rbac_name

    out.append(at_least("state::get via an RBAC listener >= 0.9x the internal listener (64 in flight)",
                        ratio(rbac_name(RBAC_INFLIGHT), internal_name(RBAC_INFLIGHT)), 0.9))
    stream_row = next((r for r in rows if r.section == "stream" and r.baseline), None)
    stream_base = by.get(stream_row.baseline) if stream_row and stream_row.baseline else None
    out.append(at_least("stream: delivered msgs/s >= 0.5x bare picows broadcast (1,000 clients)",
                        stream_row.ratio if stream_row else None, 0.5))
    out.append(at_most("stream: p99 write acked -> client <= 2x bare broadcast's",
                       stream_row.p99_us / stream_base.p99_us
                       if stream_row and stream_base and stream_row.p99_us and stream_base.p99_us else None,
                       2.0))
    out += _http_targets(ratio, at_least, at_most)
    rss = next((r for r in rows if r.name.startswith("engine RSS with")), None)
    out.append(at_most("engine RSS at 1M small values <= 2x raw dict's",
                       rss.ratio if rss else None, 2.0, rss.note if rss else ""))
    from metrics_overhead import off_name, on_name

    on, off = by.get(on_name()), by.get(off_name())
    cpu = [cpu_per_op_us(r.server_cpu, r.ops_per_s) for r in (on, off) if r is not None]
    cpu_note = f"engine CPU per op {cpu[0]:.1f} vs {cpu[1]:.1f} µs" if len(cpu) == 2 and all(cpu) else ""
    out.append(at_least("state::get with metrics on >= 0.95x off (in_memory, 64 in flight)",
                        ratio(on_name(), off_name()), 0.95, cpu_note))
    return out


def _http_targets(ratio: Any, at_least: Any, at_most: Any) -> list[TargetResult]:
    from http_serving import ceiling_name as granian
    from http_serving import fastapi_name as fastapi
    from http_serving import pyiii_name as pyiii

    return [
        at_least("HTTP via engine + worker >= 0.5x granian alone (64 conns)",
                 ratio(pyiii(64), granian(64)), 0.5, _detail("1 conn", ratio(pyiii(1), granian(1)))),
        at_least("HTTP via engine + worker >= 1x FastAPI + uvicorn (64 conns)",
                 ratio(pyiii(64), fastapi(64)), 1.0, _detail("1 conn", ratio(pyiii(1), fastapi(1)))),
        at_most("HTTP p50 at 1 conn <= 2x granian alone's", ratio(pyiii(1), granian(1), "p50_us"), 2.0),
    ]


def _detail(label: str, value: float | None) -> str:
    return "" if value is None else f"{label}: {value:.2f}x"


def print_targets(results: list[TargetResult]) -> None:
    print("\ntargets")
    for t in results:
        status = "not measured" if t.met is None else ("met" if t.met else "NOT MET")
        value = "-" if t.value is None else f"{t.value:.2f}{t.unit}"
        detail = f"  ({t.detail})" if t.detail else ""
        print(f"  {status:12} {value:>7}  {t.target}{detail}")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--only", action="append", default=[],
                        help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="measured seconds per row, in 4 alternating windows (default 2)")
    parser.add_argument("--values", type=int, default=1_000_000, help="values for the bulk section")
    parser.add_argument("--dump-values", type=int, default=1_000_000,
                        help="values for the dump section (pyiii state dump / restore)")
    parser.add_argument("--skip", action="append", default=[],
                        help="comma-separated sections not to run, e.g. --skip dump")
    args = parser.parse_args(argv)
    selected = {s.strip() for arg in args.only for s in arg.split(",") if s.strip()}
    skipped = {s.strip() for arg in args.skip for s in arg.split(",") if s.strip()}
    unknown = (selected | skipped) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; expected: {', '.join(SECTIONS)}")
    full = not selected and not skipped
    selected = (selected or set(SECTIONS)) - skipped

    started = time.time()
    load_before = os.getloadavg()
    progress(f"pyiii benchmarks: {', '.join(s for s in SECTIONS if s in selected)}; "
             f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f}")
    if load_before[0] > 0.5:
        progress("warning: the machine is busy (load average > 0.5); absolute numbers will be noisy")
    if "redis" in selected and shutil.which("redis-server") is None:
        progress("warning: redis-server is not installed (make redis); the redis-py rows are skipped")
        selected.discard("redis")
    rows: list[Row] = []
    if selected & CORE:
        rows += core_rows(selected, args.seconds)
    if "node" in selected:
        from node_sdk import node_rows

        rows += node_rows(args.seconds)
    if "workers" in selected:
        from many_workers import many_worker_rows

        rows += many_worker_rows(args.seconds)
    if "bulk" in selected:
        from bulk_load import bulk_rows

        rows += bulk_rows(args.seconds, args.values)
    if "queue" in selected:
        from queues import queue_rows

        rows += queue_rows(args.seconds)
    if "dump" in selected:
        from dump_restore import dump_restore_rows

        rows += dump_restore_rows(args.dump_values)
    if "rbac" in selected:
        from rbac_listener import rbac_rows

        rows += rbac_rows(args.seconds)
    if "stream" in selected:
        from streams import stream_rows

        rows += stream_rows(args.seconds)
    if "metrics" in selected:
        from metrics_overhead import metrics_rows

        rows += metrics_rows(args.seconds)
    if "http" in selected:
        from http_serving import http_rows

        rows += http_rows(args.seconds)

    elapsed = time.time() - started
    load_after = os.getloadavg()
    title = (
        f"pyiii benchmarks ({platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{elapsed:.0f} s, load average {load_before[0]:.2f} -> {load_after[0]:.2f})"
    )
    print_rows(title, rows)
    targets = evaluate(rows)
    print_targets(targets)
    name = "latest" if full else "only-" + "-".join(s for s in SECTIONS if s in selected)
    path = save(
        name,
        rows,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        elapsed_s=elapsed,
        seconds_per_row=args.seconds,
        python=platform.python_version(),
        cpus=os.cpu_count(),
        load_average=[load_before[0], load_after[0]],
        sections=[s for s in SECTIONS if s in selected],
        targets=[dataclasses.asdict(t) for t in targets],
    )
    progress(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
