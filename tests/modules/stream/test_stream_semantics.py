"""stream::* functions, the client WebSocket and the stream triggers, on every adapter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyiii import IIIError
from support.stream_engines import wait_until

S = "chat"


def item(group: str, item_id: str, data: Any = None, stream: str = S) -> dict[str, Any]:
    out: dict[str, Any] = {"stream_name": stream, "group_id": group, "item_id": item_id}
    if data is not None:
        out["data"] = data
    return out


# --- functions ---------------------------------------------------------------------


async def test_set_get_delete_list(stream_engine: Any) -> None:
    e = stream_engine
    assert await e.call("stream::set", item("r1", "a", {"n": 1})) == {
        "old_value": None,
        "new_value": {"n": 1},
    }
    assert await e.call("stream::set", item("r1", "a", {"n": 2})) == {
        "old_value": {"n": 1},
        "new_value": {"n": 2},
    }
    await e.call("stream::set", item("r1", "b", [1, "x"]))
    await e.call("stream::set", item("r2", "c", "text"))
    await e.call("stream::set", item("r9", "z", 0, stream="other"))
    assert await e.call("stream::get", item("r1", "a")) == {"n": 2}
    assert await e.call("stream::get", item("r1", "missing")) is None
    assert await e.call("stream::list", {"stream_name": S, "group_id": "r1"}) == [{"n": 2}, [1, "x"]]
    assert await e.call("stream::list", {"stream_name": S, "group_id": "nope"}) == []
    assert await e.call("stream::list_groups", {"stream_name": S}) == ["r1", "r2"]
    assert await e.call("stream::list_groups", {"stream_name": "none"}) == []
    assert await e.call("stream::list_all", {}) == {
        "stream": [{"id": S, "groups": ["r1", "r2"]}, {"id": "other", "groups": ["r9"]}],
        "count": 2,
    }
    assert await e.call("stream::delete", item("r1", "a")) == {"old_value": {"n": 2}}
    assert await e.call("stream::delete", item("r1", "a")) == {"old_value": None}
    assert await e.call("stream::get", item("r1", "a")) is None
    await e.call("stream::delete", item("r2", "c"))
    assert await e.call("stream::list_groups", {"stream_name": S}) == ["r1"]


async def test_names_with_separators_stay_apart(stream_engine: Any) -> None:
    e = stream_engine
    await e.call("stream::set", item("b:c", "i", 1, stream="a"))
    await e.call("stream::set", item("c", "i", 2, stream="a:b"))
    assert await e.call("stream::get", item("b:c", "i", stream="a")) == 1
    assert await e.call("stream::get", item("c", "i", stream="a:b")) == 2
    assert await e.call("stream::list_groups", {"stream_name": "a"}) == ["b:c"]
    assert await e.call("stream::list_groups", {"stream_name": "a:b"}) == ["c"]


async def test_update_ops_and_their_errors(stream_engine: Any) -> None:
    e = stream_engine
    out = await e.call(
        "stream::update",
        {
            **item("g", "u"),
            "ops": [
                {"type": "set", "path": "count", "value": 1},
                {"type": "increment", "path": "count", "by": 2},
            ],
        },
    )
    assert out == {"old_value": None, "new_value": {"count": 3}}
    out = await e.call(
        "stream::update",
        {
            **item("g", "u"),
            "ops": [
                {"type": "set", "path": "log", "value": []},
                {"type": "append", "path": "log", "value": "a"},
                {"type": "increment", "path": "log", "by": 1},
            ],
        },
    )
    assert out["old_value"] == {"count": 3}
    assert out["new_value"] == {"count": 3, "log": ["a"]}
    assert out["errors"] and out["errors"][0]["op_index"] == 2
    assert await e.call("stream::get", item("g", "u")) == {"count": 3, "log": ["a"]}


@pytest.mark.parametrize(
    ("function_id", "payload", "field"),
    [
        ("stream::set", {"stream_name": S, "group_id": "g", "item_id": "i"}, "`data`"),
        ("stream::set", {"stream_name": S, "item_id": "i", "data": 1}, "`group_id`"),
        ("stream::set", {"stream_name": 5, "group_id": "g", "item_id": "i", "data": 1}, "stream_name"),
        ("stream::get", {"stream_name": S, "group_id": "g"}, "`item_id`"),
        ("stream::update", {"stream_name": S, "group_id": "g", "item_id": "i"}, "`ops`"),
        (
            "stream::update",
            {"stream_name": S, "group_id": "g", "item_id": "i", "ops": [{"type": "nope"}]},
            "ops",
        ),
        ("stream::list", {"stream_name": S}, "`group_id`"),
        ("stream::list_groups", {}, "`stream_name`"),
        ("stream::send", {"stream_name": S, "group_id": "g", "data": 1}, "`type`"),
        ("stream::set", [1, 2], "object"),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(
    stream_engine: Any, function_id: str, payload: Any, field: str
) -> None:
    e = stream_engine
    with pytest.raises(IIIError) as info:
        await e.call(function_id, payload)
    assert info.value.code == "deserialization_error"
    assert function_id in info.value.message and field in info.value.message
    assert await e.call("stream::list_all", {}) == {"stream": [], "count": 0}


# --- the client WebSocket -------------------------------------------------------------


async def test_group_join_syncs_then_streams_each_change_in_order(stream_engine: Any) -> None:
    e = stream_engine
    await e.call("stream::set", item("room", "m0", {"t": "hello"}))
    async with e.client() as c:
        await c.join("sub-1", S, "room")
        sync = await c.recv()
        assert sync["type"] == "stream" and sync["streamName"] == S and sync["groupId"] == "room"
        assert sync["id"] is None and isinstance(sync["timestamp"], int)
        assert sync["event"] == {"type": "sync", "data": [{"t": "hello"}]}
        for n in range(20):
            await e.call("stream::set", item("room", "m1", {"n": n}))
        await e.call(
            "stream::update", {**item("room", "m1"), "ops": [{"type": "set", "path": "n", "value": 99}]}
        )
        await e.call(
            "stream::send", {"stream_name": S, "group_id": "room", "type": "typing", "data": {"who": "al"}}
        )
        await e.call("stream::delete", item("room", "m1"))
        await e.call("stream::set", item("other-room", "x", 1))  # not this group
        got = [await c.recv() for _ in range(23)]
        assert [g["event"]["type"] for g in got] == ["create"] + ["update"] * 20 + ["event", "delete"]
        assert [g["event"]["data"]["n"] for g in got[:21]] == [*range(20), 99]
        assert all(g["id"] == "m1" for g in got[:21])
        assert got[21]["event"] == {"type": "event", "event": {"type": "typing", "data": {"who": "al"}}}
        assert got[21]["id"] is None
        assert got[22]["event"] == {"type": "delete", "data": {"n": 99}}
        await c.nothing()


async def test_item_join_syncs_the_item_and_hears_only_it(stream_engine: Any) -> None:
    e = stream_engine
    await e.call("stream::set", item("room", "a", {"v": 1}))
    async with e.client() as c:
        await c.join("s", S, "room", "a")
        assert (await c.recv())["event"] == {"type": "sync", "data": {"v": 1}}
        await e.call("stream::set", item("room", "b", {"v": 2}))
        await e.call("stream::set", item("room", "a", {"v": 3}))
        got = await c.recv()
        assert got["id"] == "a" and got["event"] == {"type": "update", "data": {"v": 3}}
        await e.call(
            "stream::send", {"stream_name": S, "group_id": "room", "id": "a", "type": "ping", "data": 1}
        )
        assert (await c.recv())["event"]["event"] == {"type": "ping", "data": 1}
        await c.nothing()


async def test_join_of_nothing_is_an_empty_sync(stream_engine: Any) -> None:
    async with stream_engine.client() as c:
        await c.join("g", "no-such-stream", "no-group")
        assert (await c.recv())["event"] == {"type": "sync", "data": []}
        await c.join("i", "no-such-stream", "no-group", "no-item")
        assert (await c.recv())["event"] == {"type": "sync", "data": None}


async def test_leave_stops_the_events_of_that_subscription_only(stream_engine: Any) -> None:
    e = stream_engine
    async with e.client() as c:
        await c.join("one", S, "g1")
        await c.join("two", S, "g2")
        await c.recv(), await c.recv()
        await c.leave("one", S, "g1")
        await c.send(
            {"type": "leave", "data": {"subscriptionId": "never-joined", "streamName": S, "groupId": "x"}}
        )
        await e.call("stream::set", item("g1", "i", 1))
        await e.call("stream::set", item("g2", "i", 2))
        got = await c.recv()
        assert got["groupId"] == "g2" and got["event"]["data"] == 2
        await c.nothing()


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ("not json at all", "JSON"),
        ('{"type": "subscribe", "data": {}}', "subscribe"),
        ('{"type": "join", "data": {"streamName": "s", "groupId": "g"}}', "subscriptionId"),
        ('{"type": "join"}', "data"),
        ("[1, 2]", "object"),
        (b'{"type": "join", "data": 3}', "data"),
    ],
)
async def test_bad_frames_get_an_error_reply_and_nothing_else_changes(
    stream_engine: Any, frame: str | bytes, detail: str
) -> None:
    e = stream_engine
    async with e.client() as c:
        await c.join("ok", S, "g")
        await c.recv()
        await c.send(frame)
        err = await c.recv()
        assert err["type"] == "error" and err["error"]["code"] == "invalid_message"
        assert detail in err["error"]["message"] and "subscriptionId" in err["error"]["message"]
        await e.call("stream::set", item("g", "i", 1))
        assert (await c.recv())["event"] == {"type": "create", "data": 1}


async def test_invalid_utf8_closes_with_1007_and_a_reason(stream_engine: Any) -> None:
    import websockets

    async with stream_engine.client() as c:
        await c.ws.send(b"\xff\xfe", text=True)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007
        assert "UTF-8" in info.value.rcvd.reason


async def test_a_client_joined_twice_gets_each_change_per_subscription(stream_engine: Any) -> None:
    e = stream_engine
    async with e.client() as c, e.client() as d:
        await c.join("a", S, "g")
        await c.join("b", S, "g", "i")
        await d.join("a", S, "g")
        for x in (c, c, d):
            assert (await x.recv())["event"]["type"] == "sync"
        await e.call("stream::set", item("g", "i", 1))
        assert (await c.recv())["event"]["data"] == 1
        assert (await c.recv())["event"]["data"] == 1
        assert (await d.recv())["event"]["data"] == 1
        await c.nothing(0.2)


# --- triggers ----------------------------------------------------------------------------


async def test_stream_triggers_filter_by_group_item_and_condition(stream_engine: Any) -> None:
    e = stream_engine
    w = e.worker
    got: dict[str, list[Any]] = {"all": [], "group": [], "item": [], "cond": []}
    for key in got:
        w.register_function(f"t::{key}", got[key].append)
    w.register_function("t::only-big", lambda ev: ev["event"].get("data", {}).get("n", 0) > 5)
    w.register_trigger({"type": "stream", "function_id": "t::all", "config": {"stream_name": S}})
    w.register_trigger(
        {"type": "stream", "function_id": "t::group", "config": {"stream_name": S, "group_id": "g"}}
    )
    w.register_trigger(
        {
            "type": "stream",
            "function_id": "t::item",
            "config": {"stream_name": S, "group_id": "g", "item_id": "i"},
        }
    )
    w.register_trigger(
        {
            "type": "stream",
            "function_id": "t::cond",
            "config": {"stream_name": S, "condition_function_id": "t::only-big"},
        }
    )
    await asyncio.sleep(0.2)
    for n in (1, 10):
        await e.call("stream::set", item("g", "i", {"n": n}))
    await e.call("stream::set", item("g", "j", {"n": 2}))
    await e.call("stream::set", item("h", "i", {"n": 3}))
    await e.call("stream::delete", item("g", "i"))
    await e.call("stream::set", item("g", "i", 1, stream="elsewhere"))
    await wait_until(lambda: len(got["all"]) == 5 and len(got["cond"]) == 2, 5, "stream triggers")
    await asyncio.sleep(0.2)
    # per item in write order (items are delivered independently)
    first = next(ev for ev in got["all"] if ev["groupId"] == "g" and ev["id"] == "i")
    assert (
        first["type"] == "stream"
        and first["streamName"] == S
        and first["groupId"] == "g"
        and first["id"] == "i"
    )
    assert first["event"] == {"type": "create", "data": {"n": 1}}
    assert sorted(ev["event"]["type"] for ev in got["all"]) == [
        "create",
        "create",
        "create",
        "delete",
        "update",
    ]
    assert len(got["group"]) == 4
    assert [ev["event"]["type"] for ev in got["item"]] == ["create", "update", "delete"]
    # the delete carries the old value {"n": 10}, which passes the condition too
    assert [ev["event"]["data"]["n"] for ev in got["cond"]] == [10, 10]


async def test_stream_trigger_without_stream_name_is_refused(stream_engine: Any) -> None:
    e = stream_engine
    e.worker.register_function("t::x", lambda ev: None)
    trig = e.worker.register_trigger({"type": "stream", "function_id": "t::x", "config": {"group_id": "g"}})
    await wait_until(
        lambda: trig.id not in e.server.engine.triggers or not e.server.engine.triggers[trig.id].active,
        3,
        "the refusal",
    )
    assert not any(t.function_id == "t::x" and t.active for t in e.server.engine.triggers.values())


async def test_join_trigger_may_refuse_and_leave_trigger_hears_leaves(stream_engine: Any) -> None:
    e = stream_engine
    w = e.worker
    joins: list[Any] = []
    leaves: list[Any] = []

    def on_join(ev: Any) -> Any:
        joins.append(ev)
        return {"unauthorized": ev["group_id"] == "secret"}

    w.register_function("t::join", on_join)
    w.register_function("t::leave", leaves.append)
    w.register_trigger({"type": "stream:join", "function_id": "t::join", "config": {}})
    w.register_trigger({"type": "stream:leave", "function_id": "t::leave", "config": {}})
    await asyncio.sleep(0.2)
    await e.call("stream::set", item("secret", "k", {"pin": 1234}))
    async with e.client() as c:
        await c.join("s1", S, "secret")
        refused = await c.recv()
        assert refused["event"] == {"type": "unauthorized"} and refused["groupId"] == "secret"
        await e.call("stream::set", item("secret", "k", {"pin": 5678}))
        await c.nothing()  # no data, no changes
        await c.join("s2", S, "open", "i")
        assert (await c.recv())["event"] == {"type": "sync", "data": None}
        await c.leave("s2", S, "open")
        await wait_until(lambda: len(leaves) == 1, 3, "the leave trigger")
        await c.join("s3", S, "open")
        await c.recv()
    await wait_until(lambda: len(leaves) == 2, 3, "the leave trigger at disconnect")
    assert joins[0] == {
        "subscription_id": "s1",
        "stream_name": S,
        "group_id": "secret",
        "id": None,
        "context": None,
    }
    assert leaves[0] == {
        "subscription_id": "s2",
        "stream_name": S,
        "group_id": "open",
        "id": "i",
        "context": None,
    }
    assert leaves[1]["subscription_id"] == "s3"


# --- per-stream overrides ------------------------------------------------------------------


async def test_functions_registered_for_one_stream_serve_it(stream_engine: Any) -> None:
    e = stream_engine
    w = e.worker
    mine: dict[str, Any] = {}

    def set_(inp: Any) -> Any:
        key = f"{inp['group_id']}/{inp['item_id']}"
        old = mine.get(key)
        mine[key] = inp["data"]
        return {"old_value": old, "new_value": inp["data"]}

    w.register_function("stream::set(custom)", set_)
    w.register_function("stream::get(custom)", lambda inp: mine.get(f"{inp['group_id']}/{inp['item_id']}"))
    w.register_function(
        "stream::delete(custom)",
        lambda inp: {"old_value": mine.pop(f"{inp['group_id']}/{inp['item_id']}", None)},
    )
    w.register_function(
        "stream::list(custom)",
        lambda inp: [v for k, v in mine.items() if k.startswith(inp["group_id"] + "/")],
    )
    w.register_function("stream::list_groups(custom)", lambda inp: sorted({k.split("/")[0] for k in mine}))
    await wait_until(
        lambda: ("default", "stream::list_groups(custom)") in e.server.engine.functions, 3, "registration"
    )
    async with e.client() as c:
        await c.join("s", "custom", "g")
        assert (await c.recv())["event"] == {"type": "sync", "data": []}
        assert await e.call("stream::set", item("g", "i", {"a": 1}, stream="custom")) == {
            "old_value": None,
            "new_value": {"a": 1},
        }
        assert mine == {"g/i": {"a": 1}}
        assert (await c.recv())["event"] == {"type": "create", "data": {"a": 1}}
        assert await e.call("stream::get", item("g", "i", stream="custom")) == {"a": 1}
        assert await e.call("stream::list", {"stream_name": "custom", "group_id": "g"}) == [{"a": 1}]
        assert await e.call("stream::list_groups", {"stream_name": "custom"}) == ["g"]
        assert await e.call("stream::delete", item("g", "i", stream="custom")) == {"old_value": {"a": 1}}
        assert (await c.recv())["event"] == {"type": "delete", "data": {"a": 1}}
        assert await e.call("stream::get", item("g", "i", stream="custom")) is None
    # the store never saw any of it
    assert await e.call("stream::list_all", {}) == {"stream": [], "count": 0}


async def test_override_with_a_wrong_result_is_an_error(stream_engine: Any) -> None:
    e = stream_engine
    e.worker.register_function("stream::set(odd)", lambda inp: "not an object")
    await wait_until(lambda: ("default", "stream::set(odd)") in e.server.engine.functions, 3, "registration")
    with pytest.raises(IIIError) as info:
        await e.call("stream::set", item("g", "i", 1, stream="odd"))
    assert info.value.code == "JSON_ERROR" and "stream::set(odd)" in info.value.message
