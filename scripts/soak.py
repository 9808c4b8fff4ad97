#!/usr/bin/env python3
"""Soak test: many workers doing mixed state ops and cross-worker calls against one engine.

    scripts/soak.py --seconds 60 --workers 500        # `make soak`
    scripts/soak.py --seconds 10 --workers 100 --json out.json

Starts an engine (`python -m pyiii serve`, file_based state in a temp dir) on
a free loopback port, connects N pyiii SDK workers from this one process (one
uvloop loop), and runs, for the given time, a Poisson stream of operations per
worker: state get/set/update/delete/list, calls to another worker's function
(some of which call state from inside the handler), and increments of one
shared counter, while a few workers hold `state` triggers. Then it stops the
load, disconnects everyone and checks what a user would:

* no operation failed, no worker lost its connection, the engine logged no
  warning or error;
* the shared counter equals the number of acknowledged increments;
* the engine's tables are empty again (`engine::stats`: no connection,
  function, pending call, trigger or task left);
* the engine's resident memory (VmRSS) is flat after warm-up.

Prints a summary (and writes it as JSON with --json); exits 0 if every check
passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pyiii import connect
from pyiii.errors import IIIError
from pyiii.sdk.worker import Worker

CONFIG = """
workers:
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state}}
"""
SCOPES = 20  # bounded keyspace: memory must not grow with time
KEYS = 50
TRIGGER_WORKERS = 5  # workers holding a `state` trigger on scope soak-0
WARMUP_FRACTION = 0.25
# RSS may grow after warm-up by at most this much (allocator noise, not a trend).
RSS_SLACK_FRACTION = 0.10
RSS_SLACK_MIN_KIB = 6 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Engine:
    """The engine under test, as a subprocess whose console is collected."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        (workdir / "iii-config.yaml").write_text(CONFIG)
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyiii", "serve", "--port", str(self.port), "--config", "iii-config.yaml"],
            cwd=self.workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if "engine ready on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(20) or self.proc.poll() is not None:
            raise RuntimeError("engine did not start:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def problems(self) -> list[str]:
        return [
            line for line in self.lines if " WARNING " in line or " ERROR " in line or "Traceback" in line
        ]


class Load:
    """Counters shared by all worker loops."""

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}
        self.errors: list[str] = []
        self.error_count = 0
        self.latencies_ms: list[float] = []
        self.increments_acked = 0
        self.trigger_events = 0
        self.nested_calls = 0

    def fail(self, what: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(what)


async def worker_loop(
    index: int, worker: Worker, peers: int, rate: float, stop: asyncio.Event, load: Load, rng: random.Random
) -> None:
    while not stop.is_set():
        await asyncio.sleep(rng.expovariate(rate))
        if stop.is_set():
            return
        scope = f"soak-{rng.randrange(SCOPES)}"
        key = f"k{rng.randrange(KEYS)}"
        roll = rng.random()
        start = time.perf_counter()
        try:
            if roll < 0.25:
                op = "state::get"
                await worker.trigger(op, {"scope": scope, "key": key})
            elif roll < 0.40:
                op = "state::set"
                await worker.trigger(op, {"scope": scope, "key": key, "value": {"by": index, "t": start}})
            elif roll < 0.55:
                op = "state::update"
                ops = [
                    {"type": "increment", "path": "n", "by": 1},
                    {"type": "set", "path": "by", "value": index},
                ]
                await worker.trigger(op, {"scope": scope, "key": key, "ops": ops})
            elif roll < 0.60:
                op = "state::delete"
                await worker.trigger(op, {"scope": scope, "key": key})
            elif roll < 0.63:
                op = "state::list"
                await worker.trigger(op, {"scope": scope})
            elif roll < 0.68:
                op = "counter"
                ops = [{"type": "increment", "path": "n", "by": 1}]
                await worker.trigger("state::update", {"scope": "soak-total", "key": "n", "ops": ops})
                load.increments_acked += 1
            elif roll < 0.90:
                op = "call"
                peer = rng.randrange(peers)
                out = await worker.trigger(f"soak::w{peer}::echo", {"from": index, "x": roll})
                if not isinstance(out, dict) or out.get("x") != roll:
                    load.fail(f"soak::w{peer}::echo answered {out!r}")
            else:
                op = "nested call"
                peer = rng.randrange(peers)
                out = await worker.trigger(f"soak::w{peer}::touch", {"scope": scope, "key": key})
                if not isinstance(out, dict) or "n" not in out:
                    load.fail(f"soak::w{peer}::touch answered {out!r}")
        except IIIError as err:
            load.fail(f"{err.code}: {err.message}")
            continue
        load.latencies_ms.append((time.perf_counter() - start) * 1000)
        load.ops[op] = load.ops.get(op, 0) + 1


async def make_worker(index: int, url: str, load: Load) -> Worker:
    worker = await connect(url, reconnect=False, name=f"soak-{index}")

    def echo(data: dict[str, Any]) -> dict[str, Any]:
        return {"x": data.get("x"), "from": data.get("from")}

    async def touch(data: dict[str, Any]) -> Any:
        load.nested_calls += 1
        ops = [{"type": "increment", "path": "touched", "by": 1}]
        out = await worker.trigger("state::update", {"scope": data["scope"], "key": data["key"], "ops": ops})
        return {"n": out["new_value"].get("touched")}

    worker.register_function(f"soak::w{index}::echo", echo, inline=True)
    worker.register_function(f"soak::w{index}::touch", touch)
    if index < TRIGGER_WORKERS:

        async def on_state(_: Any) -> None:
            load.trigger_events += 1

        worker.register_function(f"soak::w{index}::on_state", on_state)
        worker.register_trigger(
            {"type": "state", "function_id": f"soak::w{index}::on_state", "config": {"scope": "soak-0"}}
        )
    return worker


async def soak(url: str, pid: int, seconds: float, workers: int, rate: float, seed: int) -> dict[str, Any]:
    load = Load()
    rng = random.Random(seed)
    t0 = time.monotonic()
    pool: list[Worker] = []
    for start in range(0, workers, 50):
        pool += await asyncio.gather(
            *(make_worker(i, url, load) for i in range(start, min(workers, start + 50)))
        )
    # Registrations carry no ack: one call to the last worker's function proves they all arrived.
    probe = await connect(url, reconnect=False, name="soak-probe")
    deadline = time.monotonic() + 30
    while True:
        try:
            await probe.trigger(f"soak::w{workers - 1}::echo", {"x": 0}, timeout_ms=2000)
            await probe.trigger("soak::w0::echo", {"x": 0}, timeout_ms=2000)
            break
        except IIIError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    connect_s = time.monotonic() - t0

    stop = asyncio.Event()
    loops = [
        asyncio.ensure_future(worker_loop(i, w, workers, rate, stop, load, random.Random(rng.random())))
        for i, w in enumerate(pool)
    ]
    samples: list[tuple[float, int]] = []
    begin = time.monotonic()
    while (elapsed := time.monotonic() - begin) < seconds:
        samples.append((elapsed, rss_kib(pid)))
        if any(not w.connected for w in pool):
            load.fail("a worker lost its connection to the engine")
            break
        await asyncio.sleep(min(1.0, max(0.0, seconds - elapsed)))
    stop.set()
    await asyncio.gather(*loops)
    run_s = time.monotonic() - begin
    samples.append((run_s, rss_kib(pid)))
    await asyncio.sleep(0.3)  # trigger deliveries still on the way

    counter = await probe.trigger("state::get", {"scope": "soak-total", "key": "n"})
    busy_stats = await probe.trigger("engine::stats", {})
    for w in pool:
        await w.shutdown()
    # Disconnects are processed as the sockets close: poll until the tables are empty.
    deadline = time.monotonic() + 10
    while True:
        stats = await probe.trigger("engine::stats", {})
        if (
            stats["connections"],
            stats["functions"],
            stats["pending"],
            stats["triggers"],
            stats["tasks"],
        ) == (
            1,
            0,
            0,
            0,
            0,
        ) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await probe.shutdown()

    warm = [kib for t, kib in samples if t >= seconds * WARMUP_FRACTION]
    rss_warm, rss_end, rss_peak = warm[0], samples[-1][1], max(warm)
    slack = max(RSS_SLACK_MIN_KIB, int(rss_warm * RSS_SLACK_FRACTION))
    lat = sorted(load.latencies_ms)
    total_ops = sum(load.ops.values())
    return {
        "workers": workers,
        "seconds": round(run_s, 1),
        "connect_seconds": round(connect_s, 1),
        "operations": total_ops,
        "ops_per_second": round(total_ops / run_s),
        "by_operation": dict(sorted(load.ops.items())),
        "nested_state_calls": load.nested_calls,
        "trigger_events": load.trigger_events,
        "latency_ms": {
            "p50": round(statistics.median(lat), 2) if lat else None,
            "p99": round(lat[int(len(lat) * 0.99)], 2) if lat else None,
            "max": round(lat[-1], 2) if lat else None,
        },
        "errors": load.error_count,
        "first_errors": load.errors,
        "counter": {"acknowledged_increments": load.increments_acked, "stored": (counter or {}).get("n")},
        "stats_all_connected": busy_stats,
        "stats_after": stats,
        "rss_kib": {
            "start": samples[0][1],
            "after_warmup": rss_warm,
            "end": rss_end,
            "peak_after_warmup": rss_peak,
            "allowed_growth": slack,
            "samples": [kib for _, kib in samples],
        },
    }


def judge(summary: dict[str, Any], engine_problems: list[str], exit_code: int) -> list[str]:
    """The checks that failed (empty: all passed)."""
    failed = []
    if summary["errors"]:
        failed.append(f"{summary['errors']} operations failed, e.g. {summary['first_errors'][:3]}")
    if summary["operations"] == 0:
        failed.append("no operation completed")
    counter = summary["counter"]
    if counter["stored"] != counter["acknowledged_increments"]:
        failed.append(
            f"shared counter is {counter['stored']}, {counter['acknowledged_increments']} increments acked"
        )
    after = summary["stats_after"]
    leftovers = {
        k: after[k] for k in ("functions", "pending", "triggers", "tasks", "calling", "serving") if after[k]
    }
    if after["connections"] != 1 or leftovers:
        failed.append(f"engine tables not empty after everyone left: {after}")
    rss = summary["rss_kib"]
    if rss["end"] > rss["after_warmup"] + rss["allowed_growth"]:
        failed.append(f"RSS grew from {rss['after_warmup']} KiB to {rss['end']} KiB after warm-up")
    if engine_problems:
        failed.append(f"engine logged {len(engine_problems)} warnings/errors, e.g. {engine_problems[:3]}")
    if exit_code != 0:
        failed.append(f"engine exited {exit_code} on SIGTERM")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    parser.add_argument("--workers", type=int, default=500, help="worker connections (default 500)")
    parser.add_argument(
        "--rate", type=float, default=8.0, help="operations per second per worker (default 8)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pyiii-soak-") as tmp:
        engine = Engine(Path(tmp))
        engine.start()
        assert engine.proc is not None
        try:
            run = soak(engine.url, engine.proc.pid, args.seconds, args.workers, args.rate, args.seed)
            try:
                import uvloop
            except ImportError:  # pragma: no cover
                summary = asyncio.run(run)
            else:
                summary = uvloop.run(run)
        finally:
            exit_code = engine.stop()
        problems = engine.problems()
    failed = judge(summary, problems, exit_code)
    summary["engine_exit_code"] = exit_code
    summary["engine_warnings"] = problems[:20]
    summary["failed"] = failed
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    rss = summary["rss_kib"]
    print(
        f"soak: {summary['workers']} workers, {summary['seconds']} s, {summary['operations']} operations "
        f"({summary['ops_per_second']}/s), {summary['nested_state_calls']} nested state calls, "
        f"{summary['trigger_events']} trigger events, {summary['errors']} errors\n"
        f"latency ms: {summary['latency_ms']}\n"
        f"engine RSS: {rss['start'] // 1024} MiB at start, {rss['after_warmup'] // 1024} MiB after warm-up, "
        f"{rss['end'] // 1024} MiB at the end (peak {rss['peak_after_warmup'] // 1024} MiB)\n"
        f"all connected: {summary['stats_all_connected']}\nafter: {summary['stats_after']}"
    )
    for line in failed:
        print(f"FAILED: {line}")
    print("soak: " + ("FAILED" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
