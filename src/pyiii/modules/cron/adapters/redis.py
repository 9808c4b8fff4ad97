"""``redis``: job locks in Redis, so engines sharing it run each tick once in total.

One string key per job, ``cron_lock:<job key>``, holding the value of
``base.py`` and expiring ``lock_ttl_ms`` after it was written (``PX``).
Claiming and finishing are small Lua scripts, so each is one atomic round
trip; on a Redis Cluster the single key decides the node.

If Redis cannot be reached, ``claim`` raises ``LockUnavailable`` (naming the
URL) and the module skips that tick rather than risk running it twice; the
next tick tries again, so runs resume by themselves when Redis is back.
"""

from __future__ import annotations

from typing import Any

from pyiii.modules.cron.adapters.base import CronLocks, LockUnavailable
from pyiii.redis_conn import FAILURES, RedisConnection

PREFIX = "cron_lock:"

# KEYS[1] lock; ARGV: tick_ms, owner, ttl_ms. The rule of base.may_claim.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then
  local tick, state = string.match(current, '^(%d+):(%a+):')
  if tick == nil or state == 'run' or tonumber(tick) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':run:' .. ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS[1] lock; ARGV: tick_ms, owner, ttl_ms. Only our own run becomes done.
_FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] .. ':run:' .. ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1] .. ':done:' .. ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisLocks(CronLocks):
    """The lock rule of ``base.py`` as two Lua scripts over one key per job."""

    def __init__(self, owner: str, ttl_ms: int, redis_url: str) -> None:
        super().__init__(owner, ttl_ms)
        self._conn = RedisConnection(redis_url, owner="cron adapter redis")
        self.where = self._conn.where
        self._claim: Any = None
        self._finish: Any = None

    async def open(self) -> None:
        await self._conn.open()
        client = self._conn.client
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)

    async def close(self) -> None:
        await self._conn.close()

    async def claim(self, job_key: str, tick_ms: int) -> bool:
        try:
            done = await self._claim(keys=[PREFIX + job_key], args=[tick_ms, self.owner, self.ttl_ms])
        except FAILURES as exc:
            raise LockUnavailable(self._conn.failure(exc)) from None
        return bool(done)

    async def finish(self, job_key: str, tick_ms: int) -> None:
        try:
            await self._finish(keys=[PREFIX + job_key], args=[tick_ms, self.owner, self.ttl_ms])
        except FAILURES as exc:
            raise LockUnavailable(self._conn.failure(exc)) from None

    def describe(self) -> str:
        return f"redis at {self.where} (one run per tick across the engines sharing it)"
