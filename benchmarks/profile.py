"""Where the engine's time goes: profile an engine while driving one state row.

    python benchmarks/profile.py                          # state::get in_memory, 64 in flight, py-spy
    python benchmarks/profile.py --op set --store file_based
    python benchmarks/profile.py --op set --store redis   # the redis adapter (private redis-server)
    python benchmarks/profile.py --native                 # C frames too (pauses the engine per sample)
    python benchmarks/profile.py --tool cprofile          # no py-spy: cProfile inside the engine

py-spy (installed into the venv with pip when missing) attaches to a
running engine subprocess and samples it while the load generator (this
process, uvloop) drives the row; samples are aggregated by function and
the top entries by own time (the function at the top of the stack) and by
total time (anywhere on the stack) are printed, as shares of the samples
where the engine was working. Without --native, whatever uvloop and picows
do in C between two Python callbacks (epoll, recv, frame parsing) is charged
to ``Runner.run``; with --native those C frames show, but py-spy then stops
the engine for every sample, which loses samples and inflates syscalls.
When ``perf`` is installed, the same window is also sampled by ``perf
record`` and the engine's CPU is split by shared object (interpreter, kernel,
msgspec, picows, ...), which needs no pausing and sees kernel time. If py-spy cannot be
installed or cannot attach (ptrace not permitted), the engine runs under
``python -m cProfile`` instead and pstats' own time (tottime) is printed;
that profile covers the whole engine run, warm-up included.
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_times, engine, free_port, measure, process, run
from state import CONFIGS, seed, state_calls

VENV_BIN = Path(sys.executable).parent
PERF_SYMBOLS = 25


def py_spy() -> str | None:
    """Path of a py-spy that can attach here, installing it with pip if needed."""
    exe = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if exe is None:
        print("py-spy not found; installing it into the venv (pip install py-spy)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False)
        exe = shutil.which("py-spy", path=str(VENV_BIN))
    if exe is None:
        return None
    probe = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.3)
        dump = subprocess.run(
            [exe, "dump", "--pid", str(probe.pid)], capture_output=True, text=True, timeout=20
        )
    finally:
        probe.kill()
        probe.wait()
    if dump.returncode != 0:
        print(f"py-spy cannot attach here: {dump.stderr.strip()[:300]}", file=sys.stderr)
        return None
    return exe


async def drive(
    url: str, op: str, inflight: int, seconds: float, started: asyncio.Event | None = None
) -> tuple[float, float, float]:
    from pyiii import connect

    worker = await connect(url, name="bench-profile")
    try:
        await seed(worker)
        call = state_calls(worker)[f"state::{op}"]
        await measure(call, inflight=inflight, seconds=0.5, warmup=0.2)
        if started is not None:
            started.set()
        return await measure(call, inflight=inflight, seconds=seconds, warmup=0.0)
    finally:
        await worker.shutdown()


def _frame_name(frame: str) -> str:
    # "on_ws_frame (pyiii/engine/transport.py:88)" -> keep the path from the package on.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


# Leaf frames that mean "waiting", not working. py-spy drops idle samples
# itself, except with --native, where they show up as these calls.
IDLE_LEAVES = ("epoll_wait", "epoll_pwait", "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait",
               "sem_timedwait", "__futex_abstimed_wait", "futex_wait", "select", "poll")


def print_top(stacks: Counter[str], top: int, header: str) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    idle: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1].split(" (")[0] in IDLE_LEAVES:
            idle[frames[-1]] += count
            continue
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    total = sum(own.values())
    print(header)
    waiting = ", ".join(f"{name} {n}" for name, n in idle.most_common(4))
    print(f"{total} busy samples (all threads); left out as waiting: {sum(idle.values())}"
          + (f" ({waiting})" if waiting else "") + "\npercentages are of the busy samples\n")
    print(f"top {top} by own time")
    print(f"{'own %':>6} {'total %':>7}  function")
    for name, count in own.most_common(top):
        print(f"{100 * count / total:6.1f} {100 * inclusive[name] / total:7.1f}  {name}")
    print(f"\ntop {min(top, 15)} by total time (on the stack)")
    for name, count in inclusive.most_common(min(top, 15)):
        print(f"{100 * count / total:6.1f} {100 * own[name] / total:7.1f}  {name}")


def perf_cmd(pid: int, seconds: int, out: Path) -> list[str] | None:
    """``perf record`` for the same window, when perf is installed."""
    exe = shutil.which("perf")
    if exe is None:
        return None
    return [exe, "record", "-F", "999", "-p", str(pid), "-o", str(out), "--", "sleep", str(seconds)]


def print_perf(data: Path) -> None:
    """The engine's CPU split by shared object (interpreter, kernel, msgspec, picows, ...)."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=False,
    )
    lines = [ln.strip() for ln in report.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    if report.returncode != 0 or not lines:
        print(f"\nperf report failed: {report.stderr.strip()[-300:]}")
        return
    print("\nperf: the engine's CPU by shared object (kernel = syscalls, TCP loopback, scheduling)")
    for line in lines[:8]:
        print(f"  {line}")
    symbols = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso,sym", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=False,
    )
    top = [ln.strip() for ln in symbols.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    if top:
        print("perf: top symbols")
        for line in top[:PERF_SYMBOLS]:
            print(f"  {line}")


@contextmanager
def store_config(store: str) -> Iterator[str]:
    """The engine config of ``store``; for ``redis``, with a private redis-server running."""
    if store != "redis":
        yield CONFIGS[store]
        return
    from redis_baseline import redis_server
    from run import REDIS_CONFIG

    with redis_server() as server:
        yield REDIS_CONFIG.format(url=f"redis://127.0.0.1:{server.port}")


def with_py_spy(exe: str, args: argparse.Namespace) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    window = int(args.seconds)
    with (
        tempfile.TemporaryDirectory() as tmp,
        store_config(args.store) as config,
        engine(port, Path(tmp), config) as eng,
    ):
        out, perf_data = Path(tmp) / "py-spy.txt", Path(tmp) / "perf.data"
        cmd = [exe, "record", "--pid", str(eng.pid), "--duration", str(window),
               "--rate", str(args.rate), "--format", "raw", "--function", "--output", str(out)]
        # --nonblocking (no pausing the engine to sample it) cannot unwind C stacks.
        cmd.append("--native" if args.native else "--nonblocking")
        perf = None if args.no_perf else perf_cmd(eng.pid, window, perf_data)

        async def main() -> tuple[tuple[float, float, float], float, tuple[float, float]]:
            started = asyncio.Event()
            # Keep the load on until py-spy (which takes a moment to attach) is done.
            task = asyncio.create_task(drive(url, args.op, args.inflight, args.seconds + 1.5, started))
            await started.wait()
            (u0, s0), t0 = cpu_times(eng.pid), time.perf_counter()
            spy = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            perf_proc = None
            if perf is not None:
                perf_proc = await asyncio.create_subprocess_exec(
                    *perf, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                )
            _, err = await spy.communicate()
            if perf_proc is not None:
                await perf_proc.wait()
            (u1, s1), elapsed = cpu_times(eng.pid), time.perf_counter() - t0
            result = await task
            if spy.returncode != 0 or not out.exists():
                raise RuntimeError(f"py-spy record failed: {err.decode()[-1000:]}")
            return result, elapsed, ((u1 - u0) / elapsed, (s1 - s0) / elapsed)

        (ops, p50, p99), _, (user, system) = run(main())  # type: ignore[misc]
        stacks: Counter[str] = Counter()
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                stacks[stack] += int(count)
        print_top(
            stacks,
            args.top,
            f"py-spy{' --native' if args.native else ''}, engine running state::{args.op} {args.store} "
            f"at {args.inflight} in flight for {window} s: {ops:.0f} ops/s, p50 {p50:.0f} µs, "
            f"p99 {p99:.0f} µs\nengine CPU: {user + system:.2f} cores = {1e6 * (user + system) / ops:.1f} µs "
            f"per op (user {1e6 * user / ops:.1f}, system {1e6 * system / ops:.1f})",
        )
        if perf is not None and perf_data.exists():
            print_perf(perf_data)


def with_cprofile(args: argparse.Namespace) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp, store_config(args.store) as config:
        workdir = Path(tmp)
        (workdir / "iii-config.yaml").write_text(config)
        stats = workdir / "engine.prof"
        cmd = [sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "pyiii", "serve",
               "--port", str(port), "--log-level", "warning", "--config", str(workdir / "iii-config.yaml")]
        with process(cmd, "engine ready on", cwd=workdir):
            ops, p50, p99 = run(drive(url, args.op, args.inflight, args.seconds))  # type: ignore[misc]
        # The engine stops cleanly on SIGTERM, and cProfile then writes its stats.
        deadline = time.time() + 10
        while not stats.exists() and time.time() < deadline:
            time.sleep(0.1)
        print(f"cProfile, engine running state::{args.op} {args.store} at {args.inflight} in flight "
              f"for {args.seconds:g} s (profile covers the whole engine run): {ops:.0f} ops/s, "
              f"p50 {p50:.0f} µs, p99 {p99:.0f} µs; cProfile "
              "slows the engine, so the throughput is lower than unprofiled")
        print(f"top {args.top} by own time (tottime)")
        pstats.Stats(str(stats)).sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--op", choices=("get", "set", "update"), default="get")
    parser.add_argument("--store", choices=(*CONFIGS, "redis"), default="in_memory",
                        help="redis: the redis adapter, on a private redis-server started here")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true",
                        help="py-spy: include C/Cython frames (syscalls, picows, msgspec, uvloop); this "
                        "pauses the engine for every sample, which skews the shares (see README)")
    parser.add_argument("--tool", choices=("py-spy", "cprofile"), default="py-spy")
    parser.add_argument("--no-perf", action="store_true", help="skip the perf breakdown")
    args = parser.parse_args()
    exe = py_spy() if args.tool == "py-spy" else None
    if exe is None:
        if args.tool == "py-spy":
            print("falling back to cProfile", file=sys.stderr)
        with_cprofile(args)
        return
    with_py_spy(exe, args)


if __name__ == "__main__":
    main()
