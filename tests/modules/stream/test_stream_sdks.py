"""The official SDKs use pyiii's Streams: stream::* calls, stream triggers, createStream.

Workers are the compat programs (tests/compat/{node/worker.mjs,python/worker.py}) on npm
iii-sdk 0.9.0 / 0.22.1 and PyPI iii-sdk 0.11.6 / 0.25.0, run as subprocesses against an
in-process engine; a raw WebSocket client watches the stream port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from compat.compat_kit import COMPAT, VERSIONS, Spawner, prefix_of, require_compat, until
from support.engines import running_server, sdk_worker, url_of
from support.stream_engines import StreamEngine, stream_config

pytestmark = pytest.mark.timeout(120)

MEMORY = "{name: kv, config: {store_method: in_memory}}"


@pytest.fixture
async def engine() -> AsyncIterator[StreamEngine]:
    async with running_server(stream_config(MEMORY)) as server, sdk_worker(url_of(server), "t") as w:
        yield StreamEngine(server, w, "in_memory")


def events(proc: Any) -> list[Any]:
    return [m["event"] for m in proc.messages if "event" in m]


def at(group: str, item: str, **extra: Any) -> dict[str, Any]:
    return {"stream_name": "sdk", "group_id": group, "item_id": item, **extra}


@pytest.mark.parametrize("version", VERSIONS)
async def test_stream_calls_from_an_official_sdk(version: str, spawn: Spawner, engine: StreamEngine) -> None:
    url = url_of(engine.server)
    script = [
        ["stream::set", at("g", "a", data={"name": "Test", "value": 42})],
        ["stream::set", at("g", "a", data={"value": 2, "updated": True})],
        ["stream::get", at("g", "a")],
        ["stream::get", at("g", "missing")],
        ["stream::set", at("g", "b", data={"chunks": [], "transcript": "hello"})],
        [
            "stream::update",
            at(
                "g",
                "b",
                ops=[
                    {"type": "append", "path": "chunks", "value": {"text": "hello"}},
                    {"type": "append", "path": "transcript", "value": " world"},
                    {"type": "merge", "path": ["meta", "x"], "value": {"ts": 1}},
                ],
            ),
        ],
        ["stream::list", {"stream_name": "sdk", "group_id": "g"}],
        ["stream::list_groups", {"stream_name": "sdk"}],
        ["stream::send", {"stream_name": "sdk", "group_id": "g", "type": "ping", "data": {"n": 1}}],
        ["stream::delete", at("g", "a")],
        ["stream::delete", at("g", "never")],
        ["stream::list_all", {}],
        ["stream::set", {"stream_name": "sdk", "group_id": "g", "item_id": "c"}],
    ]
    async with engine.client() as c:
        await c.join("watch", "sdk", "g")
        assert (await c.recv())["event"] == {"type": "sync", "data": []}
        proc = await spawn.official(version, "calls", json.dumps(script), url=url)
        out = (await proc.result())["results"]
        seen = [(await c.recv())["event"] for _ in range(6)]
    r = [o.get("result") for o in out]
    assert r[0] == {"old_value": None, "new_value": {"name": "Test", "value": 42}}
    assert r[1] == {"old_value": {"name": "Test", "value": 42}, "new_value": {"value": 2, "updated": True}}
    assert r[2] == {"value": 2, "updated": True}
    assert r[3] is None and "error" not in out[3]
    assert r[5]["new_value"] == {
        "chunks": [{"text": "hello"}],
        "transcript": "hello world",
        "meta": {"x": {"ts": 1}},
    }
    assert r[5].get("errors", []) == []
    assert r[6] == [{"value": 2, "updated": True}, r[5]["new_value"]]
    assert r[7] == ["g"]
    assert "error" not in out[8]
    assert r[9] == {"old_value": {"value": 2, "updated": True}}
    assert r[10] == {"old_value": None}
    assert r[11] == {"stream": [{"id": "sdk", "groups": ["g"]}], "count": 1}
    err = out[12]["error"]
    assert "deserialization_error" in f"{err['code']} {err['message']}" and "data" in err["message"]
    assert [ev["type"] for ev in seen] == ["create", "update", "create", "update", "event", "delete"]
    assert seen[4] == {"type": "event", "event": {"type": "ping", "data": {"n": 1}}}


@pytest.mark.parametrize("version", VERSIONS)
async def test_stream_and_join_triggers_in_an_official_sdk(
    version: str, spawn: Spawner, engine: StreamEngine
) -> None:
    url = url_of(engine.server)
    p = prefix_of(version)
    on_change = await spawn.official(
        version,
        "stream-trigger",
        f"{p}::on_change",
        "stream",
        '{"stream_name": "sdk", "group_id": "g"}',
        url=url,
    )
    on_join = await spawn.official(version, "stream-trigger", f"{p}::on_join", "stream:join", url=url)
    on_leave = await spawn.official(version, "stream-trigger", f"{p}::on_leave", "stream:leave", url=url)
    await asyncio.gather(on_change.ready(), on_join.ready(), on_leave.ready())
    await engine.call("stream::set", at("g", "i", data={"n": 1}))
    await engine.call("stream::set", at("other", "i", data={"n": 2}))
    await engine.call("stream::delete", at("g", "i"))
    await until(lambda: len(events(on_change)) == 2, 10, "two stream events", on_change)
    first, second = events(on_change)
    assert first["streamName"] == "sdk" and first["groupId"] == "g" and first["id"] == "i"
    assert first["event"] == {"type": "create", "data": {"n": 1}}
    assert second["event"] == {"type": "delete", "data": {"n": 1}}
    async with engine.client() as c:
        await c.join("s1", "sdk", "secret")
        assert (await c.recv())["event"] == {"type": "unauthorized"}
        await c.join("s2", "sdk", "open")
        assert (await c.recv())["event"] == {"type": "sync", "data": []}
    await until(lambda: len(events(on_leave)) == 1, 10, "the leave event", on_leave)
    assert [ev["group_id"] for ev in events(on_join)] == ["secret", "open"]
    assert events(on_leave)[0] == {
        "subscription_id": "s2",
        "stream_name": "sdk",
        "group_id": "open",
        "id": None,
        "context": None,
    }


@pytest.mark.parametrize("version", VERSIONS)
async def test_create_stream_of_an_official_sdk_serves_its_stream(
    version: str, spawn: Spawner, engine: StreamEngine
) -> None:
    url = url_of(engine.server)
    name = f"custom-{prefix_of(version)}"
    served = await spawn.official(version, "stream-custom", name, url=url)
    await served.ready()
    args = {"stream_name": name, "group_id": "g", "item_id": "i"}
    async with engine.client() as c:
        await c.join("s", name, "g")
        assert (await c.recv())["event"] == {"type": "sync", "data": []}
        assert await engine.call("stream::set", {**args, "data": {"v": 1}}) == {
            "old_value": None,
            "new_value": {"v": 1},
        }
        assert (await c.recv())["event"] == {"type": "create", "data": {"v": 1}}
        assert await engine.call("stream::get", args) == {"v": 1}
        assert await engine.call("stream::list", {"stream_name": name, "group_id": "g"}) == [{"v": 1}]
        assert await engine.call("stream::delete", args) == {"old_value": {"v": 1}}
        assert (await c.recv())["event"] == {"type": "delete", "data": {"v": 1}}
        assert await engine.call("stream::get", args) is None
    ops = [m["op"] for m in served.messages if "op" in m]
    assert ops == ["set", "get", "delete", "get"]
    assert await engine.call("stream::list_all", {}) == {"stream": [], "count": 0}


MOTIA_APP = Path(__file__).parent / "motia_app"


async def test_a_motia_app_writes_a_stream_a_client_watches(spawn: Spawner) -> None:
    """Motia 1.0.4rc1 (iii-sdk 0.11.3): a stream definition, a cron step writing it, a stream step."""
    require_compat("py-motia")
    config = stream_config(MEMORY) + "  - name: iii-state\n  - name: iii-cron\n"
    async with running_server(config) as server, sdk_worker(url_of(server), "checker") as w:
        e = StreamEngine(server, w, "in_memory")
        async with e.client() as c:
            await c.join("bar", "progress", "job-1", "bar")
            assert (await c.recv())["event"] == {"type": "sync", "data": None}
            app = await spawn.command(
                "motia run",
                [str(COMPAT / "py-motia" / "bin" / "motia"), "run", "--dir", "steps"],
                url=url_of(server),
                cwd=MOTIA_APP,
            )
            try:
                first = await c.recv(timeout=20)
                second = await c.recv(timeout=5)
            except TimeoutError:
                pytest.fail(f"no change from the Motia step:\n{app.describe()}")
        assert first["event"] == {"type": "create", "data": {"done": 1, "by": "cron"}}
        assert second["event"] == {"type": "update", "data": {"done": 2, "by": "cron"}}
        deadline = asyncio.get_running_loop().time() + 10
        while (last := await w.trigger("state::get", {"scope": "motia-stream", "key": "last"})) is None:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"the Motia stream step never ran:\n{app.describe()}")
            await asyncio.sleep(0.1)
        assert last["trigger"] == "stream"
        assert last["event"]["streamName"] == "progress" and last["event"]["groupId"] == "job-1"
        assert last["event"]["event"]["data"]["by"] == "cron"
        steps = {t.function_id for t in server.engine.triggers.values() if t.trigger_type == "stream"}
        assert len(steps) == 1 and "OnProgress" in next(iter(steps))
