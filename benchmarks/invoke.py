"""Routed calls: client -> engine -> echo worker -> engine -> client.

Same client and payload as the ceiling (transport_ceiling.py); the ratio
says what routing through the engine costs.

    python benchmarks/invoke.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, engine, free_port, print_rows, process, run, save, with_ratio
from transport_ceiling import ceiling_rows, client_rows

ECHO_WORKER = """
import asyncio, sys
import uvloop
from pyiii import connect

async def main():
    w = await connect(sys.argv[1], name="bench-echo")
    w.register_function("bench::echo", lambda payload: payload, inline=True)
    await asyncio.sleep(0.2)
    print("echo worker ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def routed_rows(seconds: float) -> list[Row]:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        engine(port, Path(tmp)),
        process([sys.executable, "-c", ECHO_WORKER, url], "echo worker ready"),
    ):
        rows = run(client_rows(url, "bench::echo", "routed: engine -> echo worker", seconds))
    assert isinstance(rows, list)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    ceiling = ceiling_rows(args.seconds)
    routed = routed_rows(args.seconds)
    rows = ceiling + [with_ratio(r, c) for r, c in zip(routed, ceiling, strict=True)]
    print_rows("cross-worker invoke vs transport ceiling", rows)
    save("invoke", rows)


if __name__ == "__main__":
    main()
