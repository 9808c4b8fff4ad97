"""The official SDKs use pyiii's queue: both API generations, the enqueue action, retries.

Current generation (npm iii-sdk 0.22.1, PyPI 0.25.0): ``iii::durable::publish`` and
``durable:subscriber``. Older generation (npm 0.9.0, PyPI 0.11.6 — iii-sdk <= 0.13, what
Motia 1.0.x runs on): ``enqueue {topic, data}`` and the ``queue`` trigger type. Every
version also sends ``TriggerAction.Enqueue`` to a named queue. Workers are the compat
programs (tests/compat/{node/worker.mjs,python/worker.py}) run as subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from compat_kit import VERSIONS, Spawner, prefix_of, require_compat, until

from pyiii import connect
from support.queue_engines import QueueEngine, adapter_block, queue_config_yaml

pytestmark = pytest.mark.timeout(120)

CURRENT = ("node-0.22", "py-0.25.0")


def messages(proc: Any) -> list[Any]:
    return [m["message"] for m in proc.messages if "message" in m]


@pytest.mark.parametrize("version", VERSIONS)
async def test_publish_subscribe_and_enqueue_with_an_official_sdk(
    version: str, spawn: Spawner, tmp_path: Path
) -> None:
    require_compat(version)
    config = queue_config_yaml(
        {"jobs": {"max_retries": 2, "backoff_ms": 50}},
        adapter_block("file_based", tmp_path, None, ""),
    )
    eng = await QueueEngine(config).start()
    p = prefix_of(version)
    current = version in CURRENT
    trigger_type = "durable:subscriber" if current else "queue"
    sub = await spawn.official(version, "subscribe", f"{p}::on_order", "orders", trigger_type, url=eng.url)
    await sub.ready()

    # 1. Publish, each SDK generation with its own function name.
    if current:
        out = await (await spawn.official(version, "publish", "orders", "20", url=eng.url)).result()
        assert out == {"published": 20, "failed": 0, "errors": []}
    else:
        for n in range(20):
            payload = json.dumps({"topic": "orders", "data": {"n": n}})
            out = await (await spawn.official(version, "call", "enqueue", payload, url=eng.url)).result()
            assert "error" not in out, out
    await until(lambda: len(messages(sub)) >= 20, 20, "20 deliveries", sub)
    assert sorted(m["n"] for m in messages(sub)) == list(range(20))

    # 2. The enqueue action of an invocation, to a named queue.
    out = await (
        await spawn.official(version, "enqueue", f"{p}::on_order", "jobs", '{"n": 100}', url=eng.url)
    ).result()
    receipt = out["result"]["messageReceiptId"]
    assert str(uuid.UUID(receipt)) == receipt
    await until(lambda: any(m.get("n") == 100 for m in messages(sub)), 10, "the enqueued job", sub)

    # 3. A handler that throws is retried (max_retries 2), then dead-lettered with its error.
    await (
        await spawn.official(
            version, "enqueue", f"{p}::on_order", "jobs", '{"n": 101, "fail": true}', url=eng.url
        )
    ).result()
    await until(lambda: sum(1 for m in messages(sub) if m.get("n") == 101) == 2, 10, "two tries", sub)
    w = await connect(eng.url, name="inspector")
    try:
        letters: list[Any] = []
        for _ in range(100):
            letters = await w.trigger("engine::queue::dlq_messages", {"queue": "jobs"})
            if letters:
                break
            await asyncio.sleep(0.05)
        assert len(letters) == 1 and "boom" in letters[0]["error"] and letters[0]["retries"] == 2
    finally:
        await w.shutdown()

    # 4. An unconfigured queue: an error naming it and the config key.
    out = await (
        await spawn.official(version, "enqueue", f"{p}::on_order", "nope", "{}", url=eng.url)
    ).result()
    error = out["error"]
    assert "enqueue_error" in f"{error['code']} {error['message']}"
    assert "queue_configs.nope" in error["message"]
    await sub.stop()
    await eng.stop()
