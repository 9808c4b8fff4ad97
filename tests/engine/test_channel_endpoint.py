"""``/ws/channels/{id}?key=&dir=`` over real sockets, driven by an independent client (``websockets``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from pyiii import connect
from pyiii.config import parse_config
from pyiii.engine.channels import Channel, ChannelSettings
from pyiii.engine.server import Server
from support.ws_upgrade import upgrade_request


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    config = dataclasses.replace(parse_config("workers: []\n", source="test"), port=0)
    srv = Server(dataclasses.replace(config, channels=ChannelSettings(ttl_s=0.4)))
    await srv.start()
    yield srv
    await srv.stop()


def _url(srv: Server, ref: dict[str, str], *, key: str | None = None, direction: str | None = None) -> str:
    return (
        f"ws://127.0.0.1:{srv.port}/ws/channels/{ref['channel_id']}"
        f"?key={key if key is not None else ref['access_key']}&dir={direction or ref['direction']}"
    )


async def _open(srv: Server, ref: dict[str, str]) -> ClientConnection:
    return await websockets.connect(_url(srv, ref), max_size=None)


async def _raw_upgrade(port: int, target: str) -> bytes:
    """The engine's whole answer to a WebSocket upgrade of ``target``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(f"127.0.0.1:{port}", target))
    answer = await asyncio.wait_for(reader.read(), 5)  # the engine closes after a refusal
    writer.close()
    return answer


async def test_wrong_id_key_or_direction_is_the_same_404(server: Server) -> None:
    channel = server.engine.channels.create()
    w, r = channel.writer_ref, channel.reader_ref
    targets = {
        "unknown id": f"/ws/channels/00000000-0000-4000-8000-000000000000?key={w['access_key']}&dir=write",
        "wrong key": f"/ws/channels/{channel.id}?key=not-the-key&dir=write",
        "reader key, write side": f"/ws/channels/{channel.id}?key={r['access_key']}&dir=write",
        "writer key, read side": f"/ws/channels/{channel.id}?key={w['access_key']}&dir=read",
        "bad direction": f"/ws/channels/{channel.id}?key={w['access_key']}&dir=both",
        "no key": f"/ws/channels/{channel.id}?dir=write",
        "no query": f"/ws/channels/{channel.id}",
        "empty id": "/ws/channels/?key=x&dir=read",
    }
    answers = {name: await _raw_upgrade(server.port, t) for name, t in targets.items()}
    for name, answer in answers.items():
        assert answer.startswith(b"HTTP/1.1 404"), (name, answer[:80])
    # No hint which part was wrong: every refusal is byte-for-byte the same.
    assert len(set(answers.values())) == 1, answers
    assert channel.id.encode() not in next(iter(answers.values()))
    # And the refused attempts did not use up the channel.
    async with await _open(server, w) as writer, await _open(server, r) as reader:
        await writer.send("still works")
        assert await reader.recv() == "still works"


async def test_text_and_binary_in_order_then_end_on_close(server: Server) -> None:
    channel = server.engine.channels.create()
    reader = await _open(server, channel.reader_ref)  # the reader may come first
    writer = await _open(server, channel.writer_ref)
    sent: list[str | bytes] = ['{"type":"start"}', b"\x00\xff" * 40_000, "plain", b"", b"tail", '{"n":2}']
    for message in sent:
        await writer.send(message)
    await writer.close()
    got = [message async for message in reader]  # ends cleanly on the engine's 1000
    assert got == sent
    assert reader.close_code == 1000
    assert len(server.engine.channels) == 0  # finished channels leave the engine


async def test_reader_arriving_after_the_writer_ended_gets_everything(server: Server) -> None:
    channel = server.engine.channels.create()
    async with await _open(server, channel.writer_ref) as writer:
        await writer.send(b"early")
        await writer.send("bird")
    await asyncio.sleep(0.05)
    reader = await _open(server, channel.reader_ref)
    assert [m async for m in reader] == [b"early", "bird"]
    assert reader.close_code == 1000


async def test_a_side_opens_once(server: Server) -> None:
    channel = server.engine.channels.create()
    first = await _open(server, channel.writer_ref)
    with pytest.raises(websockets.InvalidStatus) as info:
        await _open(server, channel.writer_ref)
    assert info.value.response.status_code == 404
    await first.close()


async def test_writer_socket_dropped_without_close_frame_still_ends_the_stream(server: Server) -> None:
    # Node's ChannelWriter terminates its socket right after close(): the close frame may never come.
    channel = server.engine.channels.create()
    writer = await _open(server, channel.writer_ref)
    reader = await _open(server, channel.reader_ref)
    await writer.send("a")
    await writer.send(b"b")
    writer.transport.close()  # FIN, no close frame
    assert [m async for m in reader] == ["a", b"b"]
    assert reader.close_code == 1000


async def test_writer_closing_with_an_error_code_aborts(server: Server) -> None:
    channel = server.engine.channels.create()
    writer = await _open(server, channel.writer_ref)
    reader = await _open(server, channel.reader_ref)
    await writer.send("partial")
    await writer.close(code=4000, reason="producer failed")
    with pytest.raises(websockets.ConnectionClosedError):
        async for _ in reader:
            pass
    assert reader.close_code == 1011
    assert "4000" in (reader.close_reason or "")


async def test_reader_leaving_early_closes_the_writer(server: Server) -> None:
    channel = server.engine.channels.create(buffer_size=2)
    writer = await _open(server, channel.writer_ref)
    reader = await _open(server, channel.reader_ref)
    await writer.send(b"x")
    assert await reader.recv() == b"x"
    await reader.close()
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(1000):  # the engine closes us once it notices; sends then fail
            await writer.send(b"y" * 1024)
            await asyncio.sleep(0.001)
    assert writer.close_code == 1011
    assert "reader disconnected" in (writer.close_reason or "")
    assert len(server.engine.channels) == 0


async def test_fast_writer_waits_and_engine_buffer_stays_bounded(server: Server) -> None:
    manager = server.engine.channels
    channel = manager.create(buffer_size=4)
    writer = await _open(server, channel.writer_ref)
    reader = await _open(server, channel.reader_ref)
    chunk = bytes(range(256)) * 256  # 64 KiB
    total = 128 * 1024 * 1024
    sent = 0

    async def write_all() -> None:
        nonlocal sent
        while sent < total:
            await writer.send(chunk)
            sent += len(chunk)
        await writer.close()

    writing = asyncio.create_task(write_all())
    assert await reader.recv() == chunk  # the reader is there, then it stops reading
    await asyncio.sleep(1.0)
    assert not writing.done()
    assert sent <= 48 * 1024 * 1024, sent  # what the sockets on the way hold, not 128 MiB
    assert manager.buffered_bytes() <= 4 * len(chunk)  # buffer_size=4 messages, never more
    assert channel.stalls > 0
    received = len(chunk)
    peak = 0
    async for message in reader:
        assert message == chunk
        received += len(message)
        peak = max(peak, channel.buffered[1])
    await writing
    assert received == total
    assert peak <= 4 * len(chunk)


async def test_unused_channel_expires_and_its_socket_closes(server: Server) -> None:
    channel = server.engine.channels.create()  # ttl 0.4 s in this fixture
    writer = await _open(server, channel.writer_ref)
    await writer.send("nobody will read this")
    await asyncio.wait_for(writer.wait_closed(), 3)
    assert writer.close_code == 1011
    assert "expired" in (writer.close_reason or "")
    with pytest.raises(websockets.InvalidStatus):
        await _open(server, channel.reader_ref)


async def test_engine_channels_create_and_owner_disconnect(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}"
    owner = await connect(url, name="owner")
    refs = await owner.trigger("engine::channels::create", {"buffer_size": 8})
    assert set(refs) == {"writer", "reader"}
    assert refs["writer"]["direction"] == "write" and refs["reader"]["direction"] == "read"
    channel = server.engine.channels.channels[refs["writer"]["channel_id"]]
    assert isinstance(channel, Channel) and channel.max_messages == 8
    reader = await _open(server, refs["reader"])
    await owner.shutdown()
    await asyncio.wait_for(reader.wait_closed(), 3)
    assert reader.close_code == 1011
    assert "disconnected" in (reader.close_reason or "")
    assert len(server.engine.channels) == 0


@pytest.mark.parametrize(
    ("payload", "code"),
    [({"buffer_size": "big"}, "deserialization_error"), ({"buffer_size": 0}, "INVALID_ARGUMENTS")],
)
async def test_engine_channels_create_bad_input(server: Server, payload: object, code: str) -> None:
    async with await connect(f"ws://127.0.0.1:{server.port}", name="bad") as worker:
        with pytest.raises(Exception) as info:
            await worker.trigger("engine::channels::create", payload)
        assert getattr(info.value, "code", None) == code
        assert "buffer_size" in str(info.value)
        # The engine is fine afterwards: defaults apply to a null buffer_size (what Python sends).
        refs = await worker.trigger("engine::channels::create", {"buffer_size": None})
        assert server.engine.channels.channels[refs["reader"]["channel_id"]].max_messages == 64
