"""HTTP latency of two (or more) checkouts at 1 in flight, paired request by request.

    python benchmarks/http_paired.py /path/to/main /path/to/branch [--rounds 6000]

Each checkout gets its own engine (``pyiii serve`` with iii-http) and echo worker,
the http section's (``http_serving.py``), run by this venv's Python with
``PYTHONPATH=<checkout>/src``. One keep-alive connection per engine; every round
sends one ``POST /echo`` to each engine in turn, in a shuffled order, and times it.
On a shared machine a window-by-window comparison (``run.py``) moves by more
than the difference between two versions; here background load hits both
within the same millisecond, and the median of the per-round differences is
the figure to read. The client is Python (blocking sockets), so its own time is
in every latency alike: compare the checkouts, not these numbers with wrk's.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, free_port, process
from http_serving import ENGINE_CONFIG, PATH, WORKER, wait_answers
from wrk import BODY

REQUEST = (
    f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n{BODY}"
).encode()


@dataclass
class Target:
    checkout: str
    sock: socket.socket
    pids: list[int]
    cpu0: float
    latencies_us: list[float] = field(default_factory=list)


def one_request(sock: socket.socket) -> None:
    """Send the request and read one whole response (it has a Content-Length)."""
    sock.sendall(REQUEST)
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the engine closed the connection")
        buf += chunk
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            break
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:200]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += sock.recv(65536)


def start(stack: ExitStack, checkout: str) -> Target:
    env = {"PYTHONPATH": f"{checkout}/src"}
    found = subprocess.run(
        [sys.executable, "-c", "import pyiii; print(pyiii.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not found.startswith(str(Path(checkout).resolve())):
        raise SystemExit(f"{checkout}: pyiii comes from {found}, not from that checkout")
    port, ws_port = free_port(), free_port()
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    (tmp / "iii-config.yaml").write_text(ENGINE_CONFIG.format(port=port))
    serve = [sys.executable, "-m", "pyiii", "serve", "--port", str(ws_port), "--log-level", "warning"]
    serve += ["--config", str(tmp / "iii-config.yaml")]
    eng = stack.enter_context(process(serve, "engine ready on", cwd=tmp, env=env))
    url = f"ws://127.0.0.1:{ws_port}"
    worker = stack.enter_context(process([sys.executable, "-c", WORKER, url], "http worker ready", env=env))
    wait_answers(port)
    sock = socket.create_connection(("127.0.0.1", port))
    stack.callback(sock.close)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(500):  # warm-up
        one_request(sock)
    pids = [eng.pid, worker.pid]
    return Target(checkout, sock, pids, sum(cpu_seconds(p) for p in pids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("checkouts", nargs="+", help="repository checkouts (their src/ is imported)")
    parser.add_argument("--rounds", type=int, default=6000)
    args = parser.parse_args()
    with ExitStack() as stack:
        targets = [start(stack, c) for c in args.checkouts]
        load = os.getloadavg()[0]
        order = list(range(len(targets)))
        for _ in range(args.rounds):
            random.shuffle(order)
            for i in order:
                t = targets[i]
                began = time.perf_counter_ns()
                one_request(t.sock)
                t.latencies_us.append((time.perf_counter_ns() - began) / 1000)
        print(f"{args.rounds} rounds, load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
        first = targets[0]
        for t in targets:
            q = statistics.quantiles(t.latencies_us, n=100)
            cpu = (sum(cpu_seconds(p) for p in t.pids) - t.cpu0) / args.rounds
            line = f"{t.checkout}: p50 {q[49]:.0f} µs, p90 {q[89]:.0f}, p99 {q[98]:.0f}"
            line += f"; srv {1e6 * cpu:.0f} µs/req"
            if t is not first:
                diffs = [a - b for a, b in zip(t.latencies_us, first.latencies_us, strict=True)]
                line += f"; paired difference vs the first: median {statistics.median(diffs):+.1f} µs"
            print(line)


if __name__ == "__main__":
    main()
