"""The channel core (engine/channels.py): order, end, backpressure, bounds, expiry, abort, keys."""

from __future__ import annotations

import asyncio
import hmac
import time

import pytest

from pyiii import errors
from pyiii.engine.channels import READ, WRITE, Channel, ChannelClosed, ChannelManager, ChannelSettings
from pyiii.engine.connection import Connection
from pyiii.errors import IIIError


def _conn() -> Connection:
    return Connection(lambda data: None, lambda code, reason: None)


async def _drain(channel: Channel) -> list[str | bytes]:
    return [message async for message in channel]


# --- order and end ------------------------------------------------------------


async def test_messages_arrive_in_order_then_the_end() -> None:
    channel = ChannelManager().create()
    await channel.put("first")
    await channel.put(b"\x00\x01")
    await channel.put('{"n": 3}')
    channel.end()
    assert await _drain(channel) == ["first", b"\x00\x01", '{"n": 3}']
    assert await channel.get() is None  # the end stays the end
    assert channel.closed


async def test_reader_that_arrives_after_the_end_still_gets_everything() -> None:
    manager = ChannelManager()
    channel = manager.create()
    await channel.put("buffered")
    channel.end()
    # Ended but unread: the channel must still be findable for the reader's socket.
    assert manager.get(channel.id, channel.reader_ref["access_key"], "read") is channel
    assert await _drain(channel) == ["buffered"]
    assert len(manager) == 0  # finished channels leave the manager


async def test_put_after_end_raises() -> None:
    channel = ChannelManager().create()
    channel.end()
    with pytest.raises(ChannelClosed):
        await channel.put("late")


async def test_refs_have_the_wire_shape_and_distinct_keys() -> None:
    channel = ChannelManager().create()
    assert set(channel.writer_ref) == {"channel_id", "access_key", "direction"}
    assert channel.writer_ref["direction"] == "write" and channel.reader_ref["direction"] == "read"
    assert channel.writer_ref["channel_id"] == channel.reader_ref["channel_id"] == channel.id
    # Holding the reader ref must not let anyone write, and the other way round.
    assert channel.writer_ref["access_key"] != channel.reader_ref["access_key"]


# --- backpressure and bounds -----------------------------------------------------


async def test_fast_writer_waits_for_slow_reader_and_buffer_stays_bounded() -> None:
    settings = ChannelSettings(max_buffer_bytes=64 * 1024)
    channel = ChannelManager(settings).create(buffer_size=8)
    chunk = b"x" * 16 * 1024
    peak = [0, 0]
    received: list[bytes | str] = []

    async def slow_reader() -> None:
        while (message := await channel.get()) is not None:
            received.append(message)
            await asyncio.sleep(0.001)

    reader = asyncio.create_task(slow_reader())
    started = time.monotonic()
    for _ in range(200):  # 3.2 MiB through a 64 KiB pipe
        await channel.put(chunk)
        msgs, size = channel.buffered
        peak = [max(peak[0], msgs), max(peak[1], size)]
    channel.end()
    await reader
    assert len(received) == 200 and all(m == chunk for m in received)
    assert peak[1] <= 64 * 1024, peak  # never more than the byte bound
    assert peak[0] <= 8
    # The writer really waited: 200 reads of >= 1 ms each.
    assert time.monotonic() - started >= 0.15


async def test_message_count_bounds_small_messages() -> None:
    channel = ChannelManager().create(buffer_size=3)
    for i in range(3):
        assert channel.offer(f"m{i}")
    assert not channel.offer("m3")  # full by count, far below the byte bound
    put = asyncio.create_task(channel.put("m3"))
    await asyncio.sleep(0.01)
    assert not put.done()
    assert await channel.get() == "m0"
    await asyncio.wait_for(put, 1)
    assert channel.buffered == (3, 6)


async def test_a_message_larger_than_the_byte_bound_passes_alone() -> None:
    channel = ChannelManager(ChannelSettings(max_buffer_bytes=10)).create()
    await asyncio.wait_for(channel.put(b"y" * 100), 1)  # empty buffer: let it through
    assert not channel.offer(b"z")  # but nothing joins it
    assert await channel.get() == b"y" * 100


async def test_waiting_writers_keep_their_order() -> None:
    channel = ChannelManager().create(buffer_size=1)
    await channel.put("a")
    tasks = [asyncio.create_task(channel.put(x)) for x in ("b", "c", "d")]
    await asyncio.sleep(0)
    got = [await channel.get() for _ in range(4)]
    await asyncio.gather(*tasks)
    assert got == ["a", "b", "c", "d"]


async def test_a_cancelled_waiting_writer_does_not_block_the_next() -> None:
    channel = ChannelManager().create(buffer_size=1)
    await channel.put("a")
    first = asyncio.create_task(channel.put("b"))
    second = asyncio.create_task(channel.put("c"))
    await asyncio.sleep(0)
    first.cancel()
    assert await channel.get() == "a"
    await asyncio.wait_for(second, 1)
    assert await channel.get() == "c"


def test_buffer_size_default_ceiling_and_floor() -> None:
    manager = ChannelManager()
    assert manager.create().max_messages == 64
    assert manager.create(buffer_size=5000).max_messages == 1024
    with pytest.raises(IIIError) as info:
        manager.create(buffer_size=0)
    assert info.value.code == errors.INVALID_ARGUMENTS


def test_max_channels_is_a_clear_error() -> None:
    manager = ChannelManager(ChannelSettings(max_channels=2))
    manager.create()
    manager.create()
    with pytest.raises(IIIError) as info:
        manager.create()
    assert info.value.code == errors.LIMIT_EXCEEDED
    assert "max_channels" in info.value.message


# --- abort -------------------------------------------------------------------------


async def test_abort_wakes_a_waiting_reader_and_writer() -> None:
    channel = ChannelManager().create(buffer_size=1)
    reader_channel = ChannelManager().create()
    reading = asyncio.create_task(reader_channel.get())
    await channel.put("fills it")
    writing = asyncio.create_task(channel.put("waits"))
    await asyncio.sleep(0.01)
    channel.abort("client went away")
    reader_channel.abort("client went away")
    with pytest.raises(ChannelClosed, match="client went away"):
        await writing
    with pytest.raises(ChannelClosed):
        await reading
    with pytest.raises(ChannelClosed):
        await channel.get()  # buffered messages are dropped, not delivered
    assert channel.closed and channel.buffered == (0, 0)


async def test_abort_callbacks_run_once() -> None:
    channel = ChannelManager().create()
    seen: list[str] = []
    channel.add_abort_callback(seen.append)
    channel.abort("gone")
    channel.abort("again")
    channel.add_abort_callback(seen.append)  # registered late: runs at once
    assert seen == ["gone", "gone"]


async def test_drop_owner_aborts_only_that_workers_channels() -> None:
    manager = ChannelManager()
    a, b = _conn(), _conn()
    a1, a2 = manager.create(owner=a), manager.create(owner=a)
    b1, free = manager.create(owner=b), manager.create()
    waiting = asyncio.create_task(a1.get())
    await asyncio.sleep(0)
    manager.drop_owner(a)
    with pytest.raises(ChannelClosed, match="disconnected"):
        await waiting
    assert a1.closed and a2.closed and not b1.closed and not free.closed
    assert set(manager.channels) == {b1.id, free.id}
    manager.drop_owner(a)  # twice is harmless


# --- expiry ---------------------------------------------------------------------------


def test_sweep_expires_channels_with_an_unused_side() -> None:
    now = [1000.0]
    manager = ChannelManager(ChannelSettings(ttl_s=300), clock=lambda: now[0])
    never = manager.create()
    half = manager.create()
    half.offer("written, never read")
    both = manager.create()
    both.offer("x")
    both.poll()
    now[0] += 299
    assert manager.sweep() == 0
    now[0] += 2
    assert manager.sweep() == 2
    assert never.aborted and half.aborted and "expired" in (never.aborted or "")
    assert not both.closed  # both sides in use: a long stream is never cut
    assert set(manager.channels) == {both.id}


async def test_expiry_runs_by_itself() -> None:
    manager = ChannelManager(ChannelSettings(ttl_s=0.2))
    channel = manager.create()
    await asyncio.wait_for(channel.put("nobody reads"), 1)  # room in the buffer
    blocked = asyncio.create_task(_put_until_closed(channel))
    with pytest.raises(ChannelClosed, match="expired"):
        await asyncio.wait_for(blocked, 2)
    assert len(manager) == 0
    assert manager._sweep is None  # no timer left once nothing is open


async def test_sweep_timer_stops_after_the_last_channel() -> None:
    # Not cancelled on every close (two per HTTP request): the next tick finds
    # nothing open and does not come back.
    manager = ChannelManager(ChannelSettings(ttl_s=0.2))  # a tick every 0.05 s
    for _ in range(3):
        manager.create().abort("done")
    assert len(manager) == 0
    assert manager._sweep is not None
    await asyncio.sleep(0.15)
    assert manager._sweep is None
    channel = manager.create()  # and a new channel arms it again
    assert manager._sweep is not None
    channel.abort("done")


async def _put_until_closed(channel: Channel) -> None:
    while True:  # fills the buffer, then waits in put() until the sweeper aborts it
        await channel.put("more")


# --- keys ------------------------------------------------------------------------------


def test_get_checks_id_key_and_direction() -> None:
    manager = ChannelManager()
    channel = manager.create()
    wkey, rkey = channel.writer_ref["access_key"], channel.reader_ref["access_key"]
    assert manager.get(channel.id, wkey, "write") is channel
    assert manager.get(channel.id, rkey, "read") is channel
    assert manager.get(channel.id, rkey, "write") is None  # a reader ref cannot write
    assert manager.get(channel.id, wkey, "read") is None
    assert manager.get(channel.id, wkey, "sideways") is None
    assert manager.get(channel.id, wkey[:-1], "write") is None
    assert manager.get(channel.id, "", "write") is None
    assert manager.get(channel.id, "ключ", "write") is None  # non-ASCII input is just wrong
    assert manager.get("no-such-id", wkey, "write") is None
    channel.abort("x")
    assert manager.get(channel.id, wkey, "write") is None


def test_a_side_the_engine_keeps_has_no_key() -> None:
    manager = ChannelManager()
    body = manager.create(sides=READ)  # the engine writes, a socket may only read
    rkey = body.reader_ref["access_key"]
    assert manager.get(body.id, rkey, "read") is body
    assert body.key_for("write") is None
    assert manager.get(body.id, rkey, "write") is None
    assert manager.get(body.id, "", "write") is None
    with pytest.raises(ValueError, match="kept by the engine"):
        body.writer_ref  # noqa: B018
    response = manager.create(sides=WRITE)
    assert manager.get(response.id, response.writer_ref["access_key"], "write") is response
    assert response.key_for("read") is None
    with pytest.raises(ValueError, match="kept by the engine"):
        response.reader_ref  # noqa: B018


def test_a_reserved_channel_is_made_when_its_side_is_opened() -> None:
    manager = ChannelManager()
    made: list[Channel] = []
    ref = manager.reserve(READ, made.append)
    assert ref["direction"] == "read" and len(ref["access_key"]) == 43
    assert len(manager) == 0  # nothing made yet
    cid, key = ref["channel_id"], ref["access_key"]
    assert manager.get(cid, key, "write") is None  # the other side is the engine's
    assert manager.get(cid, key[:-1] + ("A" if key[-1] != "A" else "B"), "read") is None
    assert made == [] and len(manager) == 0
    channel = manager.get(cid, key, "read")
    assert channel is not None and made == [channel]
    assert channel.id == cid and channel.reader_ref == ref and channel.key_for("write") is None
    assert manager.get(cid, key, "read") is channel  # made once; then an ordinary channel
    channel.abort("done")
    assert manager.get(cid, key, "read") is None
    assert len(manager) == 0


def test_a_released_reservation_opens_nothing() -> None:
    manager = ChannelManager()
    made: list[Channel] = []
    ref = manager.reserve(WRITE, made.append)
    manager.release(ref["channel_id"])
    assert manager.get(ref["channel_id"], ref["access_key"], "write") is None
    assert made == []
    manager.release(ref["channel_id"])  # twice is harmless
    other = manager.reserve(WRITE, made.append)
    manager.abort_all("shutdown")  # an engine stopping withdraws them too
    assert manager.get(other["channel_id"], other["access_key"], "write") is None


def test_a_reserved_channel_counts_against_max_channels_when_made() -> None:
    manager = ChannelManager(ChannelSettings(max_channels=1))
    made: list[Channel] = []
    ref = manager.reserve(READ, made.append)
    manager.create()  # the one channel allowed
    assert manager.get(ref["channel_id"], ref["access_key"], "read") is None
    assert made == []


def test_key_check_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every lookup, hit or miss, known id or not, goes through hmac.compare_digest.
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("pyiii.engine.channels.hmac.compare_digest", spy)
    manager = ChannelManager()
    channel = manager.create()
    key = channel.writer_ref["access_key"]
    manager.get(channel.id, key, "write")
    manager.get(channel.id, "wrong", "write")
    manager.get("unknown", key, "write")
    assert len(calls) == 3
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
    # An unknown id is compared against a decoy of a real key's length.
    assert len(calls[2][0]) == len(key)


# --- readable(): waiting without a task ------------------------------------------


async def test_readable_is_done_when_poll_has_something_to_say() -> None:
    channel = ChannelManager().create()
    waiting = channel.readable()
    await asyncio.sleep(0)
    assert not waiting.done() and channel.poll() == (False, None)
    await channel.put("status")
    assert waiting.done()  # woken by the message, which is still there
    assert channel.readable().done()  # something buffered: done at once
    assert channel.poll() == (True, "status")
    ended = channel.readable()
    channel.end()
    assert ended.done() and channel.poll() == (True, None)


async def test_readable_is_done_on_abort_and_poll_then_raises() -> None:
    channel = ChannelManager().create()
    waiting = channel.readable()
    channel.abort("client left")
    assert waiting.done()
    with pytest.raises(ChannelClosed, match="client left"):
        channel.poll()


async def test_a_cancelled_readable_does_not_swallow_the_next_wake_up() -> None:
    channel = ChannelManager().create()
    channel.readable().cancel()
    getter = asyncio.ensure_future(channel.get())
    await asyncio.sleep(0)
    await channel.put(b"x")
    assert await asyncio.wait_for(getter, 1) == b"x"
