"""The client port's edges: auth_function, refused connections, clients that stop reading."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from support.engines import running_server, sdk_worker, url_of
from support.stream_engines import StreamEngine, stream_config, wait_until
from support.ws_upgrade import upgrade_request

MEMORY = "{name: kv, config: {store_method: in_memory}}"


@pytest.fixture
async def auth_engine() -> AsyncIterator[StreamEngine]:
    async with (
        running_server(stream_config(MEMORY, ", auth_function: auth::check")) as server,
        sdk_worker(url_of(server), "auth") as w,
    ):
        yield StreamEngine(server, w, "in_memory")


async def test_auth_function_gets_the_request_and_its_context_reaches_join(auth_engine: StreamEngine) -> None:
    e = auth_engine
    seen: list[Any] = []
    joins: list[Any] = []

    def check(inp: Any) -> Any:
        seen.append(inp)
        if inp["headers"].get("x-token") != "good":
            raise ValueError("bad token")
        return {"context": {"user": inp["query_params"]["user"][0]}}

    e.worker.register_function("auth::check", check)
    e.worker.register_function("t::join", lambda ev: joins.append(ev) or {})
    e.worker.register_trigger({"type": "stream:join", "function_id": "t::join", "config": {}})
    await wait_until(lambda: ("default", "auth::check") in e.server.engine.functions, 3, "registration")
    async with e.client("/stream/chat?user=al&x=1&x=2", additional_headers={"X-Token": "good"}) as c:
        await c.join("s", "chat", "room")
        assert (await c.recv())["event"] == {"type": "sync", "data": []}
    inp = seen[0]
    assert inp["path"] == "/stream/chat"
    assert inp["query_params"] == {"user": ["al"], "x": ["1", "2"]}
    assert inp["headers"]["x-token"] == "good" and "host" in inp["headers"]
    assert inp["addr"].startswith("127.0.0.1:")
    assert joins[0]["context"] == {"user": "al"}

    # refused: an error frame naming the auth function, then a close with a reason
    async with e.client("/", additional_headers={"X-Token": "bad"}) as c:
        err = await c.recv()
        assert err["type"] == "error" and err["error"]["code"] == "AUTH_ERROR"
        assert "auth::check" in err["error"]["message"]
        with pytest.raises(websockets.ConnectionClosed) as info:
            await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert "AUTH_ERROR" in info.value.rcvd.reason


async def test_frames_sent_before_auth_finishes_are_handled_after_it(auth_engine: StreamEngine) -> None:
    e = auth_engine

    async def slow_check(inp: Any) -> Any:
        await asyncio.sleep(0.3)
        return {"context": None}

    e.worker.register_function("auth::check", slow_check)
    await wait_until(lambda: ("default", "auth::check") in e.server.engine.functions, 3, "registration")
    await e.call("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
    async with e.client() as c:
        await c.join("early", "s", "g")  # sent at once, while the auth function still runs
        assert (await c.recv())["event"] == {"type": "sync", "data": [1]}


class _SilentClient:
    """A WebSocket client that joins and then never reads a byte."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, join: dict[str, Any]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        sock = writer.get_extra_info("socket")
        import socket

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(upgrade_request(f"127.0.0.1:{self.port}"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 101 " in head
        payload = json.dumps(join).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        size = (
            bytes([0x80 | len(payload)])
            if len(payload) < 126
            else bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        )
        writer.write(b"\x81" + size + mask + masked)
        await writer.drain()
        self.writer = writer


async def test_a_client_that_stops_reading_is_dropped_and_others_are_not(tmp_path: Path) -> None:
    limit = 256 * 1024
    config = stream_config(MEMORY, f", max_send_buffer_bytes: {limit}")
    async with running_server(config) as server, sdk_worker(url_of(server), "w") as w:
        e = StreamEngine(server, w, "in_memory")
        module = e.module
        silent = _SilentClient(module.port)
        join = {"type": "join", "data": {"subscriptionId": "s", "streamName": "big", "groupId": "g"}}
        await silent.open(join)
        async with e.client() as c:
            await c.join("s", "big", "g")
            assert (await c.recv())["event"]["type"] == "sync"
            await wait_until(lambda: module.stats()["subscriptions"] == 2, 3, "both joins")
            blob = "x" * 100_000
            n = 150  # 15 MB in all, far over what the kernel buffers of the silent client hold
            for i in range(n):
                await e.call(
                    "stream::set", {"stream_name": "big", "group_id": "g", "item_id": str(i), "data": blob}
                )
                assert (await c.recv())["id"] == str(i)  # the reading client gets every change
            await wait_until(lambda: module.stats()["clients"] == 1, 5, "the silent client dropped")
            assert module.stats()["subscriptions"] == 1
            # the engine held no more than the limit (plus one frame) for it
            assert all(t.underlying_transport.get_write_buffer_size() <= limit + 110_000 for t in module.live)
        assert silent.writer is not None
        silent.writer.close()


async def test_a_flood_of_joins_is_served_in_order_without_unbounded_buffering(tmp_path: Path) -> None:
    async with running_server(stream_config(MEMORY)) as server, sdk_worker(url_of(server), "w") as w:
        e = StreamEngine(server, w, "in_memory")
        async with e.client() as c:
            n = 2000
            await asyncio.gather(*(c.join(f"s{i}", "flood", f"g{i}") for i in range(n)))
            got = [await c.recv(timeout=20) for _ in range(n)]
            assert [g["groupId"] for g in got] == [f"g{i}" for i in range(n)]
            assert e.module.stats()["subscriptions"] == n
            await e.call(
                "stream::set", {"stream_name": "flood", "group_id": "g1999", "item_id": "i", "data": 1}
            )
            assert (await c.recv())["event"] == {"type": "create", "data": 1}
