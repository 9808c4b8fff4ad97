"""The Redis store (``adapter: redis``): lanes shared by every engine on one Redis.

Several engines on the same Redis (or Redis Cluster) are one queue system:
a publish through any engine reaches the subscribed functions wherever their
workers are connected, competing consumers on all engines share a lane's
jobs, retries and dead letters live in Redis, and a job taken by an engine
that dies is handed out again by another one once its lease runs out.

Why lists and sorted sets driven by Lua, not streams with consumer groups
(measured with ``benchmarks/queue_redis_structures.py``; docs/decisions.md):
both cost the same on the hot path (one round trip to publish, to take and
to acknowledge), but a queue also needs delayed retries, fifo groups, leases
and a dead-letter queue, which streams do not have; with lists every one of
those is one atomic script, and one subscriber connection per engine wakes
all its lanes instead of one blocking connection per lane.

Keys of a lane (``<p>`` the prefix, ``<t>`` the lane key, which holds no braces
and so is the Redis hash tag: a lane lives in one cluster slot):

* ``<p>:q:{<t>}:jobs``    hash, job id -> job JSON (every job not yet finished);
* ``<p>:q:{<t>}:ready``   list of what may be taken now, taken from the right:
  ``j:<id>`` (a job of a standard lane) or ``g:<group>`` (a fifo group whose
  head is free);
* ``<p>:q:{<t>}:g:<group>`` list of a fifo group's job ids, head on the right;
* ``<p>:q:{<t>}:delayed`` sorted set of ``j:``/``g:`` members held for a retry,
  scored by the time they may be taken again;
* ``<p>:q:{<t>}:out``     sorted set of job ids out for delivery, scored by the
  lease deadline; the holder renews its leases every third of
  ``visibility_timeout_ms``; an expired lease makes the job takeable again,
  flagged so that delivery counts as failed;
* ``<p>:q:{<t>}:dead`` / ``:deadrec`` sorted set (by ``failed_at``) and hash of
  dead letters.

Outside any lane: ``<p>:q:lanes`` (set of lane keys), ``<p>:q:subs:{<topic>}``
(hash lane key -> the subscription's order) and the channel ``<p>:q:notify``,
on which every script that makes a job takeable publishes the lane key; each
engine subscribes once and wakes its consumer of that lane. A consumer also
looks every ``poll_interval_ms`` (retries scheduled by another engine, leases of
a dead one).

A publish to several lanes is one script on a single Redis (all or nothing);
a Redis Cluster cannot run a script across slots, so there it is one script per
lane. If Redis cannot be reached every call fails with ``StoreError`` naming
the URL; consumers back off and resume by themselves when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import msgspec

from pyiii.modules.queue.adapters.base import QueueStore, StoreError
from pyiii.modules.queue.jobs import DeadLetter, Job, Lane, decode_dead, decode_job, now_ms, quote_part
from pyiii.redis_conn import FAILURES, OPEN_TIMEOUT_S, RedisConnection

log = logging.getLogger("pyiii.queue")

PROMOTE_BATCH = 256
SUBSCRIBER_BACKOFF_MAX_S = 1.0
CLOSE_TIMEOUT_S = 3.0

# KEYS: lane bases. ARGV: channel, then per job: lane index, id, body, fifo, group, lane key.
_PUSH = """
local chan = ARGV[1]
local i = 2
while i <= #ARGV do
  local base = KEYS[tonumber(ARGV[i])]
  local id, body, fifo, group, lane = ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  redis.call('HSET', base .. ':jobs', id, body)
  if fifo == '1' then
    if redis.call('LPUSH', base .. ':g:' .. group, id) == 1 then
      redis.call('LPUSH', base .. ':ready', 'g:' .. group)
    end
  else
    redis.call('LPUSH', base .. ':ready', 'j:' .. id)
  end
  redis.call('PUBLISH', chan, lane)
  i = i + 6
end
return 1
"""

# KEYS: base. ARGV: n, now, deadline, promote batch.
_TAKE = """
local base = KEYS[1]
local n, now, deadline = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local jobs, ready, delayed, out = base .. ':jobs', base .. ':ready', base .. ':delayed', base .. ':out'
local got = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', out, '-inf', now, 'LIMIT', 0, n)) do
  local body = redis.call('HGET', jobs, id)
  if body then
    redis.call('ZADD', out, deadline, id)
    got[#got + 1] = {id, body, 1}
  else
    redis.call('ZREM', out, id)
  end
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  redis.call('ZREM', delayed, m)
  redis.call('RPUSH', ready, m)
end
local tries = 0
while #got < n and tries < n * 4 + 16 do
  tries = tries + 1
  local m = redis.call('RPOP', ready)
  if not m then break end
  local id = false
  if not redis.call('ZSCORE', delayed, m) then
    if string.sub(m, 1, 2) == 'g:' then
      id = redis.call('LINDEX', base .. ':g:' .. string.sub(m, 3), -1)
    else
      id = string.sub(m, 3)
    end
  end
  if id and not redis.call('ZSCORE', out, id) then
    local body = redis.call('HGET', jobs, id)
    if body then
      redis.call('ZADD', out, deadline, id)
      got[#got + 1] = {id, body, 0}
    end
  end
end
local d = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local o = redis.call('ZRANGE', out, 0, 0, 'WITHSCORES')
return {got, d[2] or '', o[2] or ''}
"""

# KEYS: base. ARGV: id, fifo, group, channel, lane key.
_ACK = """
local base, id = KEYS[1], ARGV[1]
redis.call('ZREM', base .. ':out', id)
local removed = redis.call('HDEL', base .. ':jobs', id)
if ARGV[2] == '1' then
  local g = base .. ':g:' .. ARGV[3]
  redis.call('LREM', g, -1, id)
  if removed == 1 and redis.call('LLEN', g) > 0 then
    redis.call('LPUSH', base .. ':ready', 'g:' .. ARGV[3])
    redis.call('PUBLISH', ARGV[4], ARGV[5])
  end
end
return removed
"""

# KEYS: base. ARGV: id, body, process_at, member.
_RETRY = """
local base, id = KEYS[1], ARGV[1]
redis.call('ZREM', base .. ':out', id)
if redis.call('HEXISTS', base .. ':jobs', id) == 0 then return 0 end
redis.call('HSET', base .. ':jobs', id, ARGV[2])
redis.call('ZADD', base .. ':delayed', tonumber(ARGV[3]), ARGV[4])
return 1
"""

# KEYS: base. ARGV: id, letter, failed_at, fifo, group, channel, lane key.
_BURY = """
local base, id = KEYS[1], ARGV[1]
redis.call('ZREM', base .. ':out', id)
if redis.call('HDEL', base .. ':jobs', id) == 0 then return 0 end
redis.call('ZADD', base .. ':dead', tonumber(ARGV[3]), id)
redis.call('HSET', base .. ':deadrec', id, ARGV[2])
if ARGV[4] == '1' then
  local g = base .. ':g:' .. ARGV[5]
  redis.call('LREM', g, -1, id)
  if redis.call('LLEN', g) > 0 then
    redis.call('LPUSH', base .. ':ready', 'g:' .. ARGV[5])
    redis.call('PUBLISH', ARGV[6], ARGV[7])
  end
end
return 1
"""

# KEYS: base. ARGV: channel, lane key, then pairs: id, member.
_RELEASE = """
local base = KEYS[1]
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('ZREM', base .. ':out', ARGV[i]) == 1 then
    redis.call('RPUSH', base .. ':ready', ARGV[i + 1])
    n = n + 1
  end
end
if n > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n
"""

# KEYS: base. ARGV: deadline, ids...
_RENEW = """
local n = 0
for i = 2, #ARGV do n = n + redis.call('ZADD', KEYS[1] .. ':out', 'XX', 'CH', tonumber(ARGV[1]), ARGV[i]) end
return n
"""

# KEYS: base. ARGV: channel, lane key, then per job: id, body, fifo, group.
_REDRIVE = """
local base = KEYS[1]
local n = 0
for i = 3, #ARGV, 4 do
  local id, body, fifo, group = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('ZREM', base .. ':dead', id) == 1 then
    redis.call('HDEL', base .. ':deadrec', id)
    redis.call('HSET', base .. ':jobs', id, body)
    if fifo == '1' then
      if redis.call('LPUSH', base .. ':g:' .. group, id) == 1 then
        redis.call('LPUSH', base .. ':ready', 'g:' .. group)
      end
    else
      redis.call('LPUSH', base .. ':ready', 'j:' .. id)
    end
    n = n + 1
  end
end
if n > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n
"""

_DISCARD = """
if redis.call('ZREM', KEYS[1] .. ':dead', ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1] .. ':deadrec', ARGV[1])
return 1
"""


def _member(job: Job) -> bytes:
    return b"j:" + job.id.encode() if job.group_id is None else b"g:" + job.group_id.encode()


def _fifo(job: Job) -> bytes:
    return b"0" if job.group_id is None else b"1"


def _group(job: Job) -> bytes:
    return b"" if job.group_id is None else job.group_id.encode()


class RedisQueueStore(QueueStore):
    """Queue lanes in Redis, shared by several engines (see module docstring)."""

    broker_type = "redis"

    def __init__(self, redis_url: str, *, visibility_timeout_ms: int = 30_000, prefix: str = "pyiii") -> None:
        self.conn = RedisConnection(redis_url, owner="queue adapter redis")
        self.visibility_timeout_ms = visibility_timeout_ms
        self.prefix = prefix
        self.channel = f"{prefix}:q:notify".encode()
        self._lanes_key = f"{prefix}:q:lanes"
        self._scripts: dict[str, Any] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._due: dict[str, int] = {}
        self._held: dict[str, tuple[Lane, dict[str, Job]]] = {}
        self._registered: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closing = False

    def describe(self) -> str:
        return f"redis at {self.conn.where} (visibility timeout {self.visibility_timeout_ms} ms)"

    # --- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        await self.conn.open()
        client = self.conn.client
        for name, source in (
            ("push", _PUSH),
            ("take", _TAKE),
            ("ack", _ACK),
            ("retry", _RETRY),
            ("bury", _BURY),
            ("release", _RELEASE),
            ("renew", _RENEW),
            ("redrive", _REDRIVE),
            ("discard", _DISCARD),
        ):
            self._scripts[name] = client.register_script(source)
        try:
            self._reader = asyncio.ensure_future(self._read_notifications())
            await asyncio.wait_for(self._subscribed.wait(), OPEN_TIMEOUT_S)
        except (*FAILURES, TimeoutError) as exc:
            await self.close()
            raise self.conn.open_error(exc) from None
        self._renewer = asyncio.ensure_future(self._renew_loop())

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._reader, self._renewer) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        self._reader = self._renewer = None
        # Give back what this engine still holds, so others need not wait for the leases.
        for lane, held in list(self._held.values()):
            if held:
                with contextlib.suppress(StoreError):
                    await self.release(lane, list(held.values()))
        await self.conn.close()

    # --- helpers ----------------------------------------------------------------------

    def _base(self, lane: Lane) -> str:
        return f"{self.prefix}:q:{{{lane.key}}}"

    async def _run(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if not self.conn.is_open:
            raise StoreError(f"the queue store on Redis at {self.conn.where} is closed")
        try:
            return await self._scripts[name](keys=list(keys), args=list(args))
        except FAILURES as exc:
            raise StoreError(self.conn.failure(exc)) from None

    async def _call(self, command: str, *args: Any) -> Any:
        try:
            return await self.conn.client.execute_command(command, *args)
        except FAILURES as exc:
            raise StoreError(self.conn.failure(exc)) from None
        except RuntimeError as exc:  # not open
            raise StoreError(str(exc)) from None

    async def _register(self, lanes: Sequence[Lane]) -> None:
        new = [lane.key for lane in lanes if lane.key not in self._registered]
        if new:
            await self._call("SADD", self._lanes_key, *new)
            self._registered.update(new)

    def _hold(self, lane: Lane, jobs: Sequence[Job]) -> None:
        entry = self._held.get(lane.key)
        if entry is None:
            entry = self._held[lane.key] = (lane, {})
        for job in jobs:
            entry[1][job.id] = job

    def _drop(self, lane: Lane, job_id: str) -> None:
        entry = self._held.get(lane.key)
        if entry is not None:
            entry[1].pop(job_id, None)

    # --- jobs -------------------------------------------------------------------------

    async def push(self, items: Sequence[tuple[Lane, Job]]) -> None:
        if not items:
            return
        await self._register([lane for lane, _ in items])
        encode = msgspec.json.encode
        if self.conn.cluster:
            # One slot per script on a cluster: one script per lane.
            by_lane: dict[str, list[tuple[Lane, Job]]] = {}
            for lane, job in items:
                by_lane.setdefault(lane.key, []).append((lane, job))
            await asyncio.gather(*(self._push_one_slot(group) for group in by_lane.values()))
            return
        bases: dict[str, int] = {}
        keys: list[str] = []
        args: list[Any] = [self.channel]
        for lane, job in items:
            index = bases.get(lane.key)
            if index is None:
                keys.append(self._base(lane))
                index = bases[lane.key] = len(keys)
            args += [index, job.id, encode(job), _fifo(job), _group(job), lane.key]
        await self._run("push", keys, args)

    async def _push_one_slot(self, items: list[tuple[Lane, Job]]) -> None:
        encode = msgspec.json.encode
        lane = items[0][0]
        args: list[Any] = [self.channel]
        for _, job in items:
            args += [1, job.id, encode(job), _fifo(job), _group(job), lane.key]
        await self._run("push", [self._base(lane)], args)

    async def take(self, lane: Lane, n: int) -> list[Job]:
        now = now_ms()
        got, due, lease = await self._run(
            "take", [self._base(lane)], [n, now, now + self.visibility_timeout_ms, PROMOTE_BATCH]
        )
        times = [int(float(t)) for t in (due, lease) if t not in (b"", "", None)]
        if times:
            self._due[lane.key] = min(times)
        else:
            self._due.pop(lane.key, None)
        jobs: list[Job] = []
        for _, body, reclaimed in got:
            job = decode_job(body)
            if int(reclaimed):
                job = msgspec.structs.replace(job, reclaimed=True)
            jobs.append(job)
        self._hold(lane, jobs)
        return jobs

    async def ack(self, lane: Lane, job: Job) -> None:
        await self._run(
            "ack", [self._base(lane)], [job.id, _fifo(job), _group(job), self.channel, lane.key]
        )
        self._drop(lane, job.id)

    async def retry(self, lane: Lane, job: Job) -> None:
        assert job.process_at is not None
        await self._run(
            "retry", [self._base(lane)], [job.id, msgspec.json.encode(job), job.process_at, _member(job)]
        )
        self._drop(lane, job.id)
        due = self._due.get(lane.key)
        self._due[lane.key] = job.process_at if due is None else min(due, job.process_at)

    async def bury(self, lane: Lane, letter: DeadLetter) -> None:
        job = letter.job
        await self._run(
            "bury",
            [self._base(lane)],
            [
                job.id,
                msgspec.json.encode(letter),
                letter.failed_at,
                _fifo(job),
                _group(job),
                self.channel,
                lane.key,
            ],
        )
        self._drop(lane, job.id)

    async def release(self, lane: Lane, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        args: list[Any] = [self.channel, lane.key]
        for job in jobs:
            args += [job.id, _member(job)]
        await self._run("release", [self._base(lane)], args)
        for job in jobs:
            self._drop(lane, job.id)

    def wakeup(self, lane: Lane) -> asyncio.Event:
        event = self._events.get(lane.key)
        if event is None:
            event = self._events[lane.key] = asyncio.Event()
        return event

    def next_due(self, lane: Lane) -> int | None:
        return self._due.get(lane.key)

    # --- leases ---------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        period = self.visibility_timeout_ms / 3000
        while not self._closing:
            await asyncio.sleep(period)
            deadline = now_ms() + self.visibility_timeout_ms
            for lane, held in list(self._held.values()):
                if not held:
                    continue
                try:
                    await self._run("renew", [self._base(lane)], [deadline, *held])
                except StoreError as exc:
                    log.warning("queue: could not renew leases in %s: %s", lane.key, exc)

    # --- notifications ----------------------------------------------------------------

    async def _read_notifications(self) -> None:
        delay = 0.05
        lost = False
        while not self._closing:
            pubsub = self.conn.subscriber.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind in ("message", b"message"):
                        data = message["data"]
                        key = data.decode() if isinstance(data, bytes) else str(data)
                        event = self._events.get(key)
                        if event is not None:
                            event.set()
                    elif kind in ("subscribe", b"subscribe"):
                        if lost:
                            log.warning("queue: notifications from Redis at %s flow again", self.conn.where)
                        lost = False
                        delay = 0.05
                        self._subscribed.set()
                        for event in self._events.values():
                            event.set()  # anything may have arrived meanwhile
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:
                    log.warning(
                        "queue: notifications from Redis at %s interrupted (%s); consumers poll until"
                        " they are back",
                        self.conn.where,
                        exc or type(exc).__name__,
                    )
                lost = True
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())
            await asyncio.sleep(delay)
            delay = min(delay * 2, SUBSCRIBER_BACKOFF_MAX_S)

    # --- subscriptions and lanes --------------------------------------------------------

    def _subs_key(self, topic: str) -> str:
        return f"{self.prefix}:q:subs:{{{quote_part(topic)}}}"

    async def subscribe(self, topic: str, lane: Lane, order: str | None) -> None:
        await self._call("HSET", self._subs_key(topic), lane.key, msgspec.json.encode(order))
        self._registered.discard(lane.key)  # re-assert: the lane set may have been lost
        await self._register([lane])

    async def unsubscribe(self, topic: str, lane: Lane) -> None:
        await self._call("HDEL", self._subs_key(topic), lane.key)

    async def subscribers(self, topic: str) -> list[tuple[Lane, str | None]]:
        raw = await self._call("HGETALL", self._subs_key(topic))
        out: list[tuple[Lane, str | None]] = []
        items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        for key, order in items:
            lane = Lane.from_key(key.decode() if isinstance(key, bytes) else key)
            if lane is not None:
                out.append((lane, msgspec.json.decode(order)))
        return out

    async def lanes(self) -> list[Lane]:
        members = await self._call("SMEMBERS", self._lanes_key)
        found = (Lane.from_key(m.decode() if isinstance(m, bytes) else m) for m in members)
        return sorted((lane for lane in found if lane is not None), key=lambda lane: lane.key)

    # --- inspection and dead letters ----------------------------------------------------

    async def depth(self, lane: Lane) -> int:
        return int(await self._call("HLEN", self._base(lane) + ":jobs"))

    async def dead_count(self, lane: Lane) -> int:
        return int(await self._call("ZCARD", self._base(lane) + ":dead"))

    async def dead_letters(self, lane: Lane, offset: int, limit: int) -> list[DeadLetter]:
        if limit <= 0:
            return []
        base = self._base(lane)
        ids = await self._call("ZREVRANGE", base + ":dead", offset, offset + limit - 1)
        if not ids:
            return []
        bodies = await self._call("HMGET", base + ":deadrec", *ids)
        return [decode_dead(body) for body in bodies if body is not None]

    async def redrive(self, lane: Lane, job_id: str | None) -> int:
        base = self._base(lane)
        if job_id is None:
            ids = await self._call("ZRANGE", base + ":dead", 0, -1)
        else:
            ids = [job_id]
        if not ids:
            return 0
        bodies = await self._call("HMGET", base + ":deadrec", *ids)
        args: list[Any] = [self.channel, lane.key]
        for body in bodies:
            if body is None:
                continue
            dead = decode_dead(body).job
            job = msgspec.structs.replace(dead, attempts_made=0, process_at=None, last_error=None)
            args += [job.id, msgspec.json.encode(job), _fifo(job), _group(job)]
        if len(args) == 2:
            return 0
        return int(await self._run("redrive", [base], args))

    async def discard(self, lane: Lane, job_id: str) -> bool:
        return bool(await self._run("discard", [self._base(lane)], [job_id]))
