"""Bad input at an RBAC listener, against a `pyiii serve` process.

A flood of refused upgrades (the engine stays responsive, its memory flat),
forged channel keys, and a client that keeps calling hidden functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from pyiii.errors import IIIError
from pyiii.sdk import connect
from support.engine_process import EngineProcess
from support.engines import free_port
from support.ws_upgrade import upgrade_request

REFUSED_IN_A_ROW = 3000
PARALLEL = 8


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _upgrade(port: int, headers: dict[str, str], path: str = "/") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request("x", path, headers))
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1])


@pytest.fixture
def rbac_engine(tmp_path: Path) -> Any:
    public = free_port()
    config = f"""\
workers:
  - name: iii-worker-manager
  - name: iii-worker-manager
    config:
      port: {public}
      rbac:
        auth_function_id: t::auth
        expose_functions: [match("pub::*")]
  - name: iii-state
"""
    engine = EngineProcess(tmp_path, config).start()
    engine.public_port = public  # type: ignore[attr-defined]
    # The auth function raises for every refused client; its tracebacks are not news here.
    sdk_log = logging.getLogger("pyiii.sdk")
    level = sdk_log.level
    sdk_log.setLevel(logging.CRITICAL)
    yield engine
    sdk_log.setLevel(level)
    engine.stop()


async def _trusted(engine: EngineProcess) -> Any:
    w = await connect(engine.url, name="trusted", reconnect=False)

    def auth(data: dict[str, Any]) -> Any:
        if data["headers"].get("x-token") == "ok":
            return {"context": {"who": "ok"}}
        raise PermissionError("bad token")

    w.register_function("t::auth", auth, inline=True)
    w.register_function("pub::echo", lambda d: {"ok": True}, inline=True)
    w.register_function("priv::secret", lambda d: {"secret": 42}, inline=True)
    await w.trigger("engine::functions::list", {})
    return w


async def test_thousands_of_refused_upgrades(rbac_engine: EngineProcess) -> None:
    port = rbac_engine.public_port  # type: ignore[attr-defined]
    trusted = await _trusted(rbac_engine)
    assert rbac_engine.proc is not None
    pid = rbac_engine.proc.pid
    try:
        statuses: list[int] = []

        async def stream(n: int) -> None:
            for _ in range(n):
                statuses.append(await _upgrade(port, {"x-token": "bad"}))

        await asyncio.gather(*(stream(200 // PARALLEL) for _ in range(PARALLEL)))  # warm up
        before = _rss_kib(pid)
        worst = 0.0
        flood = asyncio.gather(*(stream(REFUSED_IN_A_ROW // PARALLEL) for _ in range(PARALLEL)))
        while not flood.done():
            started = time.monotonic()
            await trusted.trigger("state::get", {"scope": "s", "key": "k"})
            worst = max(worst, time.monotonic() - started)
            await asyncio.sleep(0.05)
        await flood
        after = _rss_kib(pid)
        assert set(statuses) == {401} and len(statuses) >= REFUSED_IN_A_ROW
        assert worst < 1.0, f"a state::get took {worst:.2f}s during the flood"
        assert after - before < 8 * 1024, f"RSS grew {after - before} KiB over {REFUSED_IN_A_ROW} refusals"
        # still serving an authenticated client afterwards
        c = await connect(f"ws://127.0.0.1:{port}", name="c", reconnect=False, headers={"x-token": "ok"})
        assert await c.trigger("pub::echo", {}) == {"ok": True}
        await c.shutdown()
        for _ in range(100):  # the client's disconnect reaches the engine shortly after
            stats = await trusted.trigger("engine::stats", {})
            if stats["connections"] == 1:
                break
            await asyncio.sleep(0.02)
        assert stats["connections"] == 1 and stats["pending"] == 0
    finally:
        await trusted.shutdown()
    refusals = [line for line in rbac_engine.output.splitlines() if "refused a worker connection" in line]
    assert refusals and "auth function t::auth refused it" in refusals[0]
    assert len(refusals) < 200  # the log is rate limited


async def test_forged_channel_keys_and_hidden_calls(rbac_engine: EngineProcess) -> None:
    port = rbac_engine.public_port  # type: ignore[attr-defined]
    trusted = await _trusted(rbac_engine)
    c = await connect(f"ws://127.0.0.1:{port}", name="c", reconnect=False, headers={"x-token": "ok"})
    try:
        ref = await c.trigger("engine::channels::create", {})  # infrastructure: allowed
        cid = ref["writer"]["channel_id"]
        good = ref["writer"]["access_key"]
        one_off = good[:-1] + ("y" if good.endswith("x") else "x")  # the real key but its last character
        for path in (
            f"/ws/channels/{cid}?key=forged&dir=write",
            f"/ws/channels/{cid}?key={one_off}&dir=write",
            f"/ws/channels/{cid}?key={ref['reader']['access_key']}&dir=write",
            f"/ws/channels/00000000-0000-4000-8000-000000000000?key={good}&dir=write",
        ):
            assert await _upgrade(port, {}, path) == 404
        assert await _upgrade(port, {}, f"/ws/channels/{cid}?key={good}&dir=write") == 101
        for _ in range(200):
            with pytest.raises(IIIError) as info:
                await c.trigger("priv::secret", {})
            assert info.value.code == "FORBIDDEN" and "42" not in info.value.message
        with pytest.raises(IIIError, match="FORBIDDEN"):
            await c.trigger("engine::functions::list", {})  # discovery is not exposed here
        with pytest.raises(IIIError, match="FORBIDDEN"):
            await c.trigger("engine::workers::list", {})
    finally:
        await c.shutdown()
        await trusted.shutdown()
