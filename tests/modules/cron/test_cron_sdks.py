"""Cron through the official SDKs (npm iii-sdk 0.22.1, PyPI iii-sdk 0.25.0) and a Motia app.

The SDK worker programs are tests/compat/{node/worker.mjs,python/worker.py} (role ``cron``,
see tests/compat/README.md); the Motia app is tests/modules/cron/motia_app/ run with
``motia run`` from the py-motia install (Motia 1.0.4rc1 on iii-sdk 0.11.3).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from compat.compat_kit import COMPAT, Spawner, prefix_of, require_compat
from support.engines import running_server, sdk_worker, url_of

pytestmark = pytest.mark.timeout(90)

OFFICIAL = ("node-0.22", "py-0.25.0")
CONFIG = "workers:\n  - name: iii-cron\n"


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    require_compat(*OFFICIAL)


@pytest.mark.parametrize("version", OFFICIAL)
async def test_official_cron_trigger(spawn: Spawner, version: str) -> None:
    async with running_server(CONFIG) as server:
        url = url_of(server)
        fid = f"{prefix_of(version)}::tick"
        job = await spawn.official(version, "cron", fid, "* * * * * *", url=url)
        await job.ready()
        await job.wait_for(lambda _m: sum("event" in m for m in job.messages) >= 2, 5, "two runs")
        events = [m["event"] for m in job.messages if "event" in m]
        trigger_ids = {t.id for t in server.engine.triggers.values() if t.function_id == fid}
        for event in events:
            assert set(event) == {"trigger", "job_id", "scheduled_time", "actual_time"}, event
            assert event["trigger"] == "cron" and event["job_id"] in trigger_ids
            scheduled = dt.datetime.fromisoformat(event["scheduled_time"])
            assert scheduled.microsecond == 0 and scheduled.utcoffset() == dt.timedelta(0)
            assert dt.datetime.fromisoformat(event["actual_time"]) >= scheduled
        assert events[0]["scheduled_time"] != events[1]["scheduled_time"]

        # an invalid expression: the SDK reports the engine's message (on stderr)
        bad = await spawn.official(version, "cron", f"{fid}-bad", "0 0 25 * * *", url=url)
        await bad.ready()
        await bad.wait_for(
            lambda _m: "hour (field 3) '25': 25 is outside 0-23" in "\n".join(bad.stderr_lines),
            5,
            "the registration error on stderr",
        )
        assert not [t for t in server.engine.triggers.values() if t.function_id == f"{fid}-bad"]


MOTIA_APP = Path(__file__).parent / "motia_app"


async def test_motia_cron_steps_run(spawn: Spawner) -> None:
    require_compat("py-motia")
    config = "workers:\n  - name: iii-state\n  - name: iii-cron\n"
    async with running_server(config) as server, sdk_worker(url_of(server), "checker") as w:
        app = await spawn.command(
            "motia run",
            [str(COMPAT / "py-motia" / "bin" / "motia"), "run", "--dir", "steps"],
            url=url_of(server),
            cwd=MOTIA_APP,
        )

        async def get(key: str) -> Any:
            return await w.trigger("state::get", {"scope": "motia-cron", "key": key})

        deadline = time.monotonic() + 15
        while (ticks := await get("ticks")) is None or ticks["count"] < 2:
            if time.monotonic() > deadline or app.returncode is not None:
                pytest.fail(f"the Motia cron step did not run twice:\n{app.describe()}")
            await asyncio.sleep(0.2)
        assert ticks["trigger"] == "cron"
        asked = await get("asked")
        assert (
            asked is not None
            and asked["trigger"] == "cron"
            and set(asked) == {"trigger", "job_id", "scheduled_time", "actual_time"}
        )
        assert await get("ran") is None  # its condition said no
        steps = {t.function_id for t in server.engine.triggers.values() if t.trigger_type == "cron"}
        assert steps == {
            "steps::Tick::trigger::cron(* * * * * *)",
            "steps::Never::trigger::cron(* * * * * *)",
        }
