"""Pub/sub through the official SDKs (npm iii-sdk 0.22.1, PyPI iii-sdk 0.25.0).

The worker programs are tests/compat/{node/worker.mjs,python/worker.py} (roles ``pubsub-subscribe``
and ``pubsub-publish``; see tests/compat/README.md), run as subprocesses against an in-process engine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from compat.compat_kit import Spawner, WorkerProc, prefix_of, require_compat
from support.engines import running_server, sdk_worker, url_of
from support.jsonvalues import same_json

pytestmark = pytest.mark.timeout(90)

OFFICIAL = ("node-0.22", "py-0.25.0")
CONFIG = "workers:\n  - name: iii-pubsub\n"
DATA: list[Any] = [{"orderId": "abc-123", "items": [1, 2.5, None, True]}, "text ✓", 42, None, []]


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    require_compat(*OFFICIAL)


def messages(proc: WorkerProc) -> list[Any]:
    return [m["message"] for m in proc.messages if "message" in m]


async def wait_messages(proc: WorkerProc, n: int, timeout: float = 10.0) -> list[Any]:
    await proc.wait_for(lambda _m: len(messages(proc)) >= n, timeout, f"{n} messages")
    return messages(proc)


async def test_official_publish_and_subscribe_with_pyiii(spawn: Spawner) -> None:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "pyiii-sub") as ours:
        url = url_of(server)
        seen: list[Any] = []
        ours.on_event("orders.shipped", id="pyiii::on")(seen.append)
        subs = [
            await spawn.official(v, "pubsub-subscribe", f"{prefix_of(v)}::on", "orders.shipped", url=url)
            for v in OFFICIAL
        ]
        for sub in subs:
            await sub.ready()
        # every publisher: each official SDK (a normal call, then a Void action) and pyiii
        published: list[Any] = []
        for i, version in enumerate(OFFICIAL):
            for value, mode in ((DATA[i], ""), (DATA[i + 2], "void")):
                pub = await spawn.official(
                    version, "pubsub-publish", "orders.shipped", json.dumps(value), mode, url=url
                )
                assert await pub.result() == {"result": None}, pub.describe()
                published.append(value)
        await ours.publish_event("orders.shipped", DATA[4])
        published.append(DATA[4])
        for sub in subs:
            got = await wait_messages(sub, len(published))
            await asyncio.sleep(0.2)
            got = messages(sub)
            assert len(got) == len(published), sub.describe()
            for value in published:  # each once, exactly as published (no envelope, no extra keys)
                assert sum(same_json(value, g) for g in got) == 1, (sub.name, value, got)
        assert len(seen) == len(published)


@pytest.mark.parametrize("version", OFFICIAL)
async def test_official_publish_errors(spawn: Spawner, version: str) -> None:
    async with running_server(CONFIG) as server:
        pub = await spawn.official(version, "pubsub-publish", "", "1", url=url_of(server))
        out = await pub.result()
        assert out["error"]["code"] == "topic_not_set", out
        assert "publish needs 'topic'" in out["error"]["message"]
