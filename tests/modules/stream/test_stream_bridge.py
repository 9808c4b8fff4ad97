"""The ``bridge`` adapter: engines serving another engine's streams on their own port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyiii import IIIError
from support.engines import running_server, sdk_worker, url_of
from support.stream_engines import StreamEngine, stream_config, wait_until

BACKEND = stream_config("{name: kv, config: {store_method: in_memory}}") + "  - name: iii-pubsub\n"


@contextlib.asynccontextmanager
async def bridged() -> AsyncIterator[tuple[StreamEngine, StreamEngine, StreamEngine]]:
    async with running_server(BACKEND) as back, sdk_worker(url_of(back), "on-back") as wb:
        adapter = f"{{name: bridge, config: {{bridge_url: '{url_of(back)}'}}}}"
        async with (
            running_server(stream_config(adapter)) as one,
            running_server(stream_config(adapter)) as two,
            sdk_worker(url_of(one), "on-one") as w1,
            sdk_worker(url_of(two), "on-two") as w2,
        ):
            yield (
                StreamEngine(back, wb, "kv"),
                StreamEngine(one, w1, "bridge"),
                StreamEngine(two, w2, "bridge"),
            )


def at(item_id: str, **extra: Any) -> dict[str, Any]:
    return {"stream_name": "b", "group_id": "g", "item_id": item_id, **extra}


async def test_calls_go_to_the_backend_and_changes_reach_every_bridged_engine() -> None:
    async with bridged() as (back, one, two):
        fired: list[Any] = []
        two.worker.register_function("t::on", fired.append)
        two.worker.register_trigger(
            {"type": "stream", "function_id": "t::on", "config": {"stream_name": "b"}}
        )
        async with one.client() as c1, two.client() as c2:
            await c1.join("s", "b", "g")
            await c2.join("s", "b", "g")
            assert (await c1.recv())["event"] == {"type": "sync", "data": []}
            assert (await c2.recv())["event"] == {"type": "sync", "data": []}
            assert await one.call("stream::set", at("i", data={"n": 1})) == {
                "old_value": None,
                "new_value": {"n": 1},
            }
            out = await one.call("stream::update", at("i", ops=[{"type": "increment", "path": "n", "by": 1}]))
            assert out == {"old_value": {"n": 1}, "new_value": {"n": 2}}
            await two.call("stream::send", {"stream_name": "b", "group_id": "g", "type": "hi", "data": 1})
            assert await two.call("stream::delete", at("i")) == {"old_value": {"n": 2}}
            for c in (c1, c2):
                got = [(await c.recv())["event"] for _ in range(4)]
                assert got == [
                    {"type": "create", "data": {"n": 1}},
                    {"type": "update", "data": {"n": 2}},
                    {"type": "event", "event": {"type": "hi", "data": 1}},
                    {"type": "delete", "data": {"n": 2}},
                ]
        await wait_until(lambda: len(fired) == 4, 5, "the trigger on the second bridged engine")
        await one.call("stream::set", at("k", data="kept"))
        assert await back.call("stream::get", at("k")) == "kept"  # stored on the backend
        assert await two.call("stream::get", at("k")) == "kept"
        assert await two.call("stream::list", {"stream_name": "b", "group_id": "g"}) == ["kept"]
        assert await two.call("stream::list_groups", {"stream_name": "b"}) == ["g"]
        assert await two.call("stream::list_all", {}) == {
            "stream": [{"id": "b", "groups": ["g"]}],
            "count": 1,
        }
        async with two.client() as c:  # a join on a bridged engine syncs from the backend
            await c.join("s", "b", "g", "k")
            assert (await c.recv())["event"] == {"type": "sync", "data": "kept"}


async def test_bad_input_and_an_unreachable_backend_are_reported() -> None:
    async with running_server(BACKEND) as back:
        back_url = url_of(back)
        adapter = f"{{name: bridge, config: {{bridge_url: '{back_url}'}}}}"
        async with running_server(stream_config(adapter)) as one, sdk_worker(url_of(one), "w") as w:
            with pytest.raises(IIIError) as info:
                await w.trigger("stream::set", {"stream_name": "b", "group_id": "g", "item_id": "i"})
            assert info.value.code == "deserialization_error" and "`data`" in info.value.message
            await back.stop()
            with pytest.raises(IIIError) as info:
                await w.trigger("stream::get", at("i"))
            assert info.value.code == "STREAM_GET_ERROR" and back_url in info.value.message
