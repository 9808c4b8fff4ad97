"""A Motia app's queue (event) and cron steps run on pyiii (Motia 1.0.4rc1 on iii-sdk 0.11.3).

`motia run --dir steps` runs tests/compat/motia_queue_app as a subprocess; the test
publishes the way Motia's own steps do (`enqueue {topic, data}`) and reads what the
steps wrote to State; the app's cron step enqueues on its own every second.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from compat_kit import COMPAT, ROOT, Spawner

from pyiii import Worker, connect
from support.queue_engines import QueueEngine

pytestmark = pytest.mark.timeout(120)

APP = ROOT / "tests" / "compat" / "motia_queue_app"
MOTIA = COMPAT / "py-motia" / "bin" / "motia"
TOPICS = ("order.created", "order.shipped", "payment.requested", "inventory.restock")


def config(tmp_path: Path) -> str:
    return f"""\
workers:
  - name: iii-state
  - name: iii-cron
  - name: iii-queue
    config:
      adapter:
        name: builtin
        config: {{store_method: file_based, file_path: {tmp_path / "queue"}}}
"""


async def wait_for_state(w: Worker, scope: str, key: str, want: Any, proc: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = await w.trigger("state::get", {"scope": scope, "key": key})
        if got == want:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"state {scope}/{key} is {got!r}, wanted {want!r}\n{proc.describe()}")


async def test_motia_queue_steps_run(spawn: Spawner, tmp_path: Path) -> None:
    if not MOTIA.exists():
        hint = "run `make test` (scripts/install-compat.sh py-motia)"
        pytest.fail(f"{MOTIA} is missing: {hint}", pytrace=False)
    eng = await QueueEngine(config(tmp_path)).start()
    app = await spawn.command("motia run", [str(MOTIA), "run", "--dir", "steps"], url=eng.url, cwd=APP)
    w = await connect(eng.url, name="motia-test")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = {t["name"] for t in await w.trigger("engine::queue::list_topics", {})}
            if set(TOPICS) <= names:
                break
            if app.returncode is not None:
                pytest.fail(f"motia exited\n{app.describe()}")
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the Motia steps never subscribed\n{app.describe()}")
        # Publish as Motia's enqueue() does (the older name of iii::durable::publish).
        for n in range(5):
            await w.trigger("enqueue", {"topic": "order.created", "data": {"id": f"o{n}"}})
        for n in range(5):
            await wait_for_state(w, "shipments", f"o{n}", {"id": f"o{n}", "shipped": True}, app)
        # A step that throws once is retried (its queue config: max_retries 2, 50 ms).
        await w.publish("payment.requested", {"id": "p1"})
        await wait_for_state(w, "charges", "p1", {"attempts": 2}, app)
        await asyncio.sleep(0.3)
        assert await w.trigger("state::get", {"scope": "charges", "key": "p1"}) == {"attempts": 2}
        stats = await w.trigger("engine::queue::topic_stats", {"topic": "payment.requested"})
        assert stats["dlq_depth"] == 0 and stats["depth"] == 0
        # The cron step (every second) enqueues inventory.restock; a queue step counts them.
        assert eng.server is not None
        [cron] = [t for t in eng.server.engine.triggers.values() if t.trigger_type == "cron"]
        assert cron.function_id == "steps::Restock::trigger::cron(* * * * * *)"
        restocks_key = {"scope": "inventory", "key": "restocks"}
        deadline = time.monotonic() + 10
        while (restocks := await w.trigger("state::get", restocks_key)) is None or restocks["count"] < 2:
            if time.monotonic() > deadline:
                pytest.fail(f"the cron step did not run twice: {restocks!r}\n{app.describe()}")
            await asyncio.sleep(0.1)
        assert restocks["requested_by"] == "cron"
        first = time.monotonic()
        await asyncio.sleep(2.2)
        later = await w.trigger("state::get", restocks_key)
        # once per second: two or three more runs in 2.2 s, never a burst
        assert 2 <= later["count"] - restocks["count"] <= 3, (restocks, later, time.monotonic() - first)
    finally:
        await w.shutdown()
        await app.stop()
        await eng.stop()
    assert os.path.exists(tmp_path / "queue")
