"""One lane's jobs in memory, and which may be delivered now (no I/O, no clock).

Used by the in-process stores (``in_memory``, and ``file_based`` as its
mirror). Every job belongs to a *group* (``jobs.group_of``): its fifo group,
or itself in a standard lane. Each group is a line of jobs in publish order;
only the head of a group is ever delivered, and only when it is not already
out and its ``process_at`` has passed. So a standard lane delivers any ready
job, a fifo lane one job per group at a time, in order, and a job waiting for
its retry holds up its own group only.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from pyiii.modules.queue.jobs import DeadLetter, Job, group_of


class LaneBook:
    """Jobs of one lane: live ones by group, the ones out for delivery, the dead ones."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.groups: dict[str, deque[str]] = {}
        self.runnable: deque[str] = deque()  # groups whose head may be taken now
        self.waiting: list[tuple[int, int, str]] = []  # (process_at, tie, group): heads held until then
        self.taken: set[str] = set()
        self.dead: dict[str, DeadLetter] = {}  # oldest first
        self._tie = itertools.count()

    # --- adding and taking ----------------------------------------------------

    def add(self, job: Job, now: int) -> None:
        """Append a job to its group (a new group's head is scheduled at once)."""
        self.jobs[job.id] = job
        group = group_of(job)
        line = self.groups.get(group)
        if line is None:
            self.groups[group] = deque((job.id,))
            self._schedule(group, job, now)
        else:
            line.append(job.id)

    def _schedule(self, group: str, head: Job, now: int) -> None:
        if head.process_at is not None and head.process_at > now:
            heapq.heappush(self.waiting, (head.process_at, next(self._tie), group))
        else:
            self.runnable.append(group)

    def take(self, n: int, now: int) -> list[Job]:
        """Up to ``n`` deliverable jobs, now marked as out."""
        self._promote(now)
        out: list[Job] = []
        while self.runnable and len(out) < n:
            group = self.runnable.popleft()
            line = self.groups.get(group)
            if not line or line[0] in self.taken:
                continue  # a stale entry (the group moved on meanwhile)
            job = self.jobs[line[0]]
            self.taken.add(job.id)
            out.append(job)
        return out

    def _promote(self, now: int) -> None:
        waiting = self.waiting
        while waiting and waiting[0][0] <= now:
            _, _, group = heapq.heappop(waiting)
            line = self.groups.get(group)
            if line and line[0] not in self.taken:
                self.runnable.append(group)

    def next_due(self) -> int | None:
        """When the earliest held retry becomes deliverable (ms), if any."""
        return self.waiting[0][0] if self.waiting else None

    def has_ready(self, now: int) -> bool:
        self._promote(now)
        return any(self.groups.get(g) and self.groups[g][0] not in self.taken for g in self.runnable)

    # --- outcomes ---------------------------------------------------------------

    def finish(self, job_id: str, now: int) -> Job | None:
        """Remove a job (acknowledged, dead-lettered or discarded); its group moves on."""
        job = self.jobs.pop(job_id, None)
        self.taken.discard(job_id)
        if job is None:
            return None
        group = group_of(job)
        line = self.groups.get(group)
        if line is not None:
            was_head = bool(line) and line[0] == job_id
            line.remove(job_id)
            if not line:
                del self.groups[group]
            elif was_head:
                self._schedule(group, self.jobs[line[0]], now)
        return job

    def retry(self, job: Job, now: int) -> None:
        """Put back a failed job (``process_at`` set) at the head of its group."""
        if job.id not in self.jobs:
            return
        self.jobs[job.id] = job
        self.taken.discard(job.id)
        self._schedule(group_of(job), job, now)

    def release(self, job_id: str) -> None:
        """Give back a job that was taken but not tried (the engine is stopping)."""
        if job_id in self.taken:
            self.taken.discard(job_id)
            job = self.jobs.get(job_id)
            if job is not None:
                self.runnable.appendleft(group_of(job))

    def bury(self, letter: DeadLetter, now: int) -> None:
        self.finish(letter.job.id, now)
        self.dead[letter.job.id] = letter

    # --- dead letters -----------------------------------------------------------

    def unbury(self, job_id: str | None) -> list[DeadLetter]:
        """Take dead letters out (all, or the one with ``job_id``), oldest first."""
        if job_id is None:
            letters = list(self.dead.values())
            self.dead.clear()
            return letters
        letter = self.dead.pop(job_id, None)
        return [] if letter is None else [letter]

    def dead_page(self, offset: int, limit: int) -> list[DeadLetter]:
        """Dead letters, newest first."""
        newest = list(reversed(self.dead.values()))
        return newest[offset : offset + limit]

    @property
    def depth(self) -> int:
        return len(self.jobs)
