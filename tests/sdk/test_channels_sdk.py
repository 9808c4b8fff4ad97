"""The SDK's channels: create_channel / open_channel between two pyiii workers, over a real engine."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyiii import Worker, connect
from pyiii.config import parse_config
from pyiii.engine.channels import ChannelSettings
from pyiii.engine.server import Server
from pyiii.sdk import ChannelClosed, ChannelReader, ChannelWriter


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    config = dataclasses.replace(parse_config("workers: []\n", source="test"), port=0)
    srv = Server(dataclasses.replace(config, channels=ChannelSettings(ttl_s=0.5)))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def pair(server: Server) -> AsyncIterator[tuple[Worker, Worker]]:
    url = f"ws://127.0.0.1:{server.port}"
    a = await connect(url, name="creator")
    b = await connect(url, name="peer")
    yield a, b
    await a.shutdown()
    await b.shutdown()


def pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


async def routable(worker: Worker, function_id: str) -> None:
    for _ in range(100):
        try:
            await worker.trigger(function_id, {"ping": True}, timeout_ms=1000)
            return
        except Exception:
            await asyncio.sleep(0.02)
    raise AssertionError(f"{function_id} never became routable")


async def test_reader_ref_to_another_worker(pair: tuple[Worker, Worker]) -> None:
    creator, peer = pair

    async def consume(data: dict[str, Any]) -> Any:
        if data.get("ping"):
            return None
        reader = peer.open_channel(data["reader"])
        assert isinstance(reader, ChannelReader)
        texts: list[str] = []
        digest, size = hashlib.sha256(), 0
        async for message in reader:
            if isinstance(message, bytes):
                digest.update(message)
                size += len(message)
            else:
                texts.append(message)
        return {"texts": texts, "bytes": size, "sha256": digest.hexdigest()}

    peer.register_function("peer::consume", consume)
    await routable(creator, "peer::consume")
    channel = await creator.create_channel(buffer_size=4)
    data = pattern(16 * 1024 * 1024)
    call = asyncio.ensure_future(creator.trigger("peer::consume", {"reader": channel.reader_ref}))
    async with channel.writer as writer:
        await writer.send_json({"type": "start", "n": 1})
        await writer.send_bytes(data)
        await writer.send_text("done")
    result = await call
    assert result == {
        "texts": ['{"type":"start","n":1}', "done"],
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


async def test_writer_ref_to_another_worker_order_kept(pair: tuple[Worker, Worker]) -> None:
    creator, peer = pair

    async def produce(data: dict[str, Any]) -> Any:
        if data.get("ping"):
            return None
        writer = peer.open_channel(data["writer"])
        assert isinstance(writer, ChannelWriter)
        for i in range(data["n"]):
            await writer.send_text(f"t{i}")
            await writer.send_bytes(i.to_bytes(4, "big"))
        await writer.close()
        return {"sent": data["n"]}

    peer.register_function("peer::produce", produce)
    await routable(creator, "peer::produce")
    channel = await creator.create_channel()
    call = asyncio.ensure_future(creator.trigger("peer::produce", {"writer": channel.writer_ref, "n": 200}))
    got = [message async for message in channel.reader]
    assert await call == {"sent": 200}
    expected: list[str | bytes] = []
    for i in range(200):
        expected += [f"t{i}", i.to_bytes(4, "big")]
    assert got == expected


async def test_empty_stream_and_read_all(pair: tuple[Worker, Worker]) -> None:
    creator, _ = pair
    channel = await creator.create_channel()
    await channel.writer.close()  # never sent anything: the reader still sees an end
    assert await channel.reader.read_all() == b""
    second = await creator.create_channel()
    await second.writer.send_text("note")
    await second.writer.send_bytes(b"ab")
    await second.writer.send_bytes(b"cd")
    await second.writer.close()
    notes: list[str] = []
    assert await second.reader.read_all(on_text=notes.append) == b"abcd"
    assert notes == ["note"]


async def test_owner_disconnect_cuts_the_stream(server: Server, pair: tuple[Worker, Worker]) -> None:
    creator, peer = pair
    channel = await creator.create_channel()
    reader = peer.open_reader(channel.reader_ref)
    await channel.writer.send_text("before")
    assert await reader.get() == "before"
    await creator.shutdown()
    with pytest.raises(ChannelClosed) as info:
        await reader.get()
    assert info.value.code == "CHANNEL_CLOSED"
    assert "disconnected" in info.value.message
    assert len(server.engine.channels) == 0


async def test_writer_fails_once_the_reader_left(pair: tuple[Worker, Worker]) -> None:
    creator, peer = pair
    channel = await creator.create_channel(buffer_size=2)
    reader = peer.open_reader(channel.reader_ref)
    await channel.writer.send_text("one")
    assert await reader.get() == "one"
    await reader.close()
    with pytest.raises(ChannelClosed, match="reader disconnected"):
        for _ in range(1000):
            await channel.writer.send_bytes(b"z" * 4096)
            await asyncio.sleep(0.001)


async def test_bad_and_stale_refs(pair: tuple[Worker, Worker]) -> None:
    creator, _ = pair
    with pytest.raises(ValueError, match="not a channel ref"):
        creator.open_channel({"channel_id": "x"})
    channel = await creator.create_channel()
    with pytest.raises(ValueError, match="read side"):
        creator.open_writer(channel.reader_ref)
    forged = {**channel.reader_ref, "access_key": "guess"}
    with pytest.raises(ChannelClosed, match="cannot open the channel"):
        await creator.open_reader(forged).get()
    await asyncio.sleep(0.8)  # ttl 0.5 s in this fixture, nothing used the channel
    with pytest.raises(ChannelClosed, match="cannot open"):
        await creator.open_reader(channel.reader_ref).get()


async def test_sdk_writer_waits_while_the_reader_does_not_read(
    server: Server, pair: tuple[Worker, Worker]
) -> None:
    creator, peer = pair
    channel = await creator.create_channel(buffer_size=4)
    reader = peer.open_reader(channel.reader_ref)
    chunk = pattern(64 * 1024)
    total = 128 * 1024 * 1024
    sent = 0

    async def write() -> None:
        nonlocal sent
        await channel.writer.send_text("start")
        while sent < total:
            await channel.writer.send_bytes(chunk)
            sent += len(chunk)
        await channel.writer.close()

    writing = asyncio.ensure_future(write())
    assert await reader.get() == "start"  # connected; now it stops reading for a while
    await asyncio.sleep(1.0)
    # The writer is stuck after what the buffers on the way hold (the engine's own
    # part is the channel's 4 messages), not 128 MiB further.
    assert not writing.done()
    assert sent <= IN_FLIGHT_MAX, sent
    assert server.engine.channels.buffered_bytes() <= 4 * len(chunk)
    assert server.engine.stats()["channel_stalls"] > 0
    received = 0
    async for message in reader:
        assert message == chunk
        received += len(message)
    await writing
    assert received == total


# What the sockets on the way (two loopback hops), the engine and the SDK reader
# can hold at once; measured ~16 MiB on Linux with default TCP buffers.
IN_FLIGHT_MAX = 48 * 1024 * 1024
