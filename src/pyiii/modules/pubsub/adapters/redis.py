"""``redis``: Redis pub/sub carries each message to every engine with subscribers.

The channel is the topic itself and the message is the JSON text of
``data``, as the reference engine does, so engines of both kinds (and
``redis-cli PUBLISH orders '{"id": 1}'``) can share topics. Each engine
keeps one subscriber connection, subscribed to exactly the topics it has
bindings for; a message it receives goes once to each of its bindings. The
publishing engine hears its own messages back like everyone else, so each
subscriber, wherever it is connected, gets a message once.

Failures: ``publish`` to a Redis that cannot be reached fails with a message
naming the URL. The subscriber reconnects by itself and subscribes again;
messages published while it was away are not delivered to this engine
(pub/sub keeps nothing). A message that is not JSON text (published by some
other program) is dropped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from pyiii.modules.pubsub.adapters.base import Deliver, PublishFailed, PubSubAdapter
from pyiii.redis_conn import FAILURES, RedisConnection

log = logging.getLogger("pyiii.pubsub")

BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 1.0
READ_TIMEOUT_S = 1.0  # get_message wakes this often to notice close()
CLOSE_TIMEOUT_S = 3.0
BAD_MESSAGE_LOG_INTERVAL_S = 10.0


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _wire(topic: str) -> bytes:
    return topic.encode("utf-8", "surrogateescape")


class RedisAdapter(PubSubAdapter):
    """Topics as Redis channels; one subscriber connection per engine."""

    def __init__(self, redis_url: str) -> None:
        self._conn = RedisConnection(redis_url, owner="pubsub adapter redis")
        self.where = self._conn.where
        self._deliver: Deliver | None = None
        self._wanted: set[str] = set()  # topics with bindings on this engine
        self._pubsub: Any = None  # the live redis-py PubSub, None while reconnecting
        self._subscribed: set[str] = set()  # topics SUBSCRIBE was sent for on it
        self.confirmed: set[str] = set()  # topics Redis confirmed on it
        self._sync_lock = asyncio.Lock()
        self._sync_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._want = asyncio.Event()  # set when a topic is wanted (wakes an idle reader)
        self._closing = False
        self._bad_logged = 0.0

    def describe(self) -> str:
        return f"redis at {self.where} (every engine's subscribers)"

    async def open(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self._conn.open()
        self._reader = asyncio.create_task(self._read(), name="pyiii-pubsub-redis")

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._reader, self._sync_task) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # redis-py may swallow a cancellation inside a read with a timeout;
            # the _closing flag ends the loop at its next turn.
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        await self._conn.close()
        self._deliver = None

    # --- publish ------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes) -> None:
        try:
            await self._conn.client.publish(_wire(topic), payload)
        except FAILURES as exc:
            raise PublishFailed(self._conn.failure(exc)) from None

    # --- subscriptions ------------------------------------------------------------

    def subscribe(self, topic: str) -> None:
        self._wanted.add(topic)
        self._resync()

    def unsubscribe(self, topic: str) -> None:
        self._wanted.discard(topic)
        self._resync()

    def _resync(self) -> None:
        self._want.set()
        if self._closing or self._pubsub is None:
            return  # the reader subscribes to everything wanted when it (re)connects
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self._sync(), name="pyiii-pubsub-redis-sync")

    async def _sync(self) -> None:
        """Bring the live connection's subscriptions in line with ``_wanted``."""
        async with self._sync_lock:
            while (pubsub := self._pubsub) is not None:
                add = self._wanted - self._subscribed
                drop = self._subscribed - self._wanted
                if not add and not drop:
                    return
                try:
                    if add:
                        await pubsub.subscribe(*map(_wire, add))
                        self._subscribed |= add
                    if drop:
                        await pubsub.unsubscribe(*map(_wire, drop))
                        self._subscribed -= drop
                        self.confirmed -= drop
                except FAILURES:
                    return  # the reader sees the broken connection and starts over

    # --- receiving ----------------------------------------------------------------

    async def _read(self) -> None:
        delay = BACKOFF_START_S
        lost = False
        while not self._closing:
            if not self._wanted:
                # Nothing to receive: no connection held until a binding appears.
                self._want.clear()
                await self._want.wait()
                continue
            pubsub = self._conn.subscriber.pubsub()
            try:
                async with self._sync_lock:
                    self._subscribed = set(self._wanted)
                    self.confirmed = set()
                    await pubsub.subscribe(*map(_wire, self._subscribed))
                    self._pubsub = pubsub
                if lost:
                    log.warning("pub/sub messages from Redis at %s flow again", self.where)
                lost = False
                delay = BACKOFF_START_S
                self._resync()  # topics added or removed while we were connecting
                while not self._closing and (self._wanted or pubsub.subscribed):
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                    if message is not None:
                        self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:
                    log.warning(
                        "pub/sub subscription to Redis at %s lost (%s); messages published until it is"
                        " back do not reach this engine's subscribers",
                        self.where,
                        exc or type(exc).__name__,
                    )
                lost = True
            finally:
                self._pubsub = None
                self._subscribed = set()
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())
            if lost and not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = _text(message["type"])
        topic = _text(message["channel"]) if message.get("channel") is not None else ""
        if kind == "subscribe":
            self.confirmed.add(topic)
            return
        if kind == "unsubscribe":
            self.confirmed.discard(topic)
            return
        if kind != "message" or topic not in self._wanted or self._deliver is None:
            return
        data = message["data"]
        payload = data if isinstance(data, bytes) else str(data).encode()
        try:
            msgspec.json.decode(payload, type=msgspec.Raw)  # checks it is one JSON value
        except msgspec.DecodeError as exc:
            now = time.monotonic()
            if now - self._bad_logged >= BAD_MESSAGE_LOG_INTERVAL_S:
                self._bad_logged = now
                log.warning("dropping a message on topic %r that is not JSON text: %s", topic, exc)
            return
        self._deliver(topic, payload)
