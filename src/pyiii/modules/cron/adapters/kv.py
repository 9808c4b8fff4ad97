"""``kv``: locks in this engine's memory, so each tick runs once per engine."""

from __future__ import annotations

import time
from collections.abc import Callable

from pyiii.modules.cron.adapters.base import DONE, RUN, CronLocks, may_claim, value


class KvLocks(CronLocks):
    """The lock rule of ``base.py`` over a dict; expiry by the monotonic clock."""

    def __init__(
        self, owner: str, ttl_ms: int, index: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(owner, ttl_ms)
        self.index = index
        self._clock = clock
        self._table: dict[str, tuple[str, float]] = {}  # job key -> (value, expires at)

    def _current(self, job_key: str, now: float) -> str | None:
        entry = self._table.get(job_key)
        if entry is None or entry[1] <= now:
            self._table.pop(job_key, None)
            return None
        return entry[0]

    async def claim(self, job_key: str, tick_ms: int) -> bool:
        now = self._clock()
        if not may_claim(self._current(job_key, now), tick_ms):
            return False
        self._table[job_key] = (value(tick_ms, RUN, self.owner), now + self.ttl_ms / 1000)
        return True

    async def finish(self, job_key: str, tick_ms: int) -> None:
        now = self._clock()
        if self._current(job_key, now) == value(tick_ms, RUN, self.owner):
            self._table[job_key] = (value(tick_ms, DONE, self.owner), now + self.ttl_ms / 1000)

    def forget(self, job_key: str) -> None:
        """Drop a job's entry once no binding uses it (keeps the table bounded)."""
        self._table.pop(job_key, None)

    def describe(self) -> str:
        return f"kv (locks in this engine's memory, table {self.index!r}; each engine runs every tick)"
