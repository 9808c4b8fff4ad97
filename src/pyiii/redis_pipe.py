"""One pipelined connection to a (non-cluster) Redis, for the hot paths of the adapters.

redis-py's asyncio client takes a pooled connection per command, wraps every
read in a timeout context and cannot share a socket between concurrent
callers. ``RedisPipe`` is the opposite trade: one socket that every caller
shares. Commands are written in call order (those issued during one
event-loop turn leave in one ``send``), Redis answers them in the same order,
and each reply (parsed by hiredis) resolves the future of its command. So
concurrent callers are pipelined for free, one command costs one round trip,
and a call only ever awaits a plain asyncio future (no task needed).

* Errors Redis replies with become ``redis.exceptions.ResponseError`` (the
  future fails; the connection stays up).
* A lost connection fails every command in flight with ``ConnectionError``;
  the next call opens a new one (re-sending ``AUTH``/``SELECT``). A command
  that gets no reply for ``timeout`` seconds fails with ``TimeoutError`` and
  drops the connection, like redis-py's socket timeout.
* Commands are not retried: a command in flight when the connection dropped
  may or may not have run.

Only plain TCP URLs (``redis://``) are served here; ``RedisConnection``
offers no pipe for TLS, Unix sockets or a cluster, and the adapters then use
redis-py for everything.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int


def encode_command(args: Sequence[Arg]) -> bytes:
    """The RESP array of ``args`` (bytes as they are, str as UTF-8, int in decimal)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8", "surrogatepass")
        else:
            data = b"%d" % arg
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: RedisPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader(replyError=ResponseError)

    def data_received(self, data: bytes) -> None:
        self.pipe._received(self.reader, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe._lost(self, exc)


class RedisPipe:
    """A shared, pipelined connection (see module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout: float = 5.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self.host, self.port = host, port
        self._hello: list[list[Arg]] = []
        if password is not None:
            self._hello.append(["AUTH", username, password] if username else ["AUTH", password])
        if db:
            self._hello.append(["SELECT", db])
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._out: list[bytes] = []
        self._progress = 0.0  # monotonic time of the last reply (or of the first command waiting)
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self.error: Exception | None = None  # why the last connection attempt failed

    # --- calls ----------------------------------------------------------------

    def call(self, *args: Arg) -> asyncio.Future[Any]:
        """Send one command; a future of its reply (a plain future: await it anywhere)."""
        return self.send(encode_command(args))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Send one already encoded command (``encode_command``); a future of its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(RedisConnectionError("the Redis connection is closed"))
            return future
        idle = not self._pending
        if idle:
            self._progress = time.monotonic()
        self._pending.append(future)
        out = self._out
        if idle and not out and self._transport is not None:
            # Nothing in flight: likely a lone caller, so send now rather than
            # at the end of the loop turn (busy pipes still coalesce).
            self._transport.write(command)
        else:
            out.append(command)
        if len(out) == 1:
            if self._transport is not None:
                loop.call_soon(self._flush)
            elif self._connecting is None:
                self._connecting = loop.create_task(self._connect(), name="pyiii-redis-pipe-connect")
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout, self._check)
        return future

    async def open(self) -> None:
        """Connect now (the first call would otherwise); raises what connecting raised."""
        if self._transport is None:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            await asyncio.shield(self._connecting)
        if self._transport is None:
            raise self.error or RedisConnectionError(f"cannot connect to {self.host}:{self.port}")

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._transport is not None:
            self._transport.close()
        self._fail_all(RedisConnectionError("the Redis connection was closed"))

    # --- connection -------------------------------------------------------------

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port
                )
        except asyncio.CancelledError:
            self._connecting = None
            self._fail_all(RedisConnectionError("the Redis connection was closed"))
            raise
        except Exception as exc:
            # Every waiting command fails with this; open() raises it.
            self._connecting = None
            self.error = RedisConnectionError(
                f"Error connecting to {self.host}:{self.port}: {exc or type(exc).__name__}"
            )
            self._fail_all(self.error)
            return
        self._connecting = None
        self.error = None
        if self._closed:
            transport.close()
            return
        self._transport, self._protocol = transport, protocol  # type: ignore[assignment]
        if self._hello:
            # Ahead of every queued command, with futures of their own at the front.
            hello = [encode_command(args) for args in self._hello]
            futures = [loop.create_future() for _ in hello]
            for future in reversed(futures):
                self._pending.appendleft(future)
                future.add_done_callback(self._hello_done)
            self._out[:0] = hello
        self._flush()

    def _hello_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None and self._transport is not None:
            # AUTH/SELECT refused: every command behind it fails the same way.
            error = future.exception()
            self._transport.close()
            assert error is not None
            self._fail_all(error)

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            data = b"".join(self._out)
            self._out.clear()
            self._transport.write(data)

    def _received(self, reader: Any, data: bytes) -> None:
        reader.feed(data)
        pending = self._pending
        self._progress = time.monotonic()
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                if self._transport is not None:
                    self._transport.close()
                self._fail_all(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:  # cannot happen with a well-behaved server
                continue
            future = pending.popleft()
            if future.done():
                continue  # the caller gave up waiting
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        self._transport = self._protocol = None
        reason = f" ({exc})" if exc else ""
        self._fail_all(RedisConnectionError(f"Connection to Redis lost{reason}"))

    def _fail_all(self, error: BaseException) -> None:
        pending, self._pending = self._pending, collections.deque()
        self._out.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)

    def _check(self) -> None:
        self._watchdog = None
        if not self._pending:
            return
        waited = time.monotonic() - self._progress
        if waited >= self.timeout:
            transport = self._transport
            self._transport = self._protocol = None
            if transport is not None:
                transport.close()
            self._fail_all(RedisTimeoutError(f"Timeout reading from {self.host}:{self.port}"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout - waited, self._check)


class _Listener(asyncio.Protocol):
    """A connection in subscribe mode: hands every ``pmessage`` payload on."""

    def __init__(self, on_message: Any, on_subscribed: Any, lost: asyncio.Future[Exception | None]) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.on_message, self.on_subscribed, self.lost = on_message, on_subscribed, lost
        self.seen = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.seen = time.monotonic()
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if isinstance(reply, ResponseError):
                if not self.lost.done():
                    self.lost.set_result(reply)
                return
            kind = reply[0] if isinstance(reply, list) and reply else None
            if kind == b"pmessage":
                self.on_message(reply[3])
            elif kind == b"psubscribe":
                self.on_subscribed()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def listen(
    pipe: RedisPipe,
    pattern: bytes,
    on_message: Any,
    on_subscribed: Any,
    health_check_s: float = 10.0,
) -> None:
    """``PSUBSCRIBE pattern`` on a connection of its own (the server of ``pipe``) and
    call ``on_message(payload)`` per message, in order, straight from the socket
    (no task, no per-message timeout). Returns never; raises ``ConnectionError``
    once the connection is lost. A ``PING`` every ``health_check_s`` notices a
    dead peer (no reply within two more intervals drops the connection)."""
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[Exception | None] = loop.create_future()
    try:
        async with asyncio.timeout(pipe.connect_timeout):
            transport, protocol = await loop.create_connection(
                lambda: _Listener(on_message, on_subscribed, lost), pipe.host, pipe.port
            )
    except Exception as exc:
        raise RedisConnectionError(
            f"Error connecting to {pipe.host}:{pipe.port}: {exc or type(exc).__name__}"
        ) from None
    try:
        commands: list[list[Arg]] = [*pipe._hello, ["PSUBSCRIBE", pattern]]
        transport.write(b"".join(encode_command(args) for args in commands))
        while not lost.done():
            await asyncio.wait([lost], timeout=health_check_s)
            if lost.done():
                break
            if time.monotonic() - protocol.seen > 3 * health_check_s:
                raise RedisTimeoutError(f"no reply from {pipe.host}:{pipe.port} in {3 * health_check_s:g} s")
            transport.write(encode_command(["PING"]))
        reason = lost.result()
        raise RedisConnectionError(f"Connection to Redis lost ({reason or 'closed by the server'})")
    finally:
        transport.close()
