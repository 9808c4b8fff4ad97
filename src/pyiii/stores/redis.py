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
* ``<p>:{<t>}:version`` -- the scope's counter. A write reads it after its
  ``WATCH`` starts, numbers its new entries from the next value on and adds
  their count (``INCRBY``) in its ``MULTI``, so each write gets a version
  larger than that of every earlier committed write of the same key (a
  write that committed before us changed the watched hash, so either our
  watch started after it and we read the counter it raised, or our
  ``EXEC`` fails; the ``SETS`` script takes it with ``INCRBY`` itself, and
  ``APPLY`` runs only if the counter still holds what was read). Versions
  are monotonic per key (per scope, even), not
  store-wide; a write that fails or writes nothing takes no number.
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

Redis Cluster: the connection (``pyiii.redis_conn``, shared by every Redis
adapter) detects a server that reports ``cluster_enabled:1`` and then talks
to it through ``redis.asyncio.RedisCluster``, which finds the other nodes and
routes each call to the slot's primary; the event subscription stays on the
node of ``redis_url`` (classic pub/sub messages reach every node of a
cluster). Nothing else changes. (redis-py runs each command of a cluster transaction
through a helper thread, so a cluster write costs a few milliseconds.)

How a write commits. ``mutate`` gets a pure Python function (set, delete,
update ops); update-op semantics live only in ``ops.py`` (the reference's Lua
port of the ops is where its Redis adapter diverges from its in-memory one:
``[]`` becomes ``{}``, numbers lose precision, absent-key defaults do not
apply). On a plain Redis every command goes over one shared pipelined
connection (``pyiii.redis_pipe``: concurrent callers share each send, one
command is one round trip) and each write is one atomic Lua script
(``redis_scripts.py``):

* a plain set or delete (``mutations.SetFn``/``DeleteFn``: the value, TTL and
  ``expect_version``/``expect_exists`` are data the script can check) is the
  ``SETS`` script: it reads the field, checks the precondition, takes the next
  version, writes value, indexes and TTL hint and publishes the event, all in
  one round trip; a failed precondition returns the stored entry and the
  Python precondition raises from it (same message);
* anything else (update ops, transactions) reads the fields and the scope
  counter (one pipelined round trip), runs the functions in Python, and sends
  one ``APPLY`` script holding the expected stored values and the writes; it
  runs them only if nothing read has changed (each stored value carries a
  version that changes on every write), else the cycle runs again.

On a Redis Cluster (or a TLS/Unix URL) the same plan runs through redis-py
as WATCH, HMGET, GET of the counter, MULTI..EXEC: four round trips and
conflicts on any write to the scope's hash. Conflicts retry with full-jitter
backoff (1 ms doubling to 50 ms) up to ``MAX_ATTEMPTS`` times, then fail with
``AdapterError``.

Group commit: writers of one scope on one engine would only conflict, so
they queue. A write to an idle scope goes out at once from its caller;
while a scope's write is in flight, further ``mutate`` calls (and one-scope
``mutate_many`` calls, each one unit) for it wait; then one task applies
everything queued (up to ``BATCH_MAX_ITEMS`` items) in one cycle (one
``SETS`` call when every unit is a plain set/delete): every unit's functions
run in queue order on a private view (a unit sees the keys as the units
before it left them, so two writes of one key in a batch compose), and one
script (or ``MULTI``) holds the net writes, the counter's ``INCRBY`` and
every unit's events in queue order. A unit whose function raises (a failed
precondition, a value too large, anything) fails alone, with its exception;
the others are written. A conflict reruns the whole batch. Each caller gets
its (old, new) once the script (or ``EXEC``) succeeded. ``commits`` counts
the scripts (``EXEC``s) that wrote. Only writers on different engines ever
conflict.

Change events: the script (transaction) that writes a key also ``PUBLISH``es the
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

Transactions (``mutate_many``): a unit whose items are applied all or
nothing, one event per key it changed. One of a single scope joins that
scope's queue; one of several scopes waits for each scope's writer and is
a batch of its own (``WATCH`` every scope hash involved, one ``MULTI``).
Atomic across engines.
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
import dataclasses
import functools
import logging
import random
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec
from redis.exceptions import ResponseError, WatchError

from pyiii.redis_conn import FAILURES, OPEN_TIMEOUT_S, RedisConnection
from pyiii.redis_pipe import RedisPipe, listen
from pyiii.stores.base import (
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
    versioned,
)
from pyiii.stores.events import CREATED, DELETED, EXPIRED, UPDATED
from pyiii.stores.mutations import DeleteFn, SetFn
from pyiii.stores.redis_scripts import APPLY, APPLY_SHA, SETS, SETS_SHA

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 100
BACKOFF_START_S = 0.001
BACKOFF_MAX_S = 0.05
SUBSCRIBER_BACKOFF_MAX_S = 1.0
SUBSCRIBER_HEALTH_CHECK_S = 10.0
# The sweeper looks at <p>:ttl-scopes at least this often (other engines'
# expiries), and SCANs for every <p>:{*}:ttl this often (lost hints).
SWEEP_POLL_S = 1.0
RESCAN_INTERVAL_S = 300.0
CLOSE_TIMEOUT_S = 3.0
SWEEP_BATCH = 256
# Keys per ZRANGEBYLEX while listing without a limit.
LIST_BATCH = 1000
# Items per group commit at most (a mutate is one item, a mutate_many one per
# item); bounds the size of one MULTI and of the work redone on a conflict.
BATCH_MAX_ITEMS = 1000

_Event = tuple[bytes, bytes, bytes, bytes | None, bytes | None]
_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(_Event)
_FAILURES = FAILURES


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


class _ScopeLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


_Pair = tuple[Entry | None, Entry | None]
_Key = tuple[str, str]  # (scope, key)


class _Unit:
    """One caller's items, applied all or nothing: a ``mutate`` or a ``mutate_many``."""

    __slots__ = ("future", "items")

    def __init__(self, items: Sequence[MutationItem], future: asyncio.Future[list[_Pair]]) -> None:
        self.items = items
        self.future = future


class _Queue:
    """A scope's units waiting for its next batch, and the task that writes them."""

    __slots__ = ("leading", "pending", "task")

    def __init__(self) -> None:
        self.pending: list[_Unit] = []
        self.task: asyncio.Task[None] | None = None
        self.leading = False  # a caller is writing its own unit (see _enqueue)


@dataclasses.dataclass(slots=True)
class _Plan:
    """What one batch does: per unit its pairs or its exception; the
    versions taken per scope; the net writes (scope, field, stored entry,
    final entry, ord); the events in commit order; the earliest new expiry
    per scope."""

    outcomes: list[list[_Pair] | Exception]
    taken: dict[str, int]
    writes: list[tuple[str, bytes, Entry | None, Entry | None, int]]
    events: list[tuple[str, _Event]]
    expiring: dict[str, int]


def _take(queue: _Queue) -> list[_Unit]:
    """The next batch: queued units in order, skipping cancelled callers,
    up to ``BATCH_MAX_ITEMS`` items (but at least one unit)."""
    pending = queue.pending
    batch: list[_Unit] = []
    items = 0
    taken = 0
    for unit in pending:
        if not unit.future.done():
            if batch and items + len(unit.items) > BATCH_MAX_ITEMS:
                break
            batch.append(unit)
            items += len(unit.items)
        taken += 1
    del pending[:taken]
    return batch


def _fail(units: Sequence[_Unit], message: str) -> None:
    for unit in units:
        if not unit.future.done():
            unit.future.set_exception(AdapterError(message))


def _plan(
    batch: Sequence[_Unit],
    held: dict[_Key, tuple[Entry | None, int] | AdapterError],
    counters: dict[str, int],
    now: int,
) -> _Plan:
    """Run every unit's mutations in queue order on a private view.

    ``held`` is what the hashes hold per key (entry, ord), or the error
    reading it; ``counters`` each scope's version counter as read under the
    WATCH. Each new entry takes the next version of its scope, in order (a
    failed unit gives its versions back). Each unit sees the keys as left by
    the units before it; a unit whose mutation raises leaves the view (and
    the counters) as they were. A unit's events are those of
    ``mutate_many`` (one per key it changed, from before it to after it),
    preceded by ``state:expired`` where the first change of a key in the
    batch replaces an entry that has expired.
    """
    view: dict[_Key, Entry | None] = {}
    ords: dict[_Key, int] = {}
    touched: dict[_Key, None] = {}  # changed keys, in the order of their first change
    outcomes: list[list[_Pair] | Exception] = []
    events: list[tuple[str, _Event]] = []
    versions = dict(counters)
    for unit in batch:
        mine: dict[_Key, Entry | None] = {}
        my_ords: dict[_Key, int] = {}
        my_versions = versions.copy()
        pairs: list[_Pair] = []
        try:
            for scope, key, fn in unit.items:
                k = (scope, key)
                if k in mine:
                    old = mine[k]
                elif k in view:
                    old = view[k]
                else:
                    stored_now = held[k]
                    if isinstance(stored_now, AdapterError):
                        raise AdapterError(str(stored_now))
                    old = _live(stored_now[0], now)
                raw = fn(old)
                if isinstance(raw, _Keep) or (raw is None and old is None):
                    pairs.append((old, old))
                    continue
                if raw is None:
                    new = None
                else:
                    new, my_versions[scope] = versioned(raw, my_versions[scope])
                    if old is None:
                        my_ords[k] = new.version  # (re)created: goes to the end of the list order
                mine[k] = new
                pairs.append((old, new))
        except Exception as exc:
            outcomes.append(exc)
            continue
        view.update(mine)
        ords.update(my_ords)
        versions = my_versions
        outcomes.append(pairs)
        if not mine:
            continue
        keys = [(scope, key) for scope, key, _ in unit.items]
        for scope, key, before, after in net_changes(keys, pairs):
            k = (scope, key)
            field, scope_b = _b(key), _b(scope)
            if k not in touched:
                touched[k] = None
                was = held[k]
                assert not isinstance(was, AdapterError)
                if was[0] is not None and _live(was[0], now) is None:  # expired: the write removes it
                    events.append((scope, (EXPIRED, scope_b, field, was[0].raw, None)))
            if after is None:
                assert before is not None
                events.append((scope, (DELETED, scope_b, field, before.raw, None)))
            elif before is None:
                events.append((scope, (CREATED, scope_b, field, None, after.raw)))
            else:
                events.append((scope, (UPDATED, scope_b, field, before.raw, after.raw)))
    writes: list[tuple[str, bytes, Entry | None, Entry | None, int]] = []
    expiring: dict[str, int] = {}
    for k in touched:
        read = held[k]
        assert not isinstance(read, AdapterError)  # a unit that touched it would have failed
        current, ord_ = read
        final = view[k]
        if current is None and final is None:
            continue  # created and deleted again within the batch
        scope = k[0]
        writes.append((scope, _b(k[1]), current, final, ords.get(k, ord_)))
        if final is not None and final.expires_at is not None:
            expiring[scope] = min(expiring.get(scope, final.expires_at), final.expires_at)
    taken = {scope: versions[scope] - counters[scope] for scope in counters}
    return _Plan(outcomes, taken, writes, events, expiring)


def _settle(batch: Sequence[_Unit], plan: _Plan) -> None:
    """Hand every waiting unit its pairs or its exception."""
    for unit, outcome in zip(batch, plan.outcomes, strict=True):
        if unit.future.done():
            continue
        if isinstance(outcome, Exception):
            unit.future.set_exception(outcome)
        else:
            unit.future.set_result(outcome)


def _gave_up(batch: Sequence[_Unit], where: str) -> None:
    for unit in batch:
        if len(unit.items) == 1:
            scope, key, _ = unit.items[0]
            what, whose = f"writing {scope!r}/{key!r}", "the scope"
        else:
            what, whose = "the transaction", "its scopes"
        _fail(
            [unit],
            f"Redis at {where}: gave up {what} after {MAX_ATTEMPTS} attempts, other engines"
            f" kept changing {whose} at the same time; retry the call",
        )


def _plain(unit: _Unit) -> bool:
    """A lone set or delete (any precondition, any TTL): what the SETS script runs itself."""
    return len(unit.items) == 1 and type(unit.items[0][2]) in (SetFn, DeleteFn)


async def _gather(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """The results of pipelined commands, in order; the first failure raises
    (after every reply is in, so no failure goes unretrieved)."""
    results: list[Any] = []
    error: BaseException | None = None
    for future in futures:
        try:
            results.append(await future)
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error
    return results


class _Recorder:
    """Collects what ``_queue_plan`` would queue in a MULTI, as raw commands for ``APPLY``."""

    __slots__ = ("commands",)

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def multi(self) -> None:
        pass

    def incrby(self, key: bytes, amount: int) -> None:
        self.commands.append((b"INCRBY", key, amount))

    def hset(self, key: bytes, field: bytes, value: bytes) -> None:
        self.commands.append((b"HSET", key, field, value))

    def hdel(self, key: bytes, field: bytes) -> None:
        self.commands.append((b"HDEL", key, field))

    def zrem(self, key: bytes, member: bytes) -> None:
        self.commands.append((b"ZREM", key, member))

    def zadd(self, key: bytes, mapping: dict[bytes, int], lt: bool = False) -> None:
        for member, score in mapping.items():
            if lt:
                self.commands.append((b"ZADD", key, b"LT", score, member))
            else:
                self.commands.append((b"ZADD", key, score, member))

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)


class RedisAdapter(StateAdapter):
    """State in a Redis server, shared by several engines (see module docstring)."""

    def __init__(self, redis_url: str, *, prefix: str = "pyiii") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"Redis key prefix {prefix!r} must not contain braces (they move the hash tag)")
        self.url = redis_url
        self._conn = RedisConnection(redis_url, owner="state adapter redis", pipe=True)
        self._where = self._conn.where
        self._prefix = _b(prefix)
        escaped = _glob_escape(self._prefix)
        self._kv_pattern = escaped + b":{*}:kv"
        self.channel_pattern = escaped + b":{*}:events"
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._listener: ChangeListener | None = None
        self._resumed: Callable[[], None] | None = None
        self._locks: dict[str, _ScopeLock] = {}
        self._queues: dict[str, _Queue] = {}
        self.commits = 0  # EXECs that wrote (one per batch of writes)
        self._ttl_scopes = self._prefix + b":ttl-scopes"
        self._ttl_pattern = escaped + b":{*}:ttl"
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self._wake_at = 0  # ms: when the sweeper looks next
        self._events_lost = False  # the subscription dropped (and was reported)
        self._events_delay = 0.05  # before the next resubscribe

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        await self._conn.open()
        if self._conn.pipe is not None:
            # These await only the pipe's plain futures (and asyncio locks,
            # sleeps, tasks they start), never redis-py: no Task needed.
            self.eager_methods = frozenset({"get", "get_many", "mutate", "mutate_many"})
        try:
            self._reader = asyncio.create_task(self._read_events(), name="pyiii-redis-events")
            await asyncio.wait_for(self._subscribed.wait(), OPEN_TIMEOUT_S)
        except (*_FAILURES, TimeoutError) as exc:
            await self.close()
            raise self._conn.open_error(exc) from None

    @property
    def cluster(self) -> bool:
        """True when ``redis_url`` names a Redis Cluster."""
        return self._conn.cluster

    @property
    def _redis(self) -> Any:
        return self._conn.client if self._conn.is_open else None

    async def close(self) -> None:
        self._closing = True
        writers = [queue.task for queue in self._queues.values() if queue.task is not None]
        tasks = [t for t in (self._sweeper, self._reader, *writers) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # redis-py can swallow a cancellation that lands inside a read with
            # a timeout (pubsub.get_message); the _closing flag ends those loops
            # at their next turn, and close never waits more than a few seconds.
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            for task in stuck:
                log.warning(
                    "state: Redis task %s did not stop within %.0f s", task.get_name(), CLOSE_TIMEOUT_S
                )
        self._sweeper = self._reader = None
        await self._conn.close()

    def subscribe(self, listener: ChangeListener) -> bool:
        self._listener = listener
        return True

    async def publish(self, kind: bytes, scope: str, key: str, old: bytes | None, new: bytes | None) -> bool:
        # The scope's own channel: subscribers get it in order with the scope's changes.
        event = _event_encoder.encode((kind, _b(scope), _b(key), old, new))
        pipe = self._conn.pipe
        try:
            if pipe is not None:
                await pipe.call(b"PUBLISH", self._key(scope, b"events"), event)
            else:
                await self._client().execute_command("PUBLISH", self._key(scope, b"events"), event)
        except _FAILURES as exc:
            raise self._failure(exc) from None
        return True

    def on_resumed(self, listener: Callable[[], None]) -> None:
        self._resumed = listener

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

    def _failure(self, exc: Exception, write: bool = False) -> AdapterError:
        if self._closing:  # close() dropped the connection under the call
            during = "during the write (it may have committed)" if write else "during the call"
            return AdapterError(f"the Redis adapter for {self._where} was closed {during}")
        return AdapterError(self._conn.failure(exc))

    def _client(self) -> Any:
        if self._redis is None:
            raise AdapterError(f"the Redis adapter for {self._where} is not open")
        return self._redis

    async def get(self, scope: str, key: str) -> Entry | None:
        pipe = self._conn.pipe
        try:
            if pipe is not None:
                stored_value = await pipe.call(b"HGET", self._kv(scope), _b(key))
            else:
                stored_value = await self._client().hget(self._kv(scope), _b(key))
        except _FAILURES as exc:
            raise self._failure(exc) from None
        return _live(_parse(stored_value)[0], now_ms())

    async def get_many(self, scope: str, keys: Sequence[str]) -> builtins.list[Entry | None]:
        if not keys:
            return []
        pipe = self._conn.pipe
        try:
            if pipe is not None:
                values = await pipe.call(b"HMGET", self._kv(scope), *(_b(k) for k in keys))
            else:
                values = await self._client().hmget(self._kv(scope), [_b(k) for k in keys])
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

    async def list_groups(self, prefix: str = "") -> builtins.list[str]:
        client = self._client()
        head, tail = len(self._prefix) + 2, -len(b"}:kv")
        scopes: set[str] = set()
        pattern = self._kv_pattern
        if prefix:
            # A tag encodes byte by byte, so a scope's tag starts with its prefix's tag.
            pattern = _glob_escape(self._prefix) + b":{" + _glob_escape(_tag(prefix)) + b"*}:kv"
        try:
            # SCAN may return a key twice; each match is a non-empty scope.
            async for name in client.scan_iter(match=pattern, count=1000):
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
        """Serialize this engine's transactions on one scope (they would only conflict)."""
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
        return (await self._enqueue(scope, ((scope, key, fn),)))[0]

    async def mutate_many(self, items: Sequence[MutationItem]) -> builtins.list[_Pair]:
        if not items:
            return []
        self._client()
        scopes = sorted({scope for scope, _, _ in items})
        if len(scopes) == 1:
            return await self._enqueue(scopes[0], items)
        if self.cluster:
            raise AdapterError(
                f"Redis Cluster at {self._where}: a transaction can only touch one scope (each scope"
                f" lives in its own hash slot and MULTI cannot span slots); this one touches"
                f" {len(scopes)}: {', '.join(map(repr, scopes[:5]))}"
            )
        # Several scopes: no queue holds them all, so this one waits for every
        # scope's writer of this engine and is a batch of its own.
        unit = _Unit(items, asyncio.get_running_loop().create_future())
        async with self._exclusive_many(scopes):
            await self._write(scopes, [unit])
        return await unit.future

    async def _enqueue(self, scope: str, items: Sequence[MutationItem]) -> builtins.list[_Pair]:
        """Queue ``items`` (all of ``scope``) as one unit for the scope's next batch; its pairs."""
        self._client()
        unit = _Unit(items, asyncio.get_running_loop().create_future())
        queue = self._queues.get(scope)
        if queue is None:
            queue = self._queues[scope] = _Queue()
            if self._conn.pipe is not None and scope not in self._locks:
                # An idle scope: the caller writes its unit itself, without a
                # task (at 1 in flight every write goes this way). Units that
                # arrive meanwhile queue, and a drain task takes them after.
                queue.leading = True
                try:
                    await self._write([scope], [unit])
                except Exception as exc:  # a bug: fail the write rather than hang
                    log.exception("state: writing to Redis at %s failed", self._where)
                    _fail([unit], f"Redis at {self._where}: the write failed ({exc!r})")
                finally:
                    queue.leading = False
                    if queue.pending and not self._closing:
                        queue.task = asyncio.create_task(self._drain(scope, queue), name="pyiii-redis-writer")
                    elif self._queues.get(scope) is queue:
                        _fail(queue.pending, f"the Redis adapter for {self._where} was closed")
                        del self._queues[scope]
                    if not unit.future.done():  # cancelled mid-write: it may have committed
                        _fail([unit], f"Redis at {self._where}: the write was interrupted")
                return await unit.future
        queue.pending.append(unit)
        if queue.task is None and not queue.leading:
            queue.task = asyncio.create_task(self._drain(scope, queue), name="pyiii-redis-writer")
        # A caller cancelled before its batch starts is dropped (_take skips
        # it); once the batch runs, the write goes ahead without it.
        return await unit.future

    async def _drain(self, scope: str, queue: _Queue) -> None:
        """Write the scope's queued units, batch after batch, until none is left."""
        batch: builtins.list[_Unit] = []
        try:
            while queue.pending:
                async with self._exclusive(scope):
                    batch = _take(queue)
                    if batch:
                        try:
                            await self._write([scope], batch)
                        except Exception as exc:  # a bug: fail the batch rather than hang its callers
                            log.exception("state: writing to Redis at %s failed", self._where)
                            _fail(batch, f"Redis at {self._where}: the write failed ({exc!r})")
                batch = []
        except asyncio.CancelledError:  # close()
            message = f"the Redis adapter for {self._where} was closed"
            _fail(batch, message + " during the write (it may have committed)")
            _fail(queue.pending, message)
            queue.pending.clear()
            raise
        finally:
            queue.task = None
            if self._queues.get(scope) is queue:
                del self._queues[scope]

    async def _write(self, scopes: Sequence[str], batch: Sequence[_Unit]) -> None:
        """Apply ``batch`` (units on ``scopes``); settle every unit.

        On a plain Redis each write is one script: a batch of plain sets and
        deletes is one ``SETS`` call (one round trip), anything else one
        pipelined read and one ``APPLY`` (two). On a cluster (or without a
        pipe), WATCH/MULTI/EXEC through redis-py.
        """
        pipe = self._conn.pipe
        if pipe is None:
            await self._write_watched(scopes, batch)
        elif len(scopes) == 1 and all(_plain(unit) for unit in batch):
            await self._write_sets(pipe, scopes[0], batch)
        else:
            await self._write_applied(pipe, scopes, batch)

    async def _eval(
        self, pipe: RedisPipe, script: str, sha: str, keys: builtins.list[bytes], args: builtins.list[Any]
    ) -> Any:
        """Run ``script`` by its SHA1, loading it when Redis does not know it yet."""
        try:
            return await pipe.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await pipe.call(b"EVAL", script, len(keys), *keys, *args)

    def _scope_keys(self, scope: str) -> builtins.list[bytes]:
        return [self._kv(scope), self._key(scope, b"version"), self._key(scope, b"keys"),
                self._key(scope, b"ttl")]

    async def _write_sets(self, pipe: RedisPipe, scope: str, batch: Sequence[_Unit]) -> None:
        """One ``SETS`` script for a batch of plain sets/deletes of one scope (one round trip)."""
        now = now_ms()
        args: builtins.list[Any] = [self._key(scope, b"events"), _b(scope), _tag(scope), now]
        expiries: builtins.list[int | None] = []
        for unit in batch:
            _, key, fn = unit.items[0]
            pre = fn.pre  # type: ignore[attr-defined]
            expires_at = None
            if type(fn) is SetFn:
                if fn.ttl_ms is not None:
                    expires_at = now + fn.ttl_ms
                args += (_b(key), b"s", fn.raw, b"" if expires_at is None else expires_at)
            else:
                args += (_b(key), b"d", b"", b"")
            if pre is None:
                args += (b"", b"")
            else:
                args.append(b"" if pre.expect_version is None else pre.expect_version)
                args.append(b"" if pre.expect_exists is None else b"1" if pre.expect_exists else b"0")
            expiries.append(expires_at)
        try:
            reply = await self._eval(pipe, SETS, SETS_SHA, [*self._scope_keys(scope), self._ttl_scopes], args)
        except _FAILURES as exc:
            _fail(batch, str(self._failure(exc, write=True)))
            return
        wrote = False
        for i, (unit, expires_at) in enumerate(zip(batch, expiries, strict=True)):
            status, before, version = reply[3 * i : 3 * i + 3]
            if unit.future.done():
                wrote = wrote or status == 1
                continue
            try:
                old = _live(_parse(before)[0], now)
            except AdapterError as exc:
                unit.future.set_exception(exc)
                continue
            fn = unit.items[0][2]
            if status == 0:  # the precondition failed: let it say why
                try:
                    fn(old)
                except Exception as exc:
                    unit.future.set_exception(exc)
                else:
                    unit.future.set_exception(AdapterError(f"Redis at {self._where}: precondition mismatch"))
                continue
            if status == 2:
                unit.future.set_result([(old, old)])
                continue
            wrote = True
            new = Entry(fn.raw, version, expires_at) if type(fn) is SetFn else None  # type: ignore[attr-defined]
            unit.future.set_result([(old, new)])
            if expires_at is not None and expires_at < self._wake_at:
                self._wake.set()
        if wrote:
            self.commits += 1

    async def _write_applied(self, pipe: RedisPipe, scopes: Sequence[str], batch: Sequence[_Unit]) -> None:
        """Read (one pipelined round trip), plan in Python, then one ``APPLY`` that checks
        nothing read has changed and writes; on a change, again (like ``_write_watched``)."""
        wanted: dict[str, dict[str, None]] = {scope: {} for scope in scopes}
        for unit in batch:
            for scope, key, _ in unit.items:
                wanted[scope][key] = None
        keys = [k for scope in scopes for k in self._scope_keys(scope)] + [self._ttl_scopes]
        delay = BACKOFF_START_S
        for _ in range(MAX_ATTEMPTS):
            reads = [pipe.call(b"HMGET", self._kv(scope), *(_b(k) for k in names))
                     for scope, names in wanted.items()]
            reads += [pipe.call(b"GET", self._key(scope, b"version")) for scope in scopes]
            try:
                replies = await _gather(reads)
                held: dict[_Key, tuple[Entry | None, int] | AdapterError] = {}
                checks: builtins.list[Any] = []
                for (scope, names), values in zip(wanted.items(), replies, strict=False):
                    kv = self._kv(scope)
                    for key, value in zip(names, values, strict=True):
                        checks += (b"h", kv, _b(key), b"" if value is None else value)
                        try:
                            held[(scope, key)] = _parse(value)
                        except AdapterError as exc:  # fails the units that touch this key
                            held[(scope, key)] = exc
                counters: dict[str, int] = {}
                for scope, value in zip(scopes, replies[len(wanted) :], strict=True):
                    checks += (b"k", self._key(scope, b"version"), b"" if value is None else value)
                    counters[scope] = self._counter(value)
            except _FAILURES as exc:
                _fail(batch, str(self._failure(exc, write=True)))
                return
            except AdapterError as exc:
                _fail(batch, str(exc))
                return
            plan = _plan(batch, held, counters, now_ms())
            if plan.events:
                record = _Recorder()
                self._queue_plan(record, plan)
                for scope, expires_at in plan.expiring.items():
                    record.zadd(self._ttl_scopes, {_tag(scope): expires_at}, lt=True)
                args: builtins.list[Any] = [len(held) + len(scopes), *checks, len(record.commands)]
                for command in record.commands:
                    args.append(len(command))
                    args += command
                try:
                    applied = await self._eval(pipe, APPLY, APPLY_SHA, keys, args)
                except _FAILURES as exc:
                    _fail(batch, str(self._failure(exc, write=True)))
                    return
                if not applied:
                    await asyncio.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                self.commits += 1
                if plan.expiring and min(plan.expiring.values()) < self._wake_at:
                    self._wake.set()
            _settle(batch, plan)
            return
        _gave_up(batch, self._where)

    async def _write_watched(self, scopes: Sequence[str], batch: Sequence[_Unit]) -> None:
        """Apply ``batch`` (units on ``scopes``) in one optimistic cycle; settle every unit.

        WATCH the scope hashes, read every key involved (one HMGET per
        scope) and the scope's version counter, run the mutations in order
        on a private view (new entries take the versions after the counter),
        then one MULTI/EXEC with the counter's INCRBY, the net writes and
        every unit's events; on a conflict the whole cycle runs again. A unit
        whose mutation raises fails alone, with that exception.
        """
        try:
            client = self._client()
        except AdapterError as exc:
            _fail(batch, str(exc))
            return
        wanted: dict[str, dict[str, None]] = {scope: {} for scope in scopes}
        for unit in batch:
            for scope, key, _ in unit.items:
                wanted[scope][key] = None
        delay = BACKOFF_START_S
        for _ in range(MAX_ATTEMPTS):
            async with client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*(self._kv(scope) for scope in scopes))
                    held: dict[_Key, tuple[Entry | None, int] | AdapterError] = {}
                    for scope, keys in wanted.items():
                        values = await pipe.hmget(self._kv(scope), [_b(k) for k in keys])
                        for key, value in zip(keys, values, strict=True):
                            try:
                                held[(scope, key)] = _parse(value)
                            except AdapterError as exc:  # fails the units that touch this key
                                held[(scope, key)] = exc
                    counters: dict[str, int] = {}
                    for scope in scopes:
                        counters[scope] = self._counter(await pipe.get(self._key(scope, b"version")))
                except _FAILURES as exc:
                    _fail(batch, str(self._failure(exc)))
                    return
                except AdapterError as exc:
                    _fail(batch, str(exc))
                    return
                plan = _plan(batch, held, counters, now_ms())
                try:
                    if plan.events:
                        self._queue_plan(pipe, plan)
                        await pipe.execute()
                except WatchError:
                    pass
                except _FAILURES as exc:
                    _fail(batch, str(self._failure(exc)))
                    return
                else:
                    if plan.events:
                        self.commits += 1
                    for scope, expires_at in plan.expiring.items():
                        await self._hint(scope, expires_at)
                    _settle(batch, plan)
                    return
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, BACKOFF_MAX_S)
        _gave_up(batch, self._where)

    def _counter(self, value: bytes | None) -> int:
        if value is None:
            return 0
        try:
            return int(value)
        except ValueError:
            raise AdapterError(
                f"Redis holds a version counter not written by pyiii ({value[:40]!r}); is another"
                " program using the same key prefix?"
            ) from None

    def _queue_plan(self, pipe: Any, plan: _Plan) -> None:
        """Queue the plan's versions and writes, then its events in commit order, in one MULTI."""
        pipe.multi()
        for scope, taken in plan.taken.items():
            if taken:
                pipe.incrby(self._key(scope, b"version"), taken)
        for scope, field, current, final, ord_ in plan.writes:
            self._queue_write(pipe, scope, field, current, final, ord_)
        channels: dict[str, bytes] = {}
        for scope, event in plan.events:
            channel = channels.get(scope)
            if channel is None:
                channel = channels[scope] = self._key(scope, b"events")
            # execute_command: redis-py's cluster pipeline blocks pipe.publish().
            pipe.execute_command("PUBLISH", channel, _event_encoder.encode(event))

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
        while not self._closing:
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
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

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
        """Subscribe, deliver events, and resubscribe after any connection loss.

        On a plain Redis the subscription is a bare hiredis connection that
        hands each message to ``_deliver`` as it is parsed; otherwise
        redis-py's pubsub client.
        """
        self._events_lost = False
        self._events_delay = 0.05
        while not self._closing:
            pipe = self._conn.pipe
            try:
                if pipe is not None:
                    await listen(pipe, self.channel_pattern, self._deliver, self._events_flow,
                                 SUBSCRIBER_HEALTH_CHECK_S)
                else:
                    await self._read_events_pubsub()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._events_lost:
                    log.warning(
                        "state events from Redis at %s interrupted (%s); changes made until the"
                        " subscription is back will not fire triggers on this engine",
                        self._where,
                        exc or type(exc).__name__,
                    )
                self._events_lost = True
            await asyncio.sleep(self._events_delay)
            self._events_delay = min(self._events_delay * 2, SUBSCRIBER_BACKOFF_MAX_S)

    def _events_flow(self) -> None:
        """The subscription is (again) in place."""
        if self._events_lost:
            log.warning("state events from Redis at %s flow again", self._where)
            if self._resumed is not None:
                try:
                    self._resumed()
                except Exception:
                    log.exception("resumed-feed listener failed")
        self._events_lost = False
        self._events_delay = 0.05
        self._subscribed.set()

    async def _read_events_pubsub(self) -> None:
        pubsub = self._conn.subscriber.pubsub()
        try:
            await pubsub.psubscribe(self.channel_pattern)
            while not self._closing:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "pmessage" or kind == b"pmessage":
                    self._deliver(message["data"])
                elif kind in ("psubscribe", b"psubscribe"):
                    self._events_flow()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(pubsub.aclose())

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
