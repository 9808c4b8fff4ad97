"""The engine's own CPU per state call, without sockets: frame in through ``Engine.handle``, reply out.

    python benchmarks/inproc.py                       # get, set, update on in_memory
    python benchmarks/inproc.py --op update --profile # cProfile's own-time top of that loop

At 1 in flight the engine's CPU per call is its Python plus the transport's
syscalls and wake-ups; on a shared machine the second swings by tens of
microseconds between runs, hiding changes of one or two. This drives the same
frames the pyiii SDK sends through an in-process engine with the State module
(in_memory) and prints the best of 7 rounds, which is steady to ~0.1 µs: use it
to compare two versions of the Python path (``PYTHONPATH=<other checkout>/src``),
and ``run.py`` for what a caller sees.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# This directory holds profile.py, which would shadow the stdlib module cProfile imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402

from pyiii.engine import builtins  # noqa: E402
from pyiii.engine.connection import Connection  # noqa: E402
from pyiii.engine.engine import Engine  # noqa: E402
from pyiii.modules.state.config import StateConfig  # noqa: E402
from pyiii.modules.state.module import StateModule  # noqa: E402

VALUE = {"id": "u1", "name": "Alice", "email": "alice@example.com", "loginCount": 0}  # as state.py
INCREMENT = [{"type": "increment", "path": "loginCount", "by": 1}]
KEYS = 100


def frame(op: str, n: int) -> bytes:
    data: dict[str, Any] = {"scope": "bench", "key": f"k{n % KEYS}"}
    if op == "set":
        data["value"] = VALUE
    elif op == "update":
        data["ops"] = INCREMENT
    inv = {"type": "invokefunction", "invocation_id": str(uuid.uuid4()), "function_id": f"state::{op}"}
    return msgspec.json.encode({**inv, "data": data})


async def measure(ops: list[str], calls: int, profile: bool) -> None:
    engine = Engine()
    builtins.install(engine)
    module = StateModule(StateConfig())
    await module.start(engine)
    replies: list[bytes] = []
    conn = Connection(replies.append, lambda code, reason: None)
    engine.connect(conn)
    for n in range(KEYS):
        engine.handle(conn, frame("set", n))
    for op in ops:
        frames = [frame(op, n) for n in range(calls)]
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            for f in frames:
                engine.handle(conn, f)
            prof.disable()
            print(f"state::{op}: cProfile, {calls} calls")
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            continue
        best = float("inf")
        for _ in range(7):
            del replies[:]
            start = time.process_time()
            for f in frames:
                engine.handle(conn, f)
            best = min(best, (time.process_time() - start) / calls)
            assert len(replies) == calls and b'"result"' in replies[-1], replies[-1:]
        print(f"state::{op} in_memory: {best * 1e6:.2f} µs CPU per call (best of 7 rounds of {calls})")
    await module.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--op", choices=["get", "set", "update"], action="append")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import uvloop

    uvloop.run(measure(args.op or ["get", "set", "update"], args.calls, args.profile))


if __name__ == "__main__":
    main()
