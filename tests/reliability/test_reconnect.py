"""Workers come back by themselves after the engine restarts (crash or SIGTERM).

pyiii SDK workers and the official SDKs (Node 0.9 and 0.22, Python 0.11 and 0.25) register a
function and a `state` trigger once; after each restart, with no user code
involved, their functions answer again and their triggers fire again.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from relkit import SdkProc, require_compat

from pyiii import connect
from pyiii.errors import IIIError
from pyiii.sdk.worker import Worker

OFFICIAL = ("node-0.9", "node-0.22", "py-0.11.6", "py-0.25.0")


def prefix(version: str) -> str:
    return version.replace("node-", "n").replace("py-", "p").replace(".", "").replace("-", "")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> float:
    """Retry ``check`` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - start
        except IIIError:
            pass
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.2)


async def test_workers_of_every_sdk_resume_after_engine_restarts(make_engine_proc: Any) -> None:
    require_compat(*OFFICIAL)
    eng = make_engine_proc().start()
    env = {"III_URL": eng.url}
    procs: dict[str, SdkProc] = {}
    for version in OFFICIAL:
        p = prefix(version)
        procs[f"{p}-serve"] = await SdkProc.start(version, "serve-add", p, env=env)
        procs[f"{p}-trigger"] = await SdkProc.start(version, "state-trigger", f"{p}::on_state", "rc", env=env)

    # The pyiii SDK worker lives in this process.
    py_events: list[dict[str, Any]] = []
    py_worker = await connect(eng.url)

    async def on_state(event: dict[str, Any]) -> None:
        py_events.append(event)

    py_worker.register_function("py::add", lambda d: {"c": d["a"] + d["b"]}, inline=True)
    py_worker.register_function("py::on_state", on_state)
    py_worker.register_trigger({"type": "state", "function_id": "py::on_state", "config": {"scope": "rc"}})
    try:
        for proc in procs.values():
            await proc.wait_for(lambda m: m.get("ready") is True, 45)

        timings: list[str] = []
        for round_, how in enumerate(("kill -9", "SIGTERM", "kill -9")):
            if how == "kill -9":
                eng.kill()
            else:
                assert eng.stop(signal.SIGTERM) == 0
            await asyncio.sleep(0.3)
            eng.start()
            took = await check_everything(eng.url, procs, py_events, round_)
            timings.append(f"after {how}: all workers back in {took:.1f}s")
        print("\n" + "\n".join(timings))
    finally:
        await py_worker.shutdown()
        for proc in procs.values():
            await proc.stop()


async def check_everything(
    url: str, procs: dict[str, SdkProc], py_events: list[dict[str, Any]], round_: int
) -> float:
    client: Worker = await connect(url, reconnect=False)
    start = time.monotonic()
    try:
        # Functions: each SDK's worker answers again.
        for fid in [f"{prefix(v)}::add" for v in OFFICIAL] + ["py::add"]:

            async def answers(fid: str = fid) -> bool:
                out = await client.trigger(fid, {"a": round_, "b": 1}, timeout_ms=2000)
                return bool(out == {"c": round_ + 1})

            await eventually(answers, f"{fid} after restart {round_ + 1}")

        # Triggers: a write reaches every trigger worker. Its registration is
        # replayed on reconnect, so it may land a moment after the function.
        watchers: dict[str, Callable[[str], bool]] = {
            name: (lambda key, p=proc: any(m.get("event", {}).get("key") == key for m in p.messages))
            for name, proc in procs.items()
            if name.endswith("-trigger")
        }
        watchers["pyiii"] = lambda key: any(e.get("key") == key for e in py_events)
        for name, seen in watchers.items():

            async def fires(seen: Callable[[str], bool] = seen) -> bool:
                key = f"r{round_}-{uuid.uuid4().hex[:8]}"
                await client.trigger("state::set", {"scope": "rc", "key": key, "value": round_})
                for _ in range(25):
                    if seen(key):
                        return True
                    await asyncio.sleep(0.02)
                return False

            await eventually(fires, f"state trigger of {name} after restart {round_ + 1}")
        return time.monotonic() - start
    finally:
        await client.shutdown()
