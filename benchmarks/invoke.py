"""Cross-worker trigger: worker A -> engine -> worker B -> engine -> worker A.

A is the load generator (pyiii SDK client), B an echo worker in its own
process. Same payload as the ceiling (transport_ceiling.py); the ratio says
what routing through the engine costs.

    python benchmarks/invoke.py        # = run.py --only invoke
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import process, section_main

ECHO_FUNCTION = "bench::echo"

ECHO_WORKER = """
import asyncio, sys
import uvloop
from pyiii import connect

async def main():
    w = await connect(sys.argv[1], name="bench-echo")
    w.register_function("bench::echo", lambda payload: payload, inline=True)
    # Registration has no ack: wait until a call through the engine comes back.
    probe = await connect(sys.argv[1], name="bench-probe")
    for _ in range(100):
        try:
            await probe.trigger("bench::echo", {}, timeout_ms=500)
            break
        except Exception:
            await asyncio.sleep(0.05)
    await probe.shutdown()
    print("echo worker ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def echo_worker(url: str):  # type: ignore[no-untyped-def]
    return process([sys.executable, "-c", ECHO_WORKER, url], "echo worker ready")


def main() -> None:
    section_main("invoke", __doc__)


if __name__ == "__main__":
    main()
