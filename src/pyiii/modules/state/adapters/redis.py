"""State in Redis, shared by every engine that points at the same server.

Key layout (``<p>`` is the prefix, ``pyiii`` by default; ``<t>`` is the
scope's *tag*, see below). Everything of one scope carries the hash tag
``{<t>}``, so it lives in one Redis Cluster slot, and every transaction
touches that one slot only (a cluster refuses a ``MULTI`` spanning slots
with ``CROSSSLOT``):

* ``<p>:{<t>}:kv`` -- one hash per scope. Field = key (UTF-8); value =
  ``<version>:<ord>:<json text>``, e.g. ``7:3:{"a":1}``. ``version`` changes
  on every write; ``ord`` is the version at which the key was (re)created, so
  sorting by it gives the in-memory adapter's ``list`` order (overwrite keeps
  the position, delete + re-insert moves to the end) from one ``HGETALL``.
  Redis deletes the hash by itself when its last field goes, so the hashes
  that exist are exactly the non-empty scopes: ``list_groups`` is a ``SCAN``
  for ``<p>:{*}:kv`` (on a cluster, of every primary) and there is no
  registry to keep in step.
* ``<p>:{<t>}:version`` -- the scope's counter; ``INCR`` after the watch
  starts gives each write a version larger than that of every earlier
  committed write of the same key (a write that committed before us changed
  the watched hash, so either our watch started after it or our ``EXEC``
  fails). Versions are monotonic per key (per scope, even), not store-wide.
  The counter outlives the scope's last key, so a key deleted and created
  again still gets a larger version (no ABA for compare-and-set); this costs
  one small key per scope ever written.
* ``<p>:{<t>}:events`` -- pub/sub channel carrying the scope's committed
  changes; engines ``PSUBSCRIBE`` to ``<p>:{*}:events``. ``PUBLISH`` has no
  key, so the server allows it in any transaction; the channel is per scope
  only because redis-py's cluster client routes ``PUBLISH`` by its channel
  and checks that a transaction stays in one slot.

The tag is the scope's UTF-8 bytes (``surrogatepass``, so any Python string
round-trips) percent-encoded: printable ASCII other than space, ``%``, ``{``
and ``}`` stays as is, every other byte becomes ``%XX`` (upper-case hex), e.g.
``a:b`` -> ``a:b``, ``{x}`` -> ``%7Bx%7D``, ``café`` -> ``caf%C3%A9``. The
empty scope is ``%`` (an empty ``{}`` would make Redis hash the whole key
name, scattering the scope over several slots). A tag never holds a brace,
so the hash tag Redis sees (from the first ``{`` to the next ``}``) is exactly
the tag, and ``list_groups`` decodes the scope back from it. The prefix may
not contain braces for the same reason.

Redis Cluster: when the server named by ``redis_url`` reports
``cluster_enabled:1`` (``INFO cluster``), the adapter talks to it through
``redis.asyncio.RedisCluster``, which finds the other nodes and routes each
call to the slot's primary; the event subscription stays on the node of
``redis_url`` (classic pub/sub messages reach every node of a cluster).
Nothing else changes. (redis-py runs each command of a cluster transaction
through a helper thread, so a cluster write costs a few milliseconds.)

Why WATCH/MULTI/EXEC instead of a Lua script: ``mutate`` gets a pure Python
function (set, delete, update ops). We read the field under ``WATCH``, run the
function client-side, and write the result in ``MULTI``/``EXEC``; if another
client changed the hash meanwhile, ``EXEC`` fails and we run the function
again on the new value. Update-op semantics therefore live only in ``ops.py``;
the reference's Lua port of the ops is where its Redis adapter diverges from
its in-memory one (``[]`` becomes ``{}``, numbers lose precision, absent-key
defaults do not apply). The cost is three or four round trips per write
(WATCH, HGET, INCR unless deleting, MULTI..EXEC) and optimistic conflicts
between writers of the same scope (``WATCH`` covers the whole hash); writers
in one engine queue on a per-scope lock so only writers on different engines
ever conflict. Conflicts retry with full-jitter backoff (1 ms doubling to
50 ms) up to ``MAX_ATTEMPTS`` times, then fail with ``AdapterError``.

Change events: the transaction that writes a key also ``PUBLISH``es the
change (msgpack ``[event_type, scope, key, old, new]``), so an event exists
iff the write committed, in commit order (per scope). Each engine subscribes
once and hands every event, its own included, to its State triggers, so a
binding fires once per change wherever its worker is connected. Delivery is
at-most-once: a change committed while an engine's subscription is down
(Redis restarting, network trouble, or a subscriber that falls behind
Redis's ``client-output-buffer-limit pubsub``) is never delivered to that
engine's triggers; the reader reconnects and resubscribes by itself.

Failures: a Redis that cannot be reached makes calls fail fast with an
``AdapterError`` naming the URL (the State module turns it into
``SET_ERROR``/``GET_ERROR``/...); the engine stays up and the same calls work
again once Redis is back. A write whose connection drops after ``EXEC`` was
sent reports an error although it may have committed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import random
import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyiii.errors import ConfigError
from pyiii.modules.state.adapters.base import (
    AdapterError,
    ChangeListener,
    Entry,
    Mutation,
    StateAdapter,
    _Keep,
)
from pyiii.modules.state.triggers import CREATED, DELETED, UPDATED

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 100
BACKOFF_START_S = 0.001
BACKOFF_MAX_S = 0.05
OPEN_TIMEOUT_S = 5.0
# A stopped Redis refuses connections at once; these bound the cases where
# packets just vanish, so a call never hangs much longer than this.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 64
SUBSCRIBER_BACKOFF_MAX_S = 1.0

_Event = tuple[bytes, bytes, bytes, bytes | None, bytes | None]
_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(_Event)
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
# RedisClusterException (no slot owner, cross-slot, ...) is not a RedisError.
_FAILURES = (RedisError, RedisClusterException, OSError)


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


# Bytes that stand for themselves in a tag: printable ASCII but space, %, { and }.
_TAG_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%{}")
_EMPTY_TAG = b"%"


@functools.lru_cache(maxsize=4096)
def _tag(scope: str) -> bytes:
    """The scope as it appears between the braces of its keys (see module docstring)."""
    if not scope:
        return _EMPTY_TAG
    return urllib.parse.quote_from_bytes(_b(scope), safe=_TAG_SAFE).encode("ascii")


def _untag(tag: bytes) -> str | None:
    """The scope a tag stands for; None for text ``_tag`` never produces."""
    if tag == _EMPTY_TAG:
        return ""
    try:
        scope = _s(urllib.parse.unquote_to_bytes(tag))
    except UnicodeDecodeError:
        return None
    return scope if _tag(scope) == tag else None


def _glob_escape(text: bytes) -> bytes:
    """``text`` as a literal inside a Redis glob pattern (SCAN MATCH, PSUBSCRIBE)."""
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", text)


def _parse(stored: bytes | None) -> tuple[Entry | None, int]:
    """``<version>:<ord>:<json>`` -> (Entry, ord)."""
    if stored is None:
        return None, 0
    try:
        version, ord_, raw = stored.split(b":", 2)
        return Entry(raw, int(version)), int(ord_)
    except ValueError:
        raise AdapterError(
            f"Redis holds a value not written by pyiii ({stored[:40]!r}...); is another program"
            " using the same key prefix?"
        ) from None


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable redis_url>"


class _ScopeLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class RedisAdapter(StateAdapter):
    """State in a Redis server, shared by several engines (see module docstring)."""

    def __init__(self, redis_url: str, *, prefix: str = "pyiii") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"Redis key prefix {prefix!r} must not contain braces (they move the hash tag)")
        self.url = redis_url
        self._where = redact(redis_url)
        self._prefix = _b(prefix)
        escaped = _glob_escape(self._prefix)
        self._kv_pattern = escaped + b":{*}:kv"
        self.channel_pattern = escaped + b":{*}:events"
        self._redis: Any = None
        self.cluster = False
        self._sub_client: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._listener: ChangeListener | None = None
        self._locks: dict[str, _ScopeLock] = {}

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        # One immediate retry: it replaces a pooled connection that died with
        # a Redis restart; more retries (redis-py's default backs off for
        # seconds) would only delay the error when Redis is really down.
        retry = Retry(NoBackoff(), 1)
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=SOCKET_TIMEOUT_S,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                retry=retry,
            )
            # The subscriber blocks on reads by design: no socket timeout, but
            # a periodic PING notices a peer that silently went away.
            sub_pool = aioredis.ConnectionPool.from_url(
                self.url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                health_check_interval=10,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"state adapter redis: invalid redis_url {self._where!r}: {exc}") from None
        self._redis = aioredis.Redis.from_pool(pool)
        self._sub_client = aioredis.Redis.from_pool(sub_pool)
        self.cluster = False
        try:
            await asyncio.wait_for(self._redis.ping(), OPEN_TIMEOUT_S)
            if await asyncio.wait_for(self._is_cluster(), OPEN_TIMEOUT_S):
                await self._redis.aclose()
                # No retries: redis-py would re-send a transaction's MULTI..EXEC
                # on a new connection, without the WATCH the old one held.
                self.cluster = True
                self._redis = aioredis.RedisCluster.from_url(
                    self.url,
                    socket_timeout=SOCKET_TIMEOUT_S,
                    socket_connect_timeout=CONNECT_TIMEOUT_S,
                    retry=Retry(NoBackoff(), 0),
                )
                await asyncio.wait_for(self._redis.initialize(), OPEN_TIMEOUT_S)
            self._reader = asyncio.create_task(self._read_events(), name="pyiii-redis-events")
            await asyncio.wait_for(self._subscribed.wait(), OPEN_TIMEOUT_S)
        except (*_FAILURES, TimeoutError) as exc:
            await self.close()
            if self.cluster and not isinstance(exc, _UNREACHABLE):
                raise ConfigError(
                    f"state adapter redis: the Redis Cluster at {self._where} is not usable ({exc})"
                ) from None
            raise ConfigError(
                f"state adapter redis: cannot reach Redis at {self._where} within {OPEN_TIMEOUT_S:g}s"
                f" ({exc or type(exc).__name__}); start redis-server or fix redis_url"
            ) from None

    async def _is_cluster(self) -> bool:
        try:
            info = await self._redis.info("cluster")
        except ResponseError:  # INFO renamed or not allowed: assume a plain server
            return False
        return bool(info.get("cluster_enabled"))

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        for client in (self._redis, self._sub_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._redis = self._sub_client = None

    def subscribe(self, listener: ChangeListener) -> bool:
        self._listener = listener
        return True

    # --- reads ----------------------------------------------------------------

    def _key(self, scope: str, kind: bytes) -> bytes:
        """``<prefix>:{<tag>}:<kind>`` (kind: kv, version, events)."""
        return b"%s:{%s}:%s" % (self._prefix, _tag(scope), kind)

    def _kv(self, scope: str) -> bytes:
        return self._key(scope, b"kv")

    def _failure(self, exc: Exception) -> AdapterError:
        if isinstance(exc, _UNREACHABLE):
            return AdapterError(f"Redis at {self._where} is unreachable ({exc or type(exc).__name__})")
        return AdapterError(f"Redis at {self._where} failed: {exc}")

    def _client(self) -> Any:
        if self._redis is None:
            raise AdapterError(f"the Redis adapter for {self._where} is not open")
        return self._redis

    async def get(self, scope: str, key: str) -> Entry | None:
        client = self._client()
        try:
            stored = await client.hget(self._kv(scope), _b(key))
        except _FAILURES as exc:
            raise self._failure(exc) from None
        return _parse(stored)[0]

    async def list(self, scope: str) -> builtins.list[Entry]:
        client = self._client()
        try:
            fields: dict[bytes, bytes] = await client.hgetall(self._kv(scope))
        except _FAILURES as exc:
            raise self._failure(exc) from None
        rows = [_parse(v) for v in fields.values()]
        rows.sort(key=lambda row: row[1])
        return [entry for entry, _ in rows if entry is not None]

    async def list_groups(self) -> builtins.list[str]:
        client = self._client()
        head, tail = len(self._prefix) + 2, -len(b"}:kv")
        scopes: set[str] = set()
        try:
            # SCAN may return a key twice; each match is a non-empty scope.
            async for name in client.scan_iter(match=self._kv_pattern, count=1000):
                scope = _untag(name[head:tail])
                if scope is not None:
                    scopes.add(scope)
        except _FAILURES as exc:
            raise self._failure(exc) from None
        return sorted(scopes)

    # --- writes ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _exclusive(self, scope: str) -> AsyncIterator[None]:
        """Serialize this engine's writers of one scope (they would only conflict)."""
        slot = self._locks.get(scope)
        if slot is None:
            slot = self._locks[scope] = _ScopeLock()
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            if not slot.users:
                del self._locks[scope]

    async def mutate(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        client = self._client()
        kv, field = self._kv(scope), _b(key)
        async with self._exclusive(scope):
            delay = BACKOFF_START_S
            for _ in range(MAX_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(kv)
                        old, ord_ = _parse(await pipe.hget(kv, field))
                    except _FAILURES as exc:
                        raise self._failure(exc) from None
                    # Outside the try: fn's own exceptions propagate untouched
                    # (the pipeline's exit unwatches).
                    raw = fn(old)
                    if isinstance(raw, _Keep) or (raw is None and old is None):
                        return old, old
                    try:
                        new = await self._commit(pipe, scope, field, old, ord_, raw)
                    except WatchError:
                        pass
                    except _FAILURES as exc:
                        raise self._failure(exc) from None
                    else:
                        return old, new
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, BACKOFF_MAX_S)
        raise AdapterError(
            f"Redis at {self._where}: gave up writing {scope!r}/{key!r} after {MAX_ATTEMPTS} attempts,"
            " other engines kept changing the scope at the same time; retry the call"
        )

    async def _commit(
        self, pipe: Any, scope: str, field: bytes, old: Entry | None, ord_: int, raw: bytes | None
    ) -> Entry | None:
        """Write ``raw`` (None = delete) and its event in one MULTI/EXEC on the scope's slot."""
        scope_b, kv, channel = _b(scope), self._kv(scope), self._key(scope, b"events")
        if raw is None:
            assert old is not None
            pipe.multi()
            pipe.hdel(kv, field)
            # execute_command: redis-py's cluster pipeline blocks pipe.publish().
            event: _Event = (DELETED, scope_b, field, old.raw, None)
            pipe.execute_command("PUBLISH", channel, _event_encoder.encode(event))
            await pipe.execute()
            return None
        version = int(await pipe.incr(self._key(scope, b"version")))
        if old is None:
            ord_ = version
            event = (CREATED, scope_b, field, None, raw)
        else:
            event = (UPDATED, scope_b, field, old.raw, raw)
        pipe.multi()
        pipe.hset(kv, field, b"%d:%d:" % (version, ord_) + raw)
        pipe.execute_command("PUBLISH", channel, _event_encoder.encode(event))
        await pipe.execute()
        return Entry(raw, version)

    # --- change events ----------------------------------------------------------

    async def _read_events(self) -> None:
        """Subscribe, deliver events, and resubscribe after any connection loss."""
        delay = 0.05
        lost = False
        while True:
            pubsub = self._sub_client.pubsub()
            try:
                await pubsub.psubscribe(self.channel_pattern)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "pmessage" or kind == b"pmessage":
                        self._deliver(message["data"])
                    elif kind in ("psubscribe", b"psubscribe"):
                        if lost:
                            log.warning("state events from Redis at %s flow again", self._where)
                        lost = False
                        delay = 0.05
                        self._subscribed.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:
                    log.warning(
                        "state events from Redis at %s interrupted (%s); changes made until the"
                        " subscription is back will not fire triggers on this engine",
                        self._where,
                        exc or type(exc).__name__,
                    )
                lost = True
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())
            await asyncio.sleep(delay)
            delay = min(delay * 2, SUBSCRIBER_BACKOFF_MAX_S)

    def _deliver(self, data: bytes) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            event_type, scope, key, old, new = _event_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring undecodable state event on %r: %s", self.channel_pattern, exc)
            return
        try:
            listener(event_type, _s(scope), _s(key), old, new)
        except Exception:
            log.exception("state event listener failed")
