"""Streaming channels: a bounded pipe from one writer to one reader. No sockets.

``engine::channels::create`` hands a worker two refs; each side is then
opened over ``/ws/channels/{id}`` (transport.py) or used in-process (the
HTTP module reads a streamed response with ``get`` and feeds a request body
with ``put``). A message is text (``str``, a JSON text frame on the wire) or
``bytes`` (a binary frame).

Lifecycle: the writer puts messages and ``end``\\s; the reader gets them in
order and then ``None``. ``abort`` closes both sides at once and drops what
is buffered: the owner disconnected, the channel expired, the HTTP client
went away. A channel leaves its manager once it is aborted or its reader has
seen the end.

Memory: each channel buffers at most ``buffer_size`` messages and
``max_buffer_bytes`` bytes (whichever comes first; one message larger than
the byte bound is still let through alone, so it cannot deadlock). A writer
that is faster than its reader waits in ``put`` (or, over a socket, is no
longer read from), so the buffer never grows past the bound.

The two refs carry different access keys: a reader ref cannot open the write
side, nor a writer ref the read side. A channel only one side of which is
for sockets (the engine keeps the other) may be reserved instead of made:
its ref is handed out, and the channel is made when a socket opens it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyiii import errors
from pyiii.errors import IIIError
from pyiii.ids import random_key, random_uuid

if TYPE_CHECKING:
    from pyiii.engine.connection import Connection

log = logging.getLogger("pyiii.channels")

Message = str | bytes
READ = "read"
WRITE = "write"
BOTH = "both"  # ``sides`` of a channel both of whose ends may be opened over a socket

class ChannelClosed(Exception):
    """The channel was aborted (or the writer already ended); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Bounds of the channels of one engine (``channels:`` under ``iii-worker-manager``).

    ``default_buffer_size``/``max_buffer_size``: messages buffered per channel
    when ``buffer_size`` is omitted / at most (the reference's 64 and 1024);
    ``max_buffer_bytes``: bytes buffered per channel; ``ttl_s``: a channel a
    side of which was never used is aborted this long after it was created
    (the reference's 5 minutes); ``max_channels``: open channels per engine.
    """

    default_buffer_size: int = 64
    max_buffer_size: int = 1024
    max_buffer_bytes: int = 1024 * 1024
    ttl_s: float = 300.0
    max_channels: int = 10_000


def _size(message: Message) -> int:
    if isinstance(message, bytes):
        return len(message)
    # isascii() is O(1) on str; only non-ASCII text pays for an encode.
    return len(message) if message.isascii() else len(message.encode())


@dataclass(slots=True)
class _Spot:
    """A channel handed out as a ref but made only once a socket opens its ``direction``."""

    direction: str
    key: str
    opened: Callable[[Channel], None]


class Channel:
    """One channel: a bounded FIFO of messages from a writer to a reader."""

    __slots__ = (
        "_abort_callbacks",
        "_buffer",
        "_bytes",
        "_ended",
        "_manager",
        "_read_key",
        "_readers",
        "_reason",
        "_write_key",
        "_writers",
        "closed",
        "created_at",
        "id",
        "max_bytes",
        "max_messages",
        "owner",
        "reader_used",
        "stalls",
        "writer_used",
    )

    def __init__(
        self,
        channel_id: str | None = None,
        *,
        max_messages: int,
        max_bytes: int,
        owner: Connection | None = None,
        manager: ChannelManager | None = None,
        created_at: float = 0.0,
        sides: str = BOTH,
        key: str | None = None,
    ) -> None:
        self.id = channel_id or random_uuid()
        # A side the engine keeps for itself (``sides`` names the other one) has
        # no key: no socket can open it, and no key is drawn for nothing.
        # ``key``: the socket side's key, already handed out (a reserved channel).
        if key is not None and sides == BOTH:
            raise ValueError("a given key is for a channel with one socket side")
        self._write_key = (key or random_key()) if sides != READ else None
        self._read_key = (key or random_key()) if sides != WRITE else None
        self.max_messages = max(1, max_messages)
        self.max_bytes = max(1, max_bytes)
        self.owner = owner
        self.created_at = created_at
        self._manager = manager
        self._buffer: deque[Message] = deque()
        self._bytes = 0
        self._ended = False
        self._reason: str | None = None  # set once aborted
        self.closed = False  # aborted, or the reader has seen the end
        # A side counts as used once something put/ended (writer) or got (reader),
        # or a socket claimed it; channels with an unused side expire.
        self.writer_used = False
        self.reader_used = False
        self.stalls = 0  # times a writer had to wait for room (backpressure at work)
        self._readers: deque[asyncio.Future[None]] = deque()  # waiting for a message or the end
        self._writers: deque[asyncio.Future[None]] = deque()  # waiting for room
        self._abort_callbacks: list[Callable[[str], None]] = []

    # --- refs ------------------------------------------------------------

    @property
    def writer_ref(self) -> dict[str, str]:
        """What a worker needs to open the write side over a socket."""
        return self._ref(WRITE, self._write_key)

    @property
    def reader_ref(self) -> dict[str, str]:
        """What a worker needs to open the read side over a socket."""
        return self._ref(READ, self._read_key)

    def _ref(self, direction: str, key: str | None) -> dict[str, str]:
        if key is None:
            raise ValueError(f"the {direction} side of channel {self.id} is kept by the engine")
        return {"channel_id": self.id, "access_key": key, "direction": direction}

    # --- state -----------------------------------------------------------

    @property
    def ended(self) -> bool:
        """The writer has ended (messages may still be buffered for the reader)."""
        return self._ended

    @property
    def aborted(self) -> str | None:
        """Why the channel was aborted, or None."""
        return self._reason

    @property
    def buffered(self) -> tuple[int, int]:
        """(messages, bytes) waiting for the reader."""
        return len(self._buffer), self._bytes

    def key_for(self, direction: str) -> str | None:
        if direction == WRITE:
            return self._write_key
        if direction == READ:
            return self._read_key
        return None

    def claim(self, direction: str) -> bool:
        """Mark a side as taken by a socket; False if it was already used (one socket per side)."""
        if self.closed:
            return False
        if direction == WRITE:
            if self.writer_used:
                return False
            self.writer_used = True
            return True
        if direction == READ:
            if self.reader_used:
                return False
            self.reader_used = True
            return True
        return False

    def add_abort_callback(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the channel is aborted (at once if it already is)."""
        if self._reason is not None:
            callback(self._reason)
        else:
            self._abort_callbacks.append(callback)

    # --- writer ------------------------------------------------------------

    def _full(self, size: int) -> bool:
        return bool(self._buffer) and (
            len(self._buffer) >= self.max_messages or self._bytes + size > self.max_bytes
        )

    def offer(self, message: Message) -> bool:
        """Buffer ``message`` if there is room now; False if full (wait with ``put``).

        Raises ChannelClosed once aborted or ended. Never waits: this is what a
        socket callback uses, pausing its reads while it returns False.
        """
        self._check_writable()
        self.writer_used = True
        size = _size(message)
        if self._writers or self._full(size):
            return False
        self._push(message, size)
        return True

    async def put(self, message: Message) -> None:
        """Buffer ``message``, waiting while the buffer is full.

        Raises ChannelClosed if the channel is aborted (reader gone, expired)
        or the writer already ended.
        """
        self._check_writable()
        self.writer_used = True
        size = _size(message)
        if self._writers or self._full(size):
            await self._wait_room(size)
        self._push(message, size)
        if self._writers and not self._full(0):
            self._wake_writer()  # room left: the next waiting writer may fit too

    async def _wait_room(self, size: int) -> None:
        """Wait in line (FIFO) until ``size`` bytes fit; raises ChannelClosed on abort."""
        loop = asyncio.get_running_loop()
        self.stalls += 1
        if self._manager is not None:
            self._manager.stalls += 1
        head = False
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            if head:
                self._writers.appendleft(waiter)  # woken but still no room: keep our turn
            else:
                self._writers.append(waiter)
            head = True
            try:
                await waiter
            except BaseException:
                if waiter in self._writers:
                    self._writers.remove(waiter)
                elif waiter.done():
                    self._wake_writer()  # we were handed the turn: pass it on
                raise
            self._check_writable()
            if not self._full(size):
                return

    def _check_writable(self) -> None:
        if self._reason is not None:
            raise ChannelClosed(self._reason)
        if self._ended:
            raise ChannelClosed("the writer already ended the channel")

    def _push(self, message: Message, size: int) -> None:
        self._buffer.append(message)
        self._bytes += size
        self._wake_reader()

    def end(self) -> None:
        """The writer is done: the reader gets what is buffered, then the end. Idempotent."""
        if self._ended or self._reason is not None:
            return
        self._ended = True
        self.writer_used = True
        self._wake_reader()

    # --- reader ------------------------------------------------------------

    def poll(self) -> tuple[bool, Message | None]:
        """(True, message) if one is buffered, (True, None) at the end, (False, None) if none yet.

        Raises ChannelClosed once aborted. Never waits.
        """
        if self._reason is not None:
            raise ChannelClosed(self._reason)
        self.reader_used = True
        if self._buffer:
            message = self._buffer.popleft()
            self._bytes -= _size(message)
            self._wake_writer()
            return True, message
        if self._ended:
            self._maybe_done()
            return True, None
        return False, None

    async def get(self) -> Message | None:
        """The next message, or None once the writer ended and everything was read.

        Raises ChannelClosed if the channel is aborted (then buffered messages are dropped).
        """
        while True:
            ready, message = self.poll()
            if ready:
                return message
            waiter = asyncio.get_running_loop().create_future()
            self._readers.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._readers:
                    self._readers.remove(waiter)
                elif waiter.done():
                    self._wake_reader()  # a wake-up meant for us: pass it on
                raise

    def readable(self) -> asyncio.Future[None]:
        """A future done once ``poll`` has something to say (a message, the end, or the abort).

        For a reader that waits on several things at once without a task per wait.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._buffer or self._ended or self._reason is not None:
            waiter.set_result(None)
        else:
            self._readers.append(waiter)
        return waiter

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self.get()
            if message is None:
                return
            yield message

    # --- closing -----------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Close both sides now: waiting calls raise ChannelClosed, the buffer is dropped."""
        if self._reason is not None or self.closed:
            return
        self._reason = reason
        self.closed = True
        self._buffer.clear()
        self._bytes = 0
        for waiter in (*self._readers, *self._writers):
            if not waiter.done():
                waiter.set_result(None)
        self._readers.clear()
        self._writers.clear()
        callbacks, self._abort_callbacks = self._abort_callbacks, []
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:  # one broken listener must not keep the others open
                log.exception("channel %s: abort callback failed", self.id)
        if self._manager is not None:
            self._manager._forget(self)

    def _maybe_done(self) -> None:
        """The reader has seen the end: the channel is finished."""
        if not self.closed:
            self.closed = True
            self._abort_callbacks.clear()
            if self._manager is not None:
                self._manager._forget(self)

    def _wake_reader(self) -> None:
        wake_first(self._readers)

    def _wake_writer(self) -> None:
        wake_first(self._writers)

    def __repr__(self) -> str:
        state = "aborted" if self._reason else "closed" if self.closed else "ended" if self._ended else "open"
        return f"<Channel {self.id} {state} {len(self._buffer)} msgs {self._bytes} B>"


class ChannelManager:
    """The channels of one engine (``engine.channels``): create, find by key, expire, drop."""

    def __init__(
        self,
        settings: ChannelSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or ChannelSettings()
        self.clock = clock
        self.channels: dict[str, Channel] = {}
        self._spots: dict[str, _Spot] = {}  # reserved: made when a socket opens them
        self._by_owner: dict[Connection, set[str]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self.stalls = 0  # writer waits over the engine's life (engine::stats)
        # Compared against when the id is unknown, so a miss costs what a hit does.
        self._decoy = secrets.token_urlsafe(32).encode()

    def __len__(self) -> int:
        return len(self.channels)

    def buffered_bytes(self) -> int:
        """Bytes held in all channel buffers right now."""
        return sum(ch.buffered[1] for ch in self.channels.values())

    def create(
        self, *, buffer_size: int | None = None, owner: Connection | None = None, sides: str = BOTH
    ) -> Channel:
        """A new channel; ``buffer_size`` messages (default and ceiling from the settings).

        ``sides``: which end a socket may open (READ, WRITE or BOTH); the other is
        the engine's own (the HTTP module writes a request body and reads a response).

        Raises IIIError(LIMIT_EXCEEDED) when ``max_channels`` are open, and
        IIIError(INVALID_ARGUMENTS) for a buffer size below 1.
        """
        s = self.settings
        if buffer_size is None:
            size = s.default_buffer_size
        elif buffer_size < 1:
            raise IIIError(errors.INVALID_ARGUMENTS, f"buffer_size must be at least 1 (got {buffer_size})")
        else:
            size = min(buffer_size, s.max_buffer_size)
        if len(self.channels) >= s.max_channels:
            raise IIIError(
                errors.LIMIT_EXCEEDED,
                f"{s.max_channels} channels are open; close some, or raise "
                "iii-worker-manager.config.channels.max_channels",
            )
        channel = Channel(
            max_messages=size,
            max_bytes=s.max_buffer_bytes,
            owner=owner,
            manager=self,
            created_at=self.clock(),
            sides=sides,
        )
        self.channels[channel.id] = channel
        if owner is not None:
            self._by_owner.setdefault(owner, set()).add(channel.id)
        self._arm_sweep()
        return channel

    def reserve(self, direction: str, opened: Callable[[Channel], None]) -> dict[str, str]:
        """A ref whose channel is made only when a socket opens it (``direction``, its one side).

        The other side is the engine's. When a socket opens the ref the channel
        is made, ``opened(channel)`` runs, and the socket is served; until then
        the ref costs a dict entry. ``release`` withdraws it (a channel made
        from it stays the caller's to abort). For the HTTP module: most
        functions neither read the raw body nor stream a response, and two
        channels made per request were a quarter of its Python time.
        """
        channel_id = random_uuid()
        key = random_key()
        self._spots[channel_id] = _Spot(direction, key, opened)
        return {"channel_id": channel_id, "access_key": key, "direction": direction}

    def release(self, channel_id: str) -> None:
        """Withdraw a reserved ref (nothing if a socket already opened it)."""
        self._spots.pop(channel_id, None)

    def get(self, channel_id: str, access_key: str, direction: str) -> Channel | None:
        """The open channel if ``access_key`` opens that side of it, else None.

        A reserved ref's channel is made here. The key is compared in constant
        time, and against a decoy when the id is unknown, so the answer's
        timing says nothing about which part was wrong.
        """
        channel = self.channels.get(channel_id)
        spot = self._spots.get(channel_id) if channel is None else None
        if channel is not None:
            expected = channel.key_for(direction)
        elif spot is not None:
            expected = spot.key if direction == spot.direction else None
        else:
            expected = None
        want = expected.encode() if expected is not None else self._decoy
        ok = hmac.compare_digest(want, access_key.encode("utf-8", "replace"))
        if not ok or expected is None:
            return None
        if spot is not None:
            return self._make(channel_id, spot)
        if channel is None or channel.closed:
            return None
        return channel

    def _make(self, channel_id: str, spot: _Spot) -> Channel | None:
        """The channel of a reserved ref its socket is opening (None when too many are open)."""
        s = self.settings
        if len(self.channels) >= s.max_channels:
            log.warning("a reserved channel was refused: %d channels are open", s.max_channels)
            return None
        del self._spots[channel_id]
        channel = Channel(
            channel_id,
            max_messages=s.default_buffer_size,
            max_bytes=s.max_buffer_bytes,
            manager=self,
            created_at=self.clock(),
            sides=spot.direction,
            key=spot.key,
        )
        self.channels[channel_id] = channel
        self._arm_sweep()
        try:
            spot.opened(channel)
        except Exception:
            log.exception("channel %s: the callback of its reservation failed", channel_id)
            channel.abort("the channel could not be opened")
            return None
        return channel

    def drop_owner(self, conn: Connection) -> None:
        """Abort every channel ``conn`` created (it disconnected)."""
        ids = self._by_owner.pop(conn, None)
        if not ids:
            return
        log.info("closing %d channel(s) of disconnected worker %s", len(ids), conn.name)
        for channel_id in list(ids):
            channel = self.channels.get(channel_id)
            if channel is not None:
                channel.abort(f"the worker that created the channel ({conn.name}) disconnected")

    def abort_all(self, reason: str) -> None:
        """Abort every channel (engine shutdown); reserved refs open nothing any more."""
        self._spots.clear()
        for channel in list(self.channels.values()):
            channel.abort(reason)
        self._disarm()

    def sweep(self, now: float | None = None) -> int:
        """Abort channels older than ``ttl_s`` with a side nobody ever used; how many."""
        now = self.clock() if now is None else now
        ttl = self.settings.ttl_s
        stale = [
            ch
            for ch in self.channels.values()
            if now - ch.created_at >= ttl and not (ch.writer_used and ch.reader_used)
        ]
        for channel in stale:
            channel.abort(f"channel expired: unused for {ttl:g}s")
        if stale:
            log.info("expired %d unused channel(s)", len(stale))
        return len(stale)

    # --- internals ---------------------------------------------------------

    def _forget(self, channel: Channel) -> None:
        if self.channels.get(channel.id) is channel:
            del self.channels[channel.id]
        if channel.owner is not None:
            ids = self._by_owner.get(channel.owner)
            if ids is not None:
                ids.discard(channel.id)
                if not ids:
                    del self._by_owner[channel.owner]

    def _arm_sweep(self) -> None:
        # A timer only while channels exist: an idle engine runs no sweeper. It
        # is not cancelled when the last channel closes (the HTTP module opens and
        # closes two per request); the next tick finds nothing and stops it.
        if self._sweep is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous test): sweep() is called by hand
        interval = min(60.0, max(self.settings.ttl_s / 4, 0.05))
        self._sweep = loop.call_later(interval, self._on_sweep)

    def _on_sweep(self) -> None:
        self._sweep = None
        self.sweep()
        if self.channels:
            self._arm_sweep()

    def _disarm(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


def wake_first(waiters: deque[asyncio.Future[None]]) -> bool:
    """Resolve the first waiter still waiting (earlier, cancelled ones are dropped); whether one was."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return True
    return False
