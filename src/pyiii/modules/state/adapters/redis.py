"""State in Redis, shared by every engine that points at the same server.

Key layout (``<p>`` is the prefix, ``pyiii`` by default; ``<t>`` is the
scope's *tag*, see below). Everything of one scope carries the hash tag
``{<t>}``, so it lives in one Redis Cluster slot, and every transaction
touches that one slot only (a cluster refuses a ``MULTI`` spanning slots
with ``CROSSSLOT``):

* ``<p>:{<t>}:kv`` -- one hash per scope. Field = key (UTF-8); value =
  ``<version>:<ord>:<json text>``, e.g. ``7:3:{"a":1}``, or for a key with
  an expiry ``<version>:<ord>:e<expires_at>:<json text>`` (ms since the
  epoch; ``e`` never starts JSON text). ``version`` changes
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
* ``<p>:{<t>}:keys`` -- sorted set of the scope's keys, all with score 0,
  so Redis orders them by their bytes (UTF-8 order = code-point order):
  ``state::list`` with ``prefix``/``limit``/``cursor`` is one
  ``ZRANGEBYLEX`` from the cursor plus one ``HMGET``, and ``state::count``
  with a prefix is ``ZLEXCOUNT``. Written in the same ``MULTI`` as the hash
  (``ZADD`` on create, ``ZREM`` on delete), so it always holds exactly the
  hash's fields; a scope written before the index existed (``HLEN`` differs
  from ``ZCARD``) gets it rebuilt, under ``WATCH``, when it is first listed.
* ``<p>:{<t>}:ttl`` -- sorted set of the scope's keys that have an expiry,
  scored by ``expires_at``; kept in the same ``MULTI`` as the hash.
* ``<p>:ttl-scopes`` -- sorted set of scope tags scored by (at most) the
  earliest expiry in that scope: where the sweepers look (see Expiry). It is
  a hint, outside the scope's slot, so it is updated after the commit.
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

Expiry: Redis 7.0 cannot expire one field of a hash (``HEXPIRE`` is 7.4+)
and the layout keeps a scope in one hash, so the expiry is stored with the
value. Every read compares it with the clock and treats an expired entry as
absent (get, list, count, list_groups, preconditions), so expiry is exact
whatever the sweeper's delay. Removal: each engine runs a sweeper that
wakes at the earliest ``<p>:ttl-scopes`` score (or after at most
``SWEEP_POLL_S``), and for each due scope deletes the expired fields under
``WATCH`` in one ``MULTI`` that also ``PUBLISH``es ``state:expired`` for
each; a write that replaces an expired entry publishes its expiry itself in
its own ``MULTI``. Either way the event is published by the transaction that
removes the entry, so it fires exactly once even with several engines
sweeping. If an engine dies between a TTL write's ``EXEC`` and its
``<p>:ttl-scopes`` update, the key still reads as absent once expired, but
its removal and event wait for the next rescan (every engine ``SCAN``s for
``<p>:{*}:ttl`` at start and every ``RESCAN_INTERVAL_S``).

Transactions (``mutate_many``): ``WATCH`` every scope hash involved, read the
keys, run the mutations client-side, then one ``MULTI``/``EXEC`` with every
write and its event, retried as a whole on conflict. Atomic across engines.
On a Redis Cluster the scopes of one transaction live in different slots,
which ``MULTI`` cannot span: a transaction there may touch one scope only,
and one that touches several fails with an ``AdapterError`` that says so.

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
from collections import Counter
from collections.abc import AsyncIterator, Sequence
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
    ExpiryListener,
    Mutation,
    MutationItem,
    StateAdapter,
    _Keep,
    net_changes,
    now_ms,
    stored,
)
from pyiii.modules.state.triggers import CREATED, DELETED, EXPIRED, UPDATED

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
# The sweeper looks at <p>:ttl-scopes at least this often (other engines'
# expiries), and SCANs for every <p>:{*}:ttl this often (lost hints).
SWEEP_POLL_S = 1.0
RESCAN_INTERVAL_S = 300.0
SWEEP_BATCH = 256
# Keys per ZRANGEBYLEX while listing without a limit.
LIST_BATCH = 1000

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
    """``<version>:<ord>:[e<expires_at>:]<json>`` -> (Entry, ord)."""
    if stored is None:
        return None, 0
    try:
        version, ord_, raw = stored.split(b":", 2)
        if raw[:1] == b"e":
            expiry, raw = raw[1:].split(b":", 1)
            return Entry(raw, int(version), int(expiry)), int(ord_)
        return Entry(raw, int(version)), int(ord_)
    except ValueError:
        raise AdapterError(
            f"Redis holds a value not written by pyiii ({stored[:40]!r}...); is another program"
            " using the same key prefix?"
        ) from None


def _format(entry: Entry, ord_: int) -> bytes:
    if entry.expires_at is None:
        return b"%d:%d:" % (entry.version, ord_) + entry.raw
    return b"%d:%d:e%d:" % (entry.version, ord_, entry.expires_at) + entry.raw


def _live(entry: Entry | None, now: int) -> Entry | None:
    """``entry``, or None when it is absent or expired at ``now``."""
    if entry is None or (entry.expires_at is not None and entry.expires_at <= now):
        return None
    return entry


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


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
        self._ttl_scopes = self._prefix + b":ttl-scopes"
        self._ttl_pattern = escaped + b":{*}:ttl"
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._wake_at = 0  # ms: when the sweeper looks next

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
        for task in (self._sweeper, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._sweeper = self._reader = None
        for client in (self._redis, self._sub_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._redis = self._sub_client = None

    def subscribe(self, listener: ChangeListener) -> bool:
        self._listener = listener
        return True

    def on_expired(self, listener: ExpiryListener) -> None:
        # Expiries travel over pub/sub like every change (as state:expired),
        # to the subscribe() listener of every engine; here we only start
        # this engine's sweeper.
        if self._sweeper is None and self._redis is not None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="pyiii-redis-expiry")

    # --- reads ----------------------------------------------------------------

    def _key(self, scope: str, kind: bytes) -> bytes:
        """``<prefix>:{<tag>}:<kind>`` (kind: kv, version, keys, ttl, events)."""
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
            stored_value = await client.hget(self._kv(scope), _b(key))
        except _FAILURES as exc:
            raise self._failure(exc) from None
        return _live(_parse(stored_value)[0], now_ms())

    async def get_many(self, scope: str, keys: Sequence[str]) -> builtins.list[Entry | None]:
        if not keys:
            return []
        client = self._client()
        try:
            values = await client.hmget(self._kv(scope), [_b(k) for k in keys])
        except _FAILURES as exc:
            raise self._failure(exc) from None
        now = now_ms()
        return [_live(_parse(v)[0], now) for v in values]

    async def list(self, scope: str) -> builtins.list[Entry]:
        client = self._client()
        try:
            fields: dict[bytes, bytes] = await client.hgetall(self._kv(scope))
        except _FAILURES as exc:
            raise self._failure(exc) from None
        now = now_ms()
        rows = [_parse(v) for v in fields.values()]
        rows.sort(key=lambda row: row[1])
        return [entry for entry, _ in rows if entry is not None and _live(entry, now) is not None]

    async def list_page(
        self, scope: str, prefix: str, after: str | None, limit: int | None
    ) -> tuple[builtins.list[tuple[str, Entry]], bool]:
        client = self._client()
        kv, index = self._kv(scope), self._key(scope, b"keys")
        start = _b(prefix)
        low = b"[" + start if start else b"-"
        if after is not None and after >= prefix:
            low = b"(" + _b(after)
        end = _prefix_end(start)
        high = b"(" + end if end is not None else b"+"
        rows: builtins.list[tuple[str, Entry]] = []
        try:
            await self._ensure_index(scope)
            while True:
                want = LIST_BATCH if limit is None else limit + 1 - len(rows)
                members: builtins.list[bytes] = await client.zrangebylex(index, low, high, start=0, num=want)
                if not members:
                    break
                values = await client.hmget(kv, members)
                now = now_ms()
                for member, value in zip(members, values, strict=True):
                    entry = _live(_parse(value)[0], now)  # None: deleted or expired meanwhile
                    if entry is not None:
                        rows.append((_s(member), entry))
                low = b"(" + members[-1]
                if len(members) < want or (limit is not None and len(rows) > limit):
                    break
        except _FAILURES as exc:
            raise self._failure(exc) from None
        if limit is not None and len(rows) > limit:
            return rows[:limit], True
        return rows, False

    async def count(self, scope: str, prefix: str) -> int:
        client = self._client()
        index, ttl = self._key(scope, b"keys"), self._key(scope, b"ttl")
        start = _b(prefix)
        end = _prefix_end(start)
        try:
            await self._ensure_index(scope)
            async with client.pipeline(transaction=False) as pipe:
                if start:
                    pipe.zlexcount(index, b"[" + start, b"(" + end if end is not None else b"+")
                else:
                    pipe.zcard(index)
                pipe.zrangebyscore(ttl, "-inf", now_ms())
                total, expired = await pipe.execute()
        except _FAILURES as exc:
            raise self._failure(exc) from None
        # Expired entries stay in the index until a sweeper removes them.
        return int(total) - sum(1 for member in expired if member.startswith(start))

    async def _ensure_index(self, scope: str) -> None:
        """Rebuild ``<p>:{<t>}:keys`` if it does not hold exactly the hash's fields."""
        client = self._client()
        kv, index = self._kv(scope), self._key(scope, b"keys")
        async with client.pipeline(transaction=False) as pipe:
            pipe.hlen(kv)
            pipe.zcard(index)
            fields, indexed = await pipe.execute()
        if fields == indexed:
            return
        async with self._exclusive(scope):
            for _ in range(MAX_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(kv)
                    names: builtins.list[bytes] = await pipe.hkeys(kv)
                    pipe.multi()
                    pipe.delete(index)
                    for i in range(0, len(names), 1000):
                        pipe.zadd(index, dict.fromkeys(names[i : i + 1000], 0))
                    try:
                        await pipe.execute()
                    except WatchError:
                        continue
                    log.info("state: rebuilt the key index of scope %r (%d keys)", scope, len(names))
                    return
        raise AdapterError(f"Redis at {self._where}: could not index scope {scope!r}; retry the call")

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
            # A scope whose every key has expired (not yet swept) is empty.
            candidates = sorted(scopes)
            now = now_ms()
            async with client.pipeline(transaction=False) as pipe:
                for scope in candidates:
                    pipe.hlen(self._kv(scope))
                    pipe.zcount(self._key(scope, b"ttl"), "-inf", now)
                counts = await pipe.execute() if candidates else []
        except _FAILURES as exc:
            raise self._failure(exc) from None
        return [scope for i, scope in enumerate(candidates) if counts[2 * i] > counts[2 * i + 1]]

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

    @contextlib.asynccontextmanager
    async def _exclusive_many(self, scopes: builtins.list[str]) -> AsyncIterator[None]:
        """``_exclusive`` for several scopes, taken in sorted order (no deadlock)."""
        async with contextlib.AsyncExitStack() as stack:
            for scope in sorted(scopes):
                await stack.enter_async_context(self._exclusive(scope))
            yield

    async def mutate(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        client = self._client()
        kv, field = self._kv(scope), _b(key)
        async with self._exclusive(scope):
            delay = BACKOFF_START_S
            for _ in range(MAX_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(kv)
                        current, ord_ = _parse(await pipe.hget(kv, field))
                    except _FAILURES as exc:
                        raise self._failure(exc) from None
                    old = _live(current, now_ms())
                    # Outside the try: fn's own exceptions propagate untouched
                    # (the pipeline's exit unwatches).
                    raw = fn(old)
                    if isinstance(raw, _Keep) or (raw is None and old is None):
                        return old, old
                    try:
                        new = await self._commit(pipe, scope, field, current, old, ord_, raw)
                    except WatchError:
                        pass
                    except _FAILURES as exc:
                        raise self._failure(exc) from None
                    else:
                        if new is not None and new.expires_at is not None:
                            await self._hint(scope, new.expires_at)
                        return old, new
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, BACKOFF_MAX_S)
        raise AdapterError(
            f"Redis at {self._where}: gave up writing {scope!r}/{key!r} after {MAX_ATTEMPTS} attempts,"
            " other engines kept changing the scope at the same time; retry the call"
        )

    async def _commit(
        self,
        pipe: Any,
        scope: str,
        field: bytes,
        current: Entry | None,
        old: Entry | None,
        ord_: int,
        raw: bytes | None,
    ) -> Entry | None:
        """Write ``raw`` (None = delete) and its event in one MULTI/EXEC on the scope's slot.

        ``current`` is what the hash holds, ``old`` the same unless it has expired.
        """
        scope_b = _b(scope)
        events: builtins.list[_Event] = []
        if current is not None and old is None:  # replacing an expired entry: it expires now
            events.append((EXPIRED, scope_b, field, current.raw, None))
        if raw is None:
            assert old is not None and current is not None
            pipe.multi()
            self._queue_write(pipe, scope, field, current, None, ord_)
            events.append((DELETED, scope_b, field, old.raw, None))
            self._queue_events(pipe, scope, events)
            await pipe.execute()
            return None
        new = stored(raw, int(await pipe.incr(self._key(scope, b"version"))))
        if old is None:
            ord_ = new.version
            events.append((CREATED, scope_b, field, None, new.raw))
        else:
            events.append((UPDATED, scope_b, field, old.raw, new.raw))
        pipe.multi()
        self._queue_write(pipe, scope, field, current, new, ord_)
        self._queue_events(pipe, scope, events)
        await pipe.execute()
        return new

    def _queue_write(
        self, pipe: Any, scope: str, field: bytes, current: Entry | None, new: Entry | None, ord_: int
    ) -> None:
        """Queue (inside MULTI) replacing ``current`` by ``new`` in the hash and both indexes."""
        kv, index, ttl = self._kv(scope), self._key(scope, b"keys"), self._key(scope, b"ttl")
        if new is None:
            pipe.hdel(kv, field)
            pipe.zrem(index, field)
            if current is not None and current.expires_at is not None:
                pipe.zrem(ttl, field)
            return
        pipe.hset(kv, field, _format(new, ord_))
        if current is None:
            pipe.zadd(index, {field: 0})
        if new.expires_at is not None:
            pipe.zadd(ttl, {field: new.expires_at})
        elif current is not None and current.expires_at is not None:
            pipe.zrem(ttl, field)

    def _queue_events(self, pipe: Any, scope: str, events: builtins.list[_Event]) -> None:
        channel = self._key(scope, b"events")
        for event in events:
            # execute_command: redis-py's cluster pipeline blocks pipe.publish().
            pipe.execute_command("PUBLISH", channel, _event_encoder.encode(event))

    async def mutate_many(
        self, items: Sequence[MutationItem]
    ) -> builtins.list[tuple[Entry | None, Entry | None]]:
        if not items:
            return []
        client = self._client()
        scopes = sorted({scope for scope, _, _ in items})
        if self.cluster and len(scopes) > 1:
            raise AdapterError(
                f"Redis Cluster at {self._where}: a transaction can only touch one scope (each scope"
                f" lives in its own hash slot and MULTI cannot span slots); this one touches"
                f" {len(scopes)}: {', '.join(map(repr, scopes[:5]))}"
            )
        wanted: dict[str, builtins.list[str]] = {}
        for scope, key, _ in items:
            keys = wanted.setdefault(scope, [])
            if key not in keys:
                keys.append(key)
        per_scope = Counter(scope for scope, _, _ in items)
        async with self._exclusive_many(scopes):
            delay = BACKOFF_START_S
            for _ in range(MAX_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(*(self._kv(scope) for scope in scopes))
                        stored_now: dict[tuple[str, str], tuple[Entry | None, int]] = {}
                        for scope, keys in wanted.items():
                            values = await pipe.hmget(self._kv(scope), [_b(k) for k in keys])
                            for key, value in zip(keys, values, strict=True):
                                stored_now[(scope, key)] = _parse(value)
                        # One version per item, reserved up front so that the
                        # mutations see real versions (unused ones are skipped).
                        versions = {}
                        for scope in scopes:
                            top = int(await pipe.incrby(self._key(scope, b"version"), per_scope[scope]))
                            versions[scope] = top - per_scope[scope] + 1
                    except _FAILURES as exc:
                        raise self._failure(exc) from None
                    pairs, ords = self._plan(items, stored_now, versions, now_ms())
                    try:
                        changes = self._queue_many(pipe, items, stored_now, pairs, ords)
                        if changes:
                            await pipe.execute()
                    except WatchError:
                        pass
                    except _FAILURES as exc:
                        raise self._failure(exc) from None
                    else:
                        for scope, new in changes:
                            if new is not None and new.expires_at is not None:
                                await self._hint(scope, new.expires_at)
                        return pairs
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, BACKOFF_MAX_S)
        raise AdapterError(
            f"Redis at {self._where}: gave up the transaction after {MAX_ATTEMPTS} attempts, other"
            " engines kept changing its scopes at the same time; retry the call"
        )

    @staticmethod
    def _plan(
        items: Sequence[MutationItem],
        stored_now: dict[tuple[str, str], tuple[Entry | None, int]],
        versions: dict[str, int],
        now: int,
    ) -> tuple[builtins.list[tuple[Entry | None, Entry | None]], dict[tuple[str, str], int]]:
        """Run every mutation in order on a private view; (old, new) per item and final ords."""
        view: dict[tuple[str, str], Entry | None] = {}
        ords: dict[tuple[str, str], int] = {}
        pairs: builtins.list[tuple[Entry | None, Entry | None]] = []
        for scope, key, fn in items:
            k = (scope, key)
            if k in view:
                old = view[k]
            else:
                current, ord_ = stored_now[k]
                old = _live(current, now)
                ords[k] = ord_
            version = versions[scope]
            versions[scope] += 1
            raw = fn(old)
            if isinstance(raw, _Keep) or (raw is None and old is None):
                pairs.append((old, old))
                continue
            new = None if raw is None else stored(raw, version)
            if old is None and new is not None:
                ords[k] = version  # (re)created: goes to the end of the list order
            view[k] = new
            pairs.append((old, new))
        return pairs, ords

    def _queue_many(
        self,
        pipe: Any,
        items: Sequence[MutationItem],
        stored_now: dict[tuple[str, str], tuple[Entry | None, int]],
        pairs: builtins.list[tuple[Entry | None, Entry | None]],
        ords: dict[tuple[str, str], int],
    ) -> builtins.list[tuple[str, Entry | None]]:
        """Queue the net writes and their events in MULTI; (scope, new entry) per changed key."""
        changes = net_changes([(scope, key) for scope, key, _ in items], pairs)
        if not changes:
            return []
        pipe.multi()
        written: builtins.list[tuple[str, Entry | None]] = []
        for scope, key, old, new in changes:
            field, scope_b = _b(key), _b(scope)
            current, _ = stored_now[(scope, key)]
            events: builtins.list[_Event] = []
            if current is not None and old is None:
                events.append((EXPIRED, scope_b, field, current.raw, None))
            self._queue_write(pipe, scope, field, current, new, ords[(scope, key)])
            if new is None:
                assert old is not None
                events.append((DELETED, scope_b, field, old.raw, None))
            elif old is None:
                events.append((CREATED, scope_b, field, None, new.raw))
            else:
                events.append((UPDATED, scope_b, field, old.raw, new.raw))
            self._queue_events(pipe, scope, events)
            written.append((scope, new))
        return written

    # --- expiry -------------------------------------------------------------------

    async def _hint(self, scope: str, expires_at: int) -> None:
        """Record in ``<p>:ttl-scopes`` that ``scope`` has something expiring at ``expires_at``."""
        try:
            await self._client().zadd(self._ttl_scopes, {_tag(scope): expires_at}, lt=True)
        except _FAILURES as exc:
            # Committed anyway; the key reads as absent once expired and the
            # next rescan schedules its removal.
            log.warning("state: could not schedule an expiry in Redis at %s: %s", self._where, exc)
            return
        if expires_at < self._wake_at:
            self._wake.set()

    async def _sweep_loop(self) -> None:
        next_rescan = 0.0
        failing = False
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() >= next_rescan:
                    await self._rescan()
                    next_rescan = loop.time() + RESCAN_INTERVAL_S
                wait_s = await self._sweep_due()
                if failing:
                    log.warning("state: expiring keys in Redis at %s works again", self._where)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("state: expiring keys in Redis at %s failed (%s); retrying", self._where, exc)
                failing = True
                wait_s = SWEEP_POLL_S
            self._wake.clear()
            self._wake_at = now_ms() + int(wait_s * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    async def _rescan(self) -> None:
        """Hint every scope that holds keys with an expiry (after a crash lost hints)."""
        client = self._client()
        head, tail = len(self._prefix) + 2, -len(b"}:ttl")
        async for name in client.scan_iter(match=self._ttl_pattern, count=1000):
            tag = name[head:tail]
            if _untag(tag) is None:
                continue
            first = await client.zrange(name, 0, 0, withscores=True)
            if first:
                await client.zadd(self._ttl_scopes, {tag: int(first[0][1])}, lt=True)

    async def _sweep_due(self) -> float:
        """Sweep every scope whose hint is due; seconds until the next one."""
        client = self._client()
        tags = await client.zrangebyscore(self._ttl_scopes, "-inf", now_ms(), start=0, num=100)
        for tag in tags:
            scope = _untag(tag)
            if scope is None:
                await client.zrem(self._ttl_scopes, tag)
                continue
            await self._sweep_scope(scope)
            await self._rehint(scope, tag)
        first = await client.zrange(self._ttl_scopes, 0, 0, withscores=True)
        if not first:
            return SWEEP_POLL_S
        return min(SWEEP_POLL_S, max(0.005, (int(first[0][1]) - now_ms()) / 1000))

    async def _rehint(self, scope: str, tag: bytes) -> None:
        """Set the scope's hint to its earliest expiry now (see the module docstring)."""
        client = self._client()
        ttl = self._key(scope, b"ttl")
        first = await client.zrange(ttl, 0, 0, withscores=True)
        if first:
            await client.zadd(self._ttl_scopes, {tag: int(first[0][1])})
        else:
            await client.zrem(self._ttl_scopes, tag)
        # A writer may have hinted an earlier expiry between our read and our
        # write; it committed before hinting, so reading again sees it.
        again = await client.zrange(ttl, 0, 0, withscores=True)
        if again:
            await client.zadd(self._ttl_scopes, {tag: int(again[0][1])}, lt=True)

    async def _sweep_scope(self, scope: str) -> None:
        """Remove the scope's expired keys, publishing one state:expired each."""
        client = self._client()
        kv, ttl, scope_b = self._kv(scope), self._key(scope, b"ttl"), _b(scope)
        async with self._exclusive(scope):
            for _ in range(MAX_ATTEMPTS):
                now = now_ms()
                due: builtins.list[bytes] = await client.zrangebyscore(
                    ttl, "-inf", now, start=0, num=SWEEP_BATCH
                )
                if not due:
                    return
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(kv)
                    values = await pipe.hmget(kv, due)
                    pipe.multi()
                    for field, value in zip(due, values, strict=True):
                        try:
                            entry, ord_ = _parse(value)
                        except AdapterError:
                            entry = None
                        if entry is None or entry.expires_at is None:
                            pipe.zrem(ttl, field)  # no longer expiring
                        elif entry.expires_at > now:
                            pipe.zadd(ttl, {field: entry.expires_at})
                        else:
                            self._queue_write(pipe, scope, field, entry, None, ord_)
                            self._queue_events(pipe, scope, [(EXPIRED, scope_b, field, entry.raw, None)])
                    try:
                        await pipe.execute()
                    except WatchError:
                        await asyncio.sleep(random.uniform(0, BACKOFF_MAX_S))
                        continue
                if len(due) < SWEEP_BATCH:
                    return

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
