"""What every benchmark script shares: processes, load loops, the table.

Absolute numbers on a shared 2-core machine are noise; each script measures
its baseline in the same run and prints ratios against it.
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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


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


@dataclass
class Row:
    name: str
    ops_per_s: float
    p50_us: float
    p99_us: float
    baseline: str | None = None
    ratio: float | None = None
    extra: dict[str, float | str] = field(default_factory=dict)


async def measure(
    call: Callable[[int], Awaitable[object]], *, inflight: int, seconds: float = 2.0, warmup: float = 0.3
) -> tuple[float, float, float]:
    """Run ``call`` with ``inflight`` concurrent loops; (ops/s, p50 µs, p99 µs)."""
    latencies: list[float] = []
    stop_at = 0.0
    recording = False
    counter = 0

    async def loop() -> None:
        nonlocal counter
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            counter += 1
            await call(counter)
            if recording:
                latencies.append(time.perf_counter() - now)

    stop_at = time.perf_counter() + warmup
    await asyncio.gather(*(loop() for _ in range(inflight)))
    recording = True
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(loop() for _ in range(inflight)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return n / elapsed, latencies[n // 2] * 1e6, latencies[min(n - 1, int(n * 0.99))] * 1e6


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"{'row':58} {'ops/s':>10} {'p50 µs':>9} {'p99 µs':>9}  ratio")
    for r in rows:
        ratio = f"{r.ratio:.2f}x {r.baseline}" if r.ratio is not None else "(baseline)"
        print(f"{r.name:58} {r.ops_per_s:10.0f} {r.p50_us:9.0f} {r.p99_us:9.0f}  {ratio}")


def save(name: str, rows: list[Row]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return path


def with_ratio(row: Row, base: Row) -> Row:
    row.baseline = base.name
    row.ratio = row.ops_per_s / base.ops_per_s if base.ops_per_s else None
    return row


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def run(coro: Awaitable[object]) -> object:
    """Run a coroutine on uvloop, as the engine does."""
    import uvloop

    return uvloop.run(coro)  # type: ignore[arg-type]
