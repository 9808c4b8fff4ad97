"""What every benchmark script shares: processes, load loops, the table.

Absolute numbers on a shared 2-core machine are noise; rows are measured
against a baseline in the same run, and ``measure_interleaved`` alternates
short windows of a row and its baseline so that both see the same background
load.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

Call = Callable[[int], Awaitable[object]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(
    args: list[str],
    ready: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[subprocess.Popen[str]]:
    """Run a helper process until the block ends; wait for ``ready`` on its output."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    seen = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            del lines[:-200]
            if ready in line:
                seen.set()
        seen.set()

    threading.Thread(target=pump, daemon=True).start()
    if not seen.wait(timeout) or proc.poll() is not None:
        proc.kill()
        raise RuntimeError(f"{args} did not start:\n{''.join(lines[-30:])}")
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def engine(port: int, workdir: Path, config: str | None = None) -> contextmanager[subprocess.Popen[str]]:  # type: ignore[type-arg]
    """A pyiii engine subprocess (log level warning, so logging costs nothing)."""
    args = [sys.executable, "-m", "pyiii", "serve", "--port", str(port), "--log-level", "warning"]
    if config is not None:
        path = workdir / "iii-config.yaml"
        path.write_text(config)
        args += ["--config", str(path)]
    return process(args, "engine ready on", cwd=workdir)


# --------------------------------------------------------------------------- /proc


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by process ``pid`` (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    return sum(cpu_times(pid))


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kb = line.split()[:2]
                out[name.rstrip(":")] = int(kb) / 1024
    return out


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    name: str
    ops_per_s: float | None
    p50_us: float | None
    p99_us: float | None
    baseline: str | None = None
    ratio: float | None = None
    # What ``ratio`` compares: "ops/s" (row / baseline, higher is better) or
    # "RSS" (row / baseline, lower is better).
    ratio_of: str = "ops/s"
    section: str = ""
    # CPU cores kept busy during the measured windows: the server side
    # (engine, echo server, redis-server, echo worker) and the load generator.
    server_cpu: float | None = None
    client_cpu: float | None = None
    note: str = ""
    extra: dict[str, float | str] = field(default_factory=dict)


@dataclass
class Measured:
    ops_per_s: float
    p50_us: float
    p99_us: float
    server_cpu: float
    client_cpu: float

    def row(self, name: str, section: str, note: str = "") -> Row:
        return Row(
            name,
            self.ops_per_s,
            self.p50_us,
            self.p99_us,
            section=section,
            server_cpu=self.server_cpu,
            client_cpu=self.client_cpu,
            note=note,
        )


@dataclass
class Target:
    """Something to measure: a call, and the server processes whose CPU it uses."""

    label: str
    call: Call
    pids: Sequence[int] = ()
    inflight: int | None = None  # overrides measure_interleaved's ``inflight``


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    count: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0


async def _window(
    call: Call, inflight: int, seconds: float, latencies: list[float] | None, counter: list[int]
) -> tuple[int, float]:
    """``inflight`` loops calling ``call`` for ``seconds``; (calls completed, elapsed)."""
    start = time.perf_counter()
    stop_at = start + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        perf = time.perf_counter
        while True:
            now = perf()
            if now >= stop_at:
                return
            counter[0] += 1
            await call(counter[0])
            done += 1
            if latencies is not None:
                latencies.append(perf() - now)

    await asyncio.gather(*(loop() for _ in range(inflight)))
    return done, time.perf_counter() - start


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def measure_interleaved(
    targets: Sequence[Target],
    *,
    inflight: int,
    seconds: float = 2.0,
    rounds: int = 4,
    warmup: float = 0.3,
) -> dict[str, Measured]:
    """Measure each target for ``seconds`` in total, in ``rounds`` alternating windows.

    Every target is warmed up first, then the windows run A B C, C B A, ...
    so a burst of background load hits all targets alike instead of skewing
    whichever one happened to run during it.
    """
    counter = [0]
    for t in targets:
        await _window(t.call, t.inflight or inflight, warmup, None, counter)
    tallies = {t.label: _Tally() for t in targets}
    order = list(targets)
    for r in range(rounds):
        for t in order if r % 2 == 0 else reversed(order):
            tally = tallies[t.label]
            cpu0 = [cpu_seconds(p) for p in t.pids]
            client0 = time.process_time()
            n, elapsed = await _window(
                t.call, t.inflight or inflight, seconds / rounds, tally.latencies, counter
            )
            tally.client_cpu += time.process_time() - client0
            tally.server_cpu += sum(cpu_seconds(p) - c for p, c in zip(t.pids, cpu0, strict=True))
            tally.count += n
            tally.elapsed += elapsed
    out = {}
    for label, tally in tallies.items():
        lat = sorted(tally.latencies)
        out[label] = Measured(
            tally.count / tally.elapsed,
            _percentile(lat, 0.5) * 1e6,
            _percentile(lat, 0.99) * 1e6,
            tally.server_cpu / tally.elapsed,
            tally.client_cpu / tally.elapsed,
        )
    return out


async def measure(
    call: Call, *, inflight: int, seconds: float = 2.0, warmup: float = 0.3
) -> tuple[float, float, float]:
    """Run ``call`` with ``inflight`` concurrent loops; (ops/s, p50 µs, p99 µs)."""
    m = (
        await measure_interleaved(
            [Target("x", call)], inflight=inflight, seconds=seconds, rounds=1, warmup=warmup
        )
    )["x"]
    return m.ops_per_s, m.p50_us, m.p99_us


# --------------------------------------------------------------------------- output


def _num(value: float | None, width: int, fmt: str = ".0f") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}{fmt}}"


def cpu_per_op_us(cores: float | None, ops_per_s: float | None) -> float | None:
    """CPU µs spent per operation, from cores busy and throughput."""
    return cores / ops_per_s * 1e6 if cores is not None and ops_per_s else None


def _cpu(us: float | None) -> str:
    if us is not None and us >= 10_000:
        return f"{us / 1000:4.0f}ms"
    return _num(us, 6, ".1f")


def format_row(r: Row) -> str:
    if r.ratio is not None:
        ratio = f"{r.ratio:.2f}x {r.ratio_of} of {r.baseline}"
    elif r.baseline is None:
        ratio = "(baseline)"
    else:
        ratio = f"- vs {r.baseline}"
    ops = _num(r.ops_per_s, 9, ".0f" if r.ops_per_s is None or r.ops_per_s >= 100 else ".2f")
    srv, cli = (_cpu(cpu_per_op_us(c, r.ops_per_s)) for c in (r.server_cpu, r.client_cpu))
    note = f"  [{r.note}]" if r.note else ""
    return f"{r.name:62} {ops} {_num(r.p50_us, 8)} {_num(r.p99_us, 8)} {srv} {cli}  {ratio}{note}"


HEADER = f"{'row':62} {'ops/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'srv':>6} {'cli':>6}  ratio"
LEGEND = (
    "srv / cli = CPU µs per op spent by the server processes (engine, echo server, echo worker,\n"
    "redis-server) / by the load generator; CPU time per op is much less sensitive to other load on\n"
    "the machine than ops/s and latency are"
)


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(LEGEND)
    print(HEADER)
    section = None
    for r in rows:
        if r.section != section and r.section:
            print(f"-- {r.section}")
            section = r.section
        print(format_row(r))


def save(name: str, rows: list[Row], **meta: object) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    dicts = [
        {
            **asdict(r),
            "server_cpu_us_per_op": cpu_per_op_us(r.server_cpu, r.ops_per_s),
            "client_cpu_us_per_op": cpu_per_op_us(r.client_cpu, r.ops_per_s),
        }
        for r in rows
    ]
    payload: object = dicts if not meta else {**meta, "rows": dicts}
    path.write_text(json.dumps(payload, indent=2))
    return path


def with_ratio(row: Row, base: Row) -> Row:
    row.baseline = base.name
    row.ratio = row.ops_per_s / base.ops_per_s if row.ops_per_s and base.ops_per_s else None
    return row


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def run(coro: Awaitable[object]) -> object:
    """Run a coroutine on uvloop, as the engine does."""
    import uvloop

    return uvloop.run(coro)  # type: ignore[arg-type]


def section_main(
    only: str,
    description: str | None,
    *,
    serve: Callable[[int], Awaitable[None]] | None = None,
    serve_help: str = "",
) -> None:
    """``python benchmarks/<file>.py [--seconds N]``: that file's section of ``run.py`` alone.

    With ``serve``, ``--serve PORT`` runs only that server (for a comparison
    driven from elsewhere).
    """
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    if serve is not None:
        parser.add_argument("--serve", type=int, help=serve_help)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if serve is not None and args.serve:
        run(serve(args.serve))
        return
    import run as runner

    runner.main(["--only", only, "--seconds", str(args.seconds)])
