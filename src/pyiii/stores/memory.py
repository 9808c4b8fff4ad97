"""In-memory State storage.

``MemoryStore`` is the synchronous core: plain dicts, no awaits, so every
operation is atomic on the event loop. ``MemoryAdapter`` exposes it as a
``StateAdapter``; ``SqliteAdapter`` keeps one as its read mirror.

Two structures sit beside the per-scope dicts:

* a sorted index of a scope's keys (``sortedcontainers.SortedList``), built
  the first time a scope is listed by key (``list_page``, or ``count`` with a
  prefix) and maintained by every insert and delete from then on. A page is
  a bisection plus a walk of ``limit`` keys, whatever the size of the scope.
* a heap of expiries ``(expires_at, version, scope, key)``. Every operation
  first removes the entries whose time has come (one comparison with the
  heap's top when nothing is due), so an expired entry is never visible;
  ``Sweeper`` wakes the owner at the next expiry so removals (and their
  events) happen on time even when nobody reads. A heap item whose entry was
  overwritten since carries an older version and is skipped.
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sortedcontainers import SortedList

from pyiii.stores.base import (
    Entry,
    ExpiryListener,
    Mutation,
    MutationItem,
    StateAdapter,
    _Keep,
    now_ms,
    versioned,
)

# (scope, key, the entry that expired)
Expired = tuple[str, str, Entry]
# (old, new, changed) per mutation
Applied = tuple[Entry | None, Entry | None, bool]

# Rebuild the expiry heap when stale items outnumber live ones by this much.
_HEAP_SLACK = 64


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    None when there is none (the prefix is empty or all U+10FFFF).
    """
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


class MemoryStore:
    """scope -> key -> Entry, with one store-wide version counter.

    Python dicts keep insertion order, and assigning to an existing key keeps
    its position, which is exactly the ``list`` ordering contract. Empty
    scopes are removed so ``list_groups`` only reports scopes with keys.

    ``on_expire`` is called with the entries each sweep removed (already
    gone from the store); ``on_schedule`` with the expiry of every entry
    written with one (the owner arms its timer).
    """

    __slots__ = ("_heap", "_scopes", "_sorted", "_ttl_live", "on_expire", "on_schedule", "version")

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, Entry]] = {}
        self._sorted: dict[str, Any] = {}  # scope -> SortedList of its keys, once listed by key
        self._heap: list[tuple[int, int, str, str]] = []
        self._ttl_live = 0  # entries with an expiry
        # Store-wide rather than per key: a re-created key then still gets a
        # larger version than it had before it was deleted.
        self.version = 0
        self.on_expire: Callable[[builtins.list[Expired]], None] | None = None
        self.on_schedule: Callable[[int], None] | None = None

    # -- expiry ----------------------------------------------------------------

    def sweep(self) -> None:
        """Remove every entry whose expiry has passed (cheap when none has)."""
        heap = self._heap
        if heap:
            now = now_ms()
            if heap[0][0] <= now:
                self._expire_due(now)

    def _expire_due(self, now: int) -> None:
        heap = self._heap
        expired: builtins.list[Expired] = []
        while heap and heap[0][0] <= now:
            _, version, scope, key = heapq.heappop(heap)
            keys = self._scopes.get(scope)
            entry = None if keys is None else keys.get(key)
            if entry is None or entry.version != version:
                continue  # overwritten or deleted since
            self.version += 1
            self._store(scope, key, entry, None)
            expired.append((scope, key, entry))
        if expired and self.on_expire is not None:
            self.on_expire(expired)

    def next_expiry(self) -> int | None:
        """When the earliest expiry is due (ms since the epoch), or None."""
        return self._heap[0][0] if self._heap else None

    def _compact_heap(self) -> None:
        """Drop heap items of entries overwritten or deleted since they were pushed."""
        live = []
        for item in self._heap:
            keys = self._scopes.get(item[2])
            entry = None if keys is None else keys.get(item[3])
            if entry is not None and entry.version == item[1]:
                live.append(item)
        heapq.heapify(live)
        self._heap = live

    # -- reads -------------------------------------------------------------------

    def get(self, scope: str, key: str) -> Entry | None:
        """The current entry, or None."""
        if self._heap:
            self.sweep()
        keys = self._scopes.get(scope)
        return None if keys is None else keys.get(key)

    def get_many(self, scope: str, wanted: Sequence[str]) -> builtins.list[Entry | None]:
        self.sweep()
        keys = self._scopes.get(scope)
        if keys is None:
            return [None] * len(wanted)
        return [keys.get(key) for key in wanted]

    def list(self, scope: str) -> builtins.list[Entry]:
        """Entries of a scope in first-insertion order."""
        self.sweep()
        keys = self._scopes.get(scope)
        return [] if keys is None else builtins.list(keys.values())

    def list_groups(self, prefix: str = "") -> builtins.list[str]:
        """Sorted names of scopes holding at least one key and starting with ``prefix``."""
        self.sweep()
        if not prefix:
            return sorted(self._scopes)
        return sorted(scope for scope in self._scopes if scope.startswith(prefix))

    def _index(self, scope: str, keys: dict[str, Entry]) -> Any:
        index = self._sorted.get(scope)
        if index is None:
            index = self._sorted[scope] = SortedList(keys)
        return index

    def list_page(
        self, scope: str, prefix: str, after: str | None, limit: int | None
    ) -> tuple[builtins.list[tuple[str, Entry]], bool]:
        """Keys starting with ``prefix``, greater than ``after``, in code-point order.

        Returns at most ``limit`` (key, entry) pairs and whether more follow.
        """
        self.sweep()
        keys = self._scopes.get(scope)
        if keys is None:
            return [], False
        index = self._index(scope, keys)
        if after is not None and after >= prefix:
            candidates = index.irange(minimum=after, inclusive=(False, True))
        else:
            candidates = index.irange(minimum=prefix)
        end = prefix_end(prefix)
        matching = candidates if end is None else itertools.takewhile(lambda k: k < end, candidates)
        if limit is None:
            return [(k, keys[k]) for k in matching], False
        page = [(k, keys[k]) for k in itertools.islice(matching, limit + 1)]
        more = len(page) > limit
        return (page[:limit] if more else page), more

    def count(self, scope: str, prefix: str) -> int:
        self.sweep()
        keys = self._scopes.get(scope)
        if keys is None:
            return 0
        if not prefix:
            return len(keys)
        index = self._index(scope, keys)
        end = prefix_end(prefix)
        hi = len(index) if end is None else index.bisect_left(end)
        return int(hi - index.bisect_left(prefix))

    # -- writes ------------------------------------------------------------------

    def apply(self, scope: str, key: str, fn: Mutation) -> Applied:
        """Run ``fn`` on the current entry and store its result.

        Returns (old, new, changed). ``changed`` is False for KEEP and for
        deleting an absent key: nothing was written and no version was used.
        If ``fn`` raises, the exception propagates and nothing changes.
        """
        if self._heap:
            self.sweep()
        keys = self._scopes.get(scope)
        old = None if keys is None else keys.get(key)
        out = fn(old)
        if type(out) is bytes:  # the common write: no expiry, the next version
            self.version += 1
            new: Entry | None = Entry(out, self.version)
        elif isinstance(out, _Keep) or (out is None and old is None):
            return old, old, False
        elif out is None:
            self.version += 1
            new = None
        else:
            new, self.version = versioned(out, self.version)
        if (
            keys is not None
            and old is not None
            and new is not None
            and old.expires_at is None
            and new.expires_at is None
        ):
            keys[key] = new  # an overwrite with no expiry either side: all that _store would do
        else:
            self._store(scope, key, old, new)
        return old, new, True

    def apply_many(self, items: Sequence[MutationItem]) -> builtins.list[Applied]:
        """Run every item in order, each seeing the earlier ones; all or nothing.

        Every ``fn`` runs before anything is stored, so one that raises
        leaves the store (and the version counter) untouched.
        """
        self.sweep()
        view: dict[tuple[str, str], Entry | None] = {}
        planned: builtins.list[Applied] = []
        version = self.version
        for scope, key, fn in items:
            if (scope, key) in view:
                old = view[(scope, key)]
            else:
                keys = self._scopes.get(scope)
                old = None if keys is None else keys.get(key)
            out = fn(old)
            if isinstance(out, _Keep) or (out is None and old is None):
                planned.append((old, old, False))
                continue
            if out is None:
                version += 1
                new = None
            else:
                new, version = versioned(out, version)
            view[(scope, key)] = new
            planned.append((old, new, True))
        self.version = version
        for (scope, key, _), (_, new, changed) in zip(items, planned, strict=True):
            if changed:
                keys = self._scopes.get(scope)
                self._store(scope, key, None if keys is None else keys.get(key), new)
        return planned

    def _store(self, scope: str, key: str, old: Entry | None, new: Entry | None) -> None:
        """Replace ``old`` (the current entry) by ``new`` (None: delete) and keep the indexes."""
        if old is not None and old.expires_at is not None:
            self._ttl_live -= 1
        if new is None:
            if old is None:
                return
            keys = self._scopes[scope]
            del keys[key]
            if not keys:
                del self._scopes[scope]
                self._sorted.pop(scope, None)
            else:
                index = self._sorted.get(scope)
                if index is not None:
                    index.remove(key)
            return
        keys_or_none = self._scopes.get(scope)
        if keys_or_none is None:
            keys_or_none = self._scopes[scope] = {}
        keys_or_none[key] = new
        if old is None:
            index = self._sorted.get(scope)
            if index is not None:
                index.add(key)
        if new.expires_at is not None:
            self._ttl_live += 1
            heapq.heappush(self._heap, (new.expires_at, new.version, scope, key))
            if len(self._heap) > 2 * self._ttl_live + _HEAP_SLACK:
                self._compact_heap()
            if self.on_schedule is not None:
                self.on_schedule(new.expires_at)

    def replace(self, rows: Iterable[tuple[str, str, Entry]], version: int) -> None:
        """Replace the whole content; ``rows`` come in list order.

        ``version`` is the counter to continue from; it is raised to the
        largest version among ``rows`` so versions never go backwards.
        Expired rows are kept until the next sweep (which reports them).
        """
        scopes: dict[str, dict[str, Entry]] = {}
        heap: builtins.list[tuple[int, int, str, str]] = []
        for scope, key, entry in rows:
            keys = scopes.get(scope)
            if keys is None:
                keys = scopes[scope] = {}
            keys[key] = entry
            version = max(version, entry.version)
            if entry.expires_at is not None:
                heap.append((entry.expires_at, entry.version, scope, key))
        heapq.heapify(heap)
        self._scopes = scopes
        self._sorted = {}
        self._heap = heap
        self._ttl_live = len(heap)
        self.version = version


class Sweeper:
    """A timer that calls ``sweep`` at the earliest expiry it was told about.

    ``sweep`` removes what is due and returns the next expiry (or None).
    Uses ``loop.call_later`` only: nothing here runs inside a caller's call.
    """

    __slots__ = ("_at", "_handle", "_sweep", "closed")

    def __init__(self, sweep: Callable[[], int | None]) -> None:
        self._sweep = sweep
        self._handle: asyncio.TimerHandle | None = None
        self._at: int | None = None
        self.closed = False

    def arm(self, at: int | None) -> None:
        """Make sure the timer fires no later than ``at`` (ms since the epoch)."""
        if at is None or self.closed:
            return
        if self._handle is not None and self._at is not None and self._at <= at:
            return
        if self._handle is not None:
            self._handle.cancel()
        loop = asyncio.get_running_loop()
        self._at = at
        self._handle = loop.call_later(max(0, at - now_ms()) / 1000, self._fire)

    def _fire(self) -> None:
        self._handle = self._at = None
        self.arm(self._sweep())

    def close(self) -> None:
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self._at = None


class MemoryAdapter(StateAdapter):
    """State kept in process memory only (``store_method: in_memory``).

    Every write is applied synchronously between two awaits, so it is
    atomic with respect to all other operations on the same event loop.
    """

    eager_safe = True

    def __init__(self) -> None:
        self._store = MemoryStore()
        self._listener: ExpiryListener | None = None
        self._sweeper = Sweeper(self._timer_sweep)
        self._store.on_expire = self._report
        self._store.on_schedule = self._sweeper.arm

    def _report(self, expired: builtins.list[Expired]) -> None:
        listener = self._listener
        if listener is not None:
            for scope, key, entry in expired:
                listener(scope, key, entry)

    def _timer_sweep(self) -> int | None:
        self._store.sweep()
        return self._store.next_expiry()

    def on_expired(self, listener: ExpiryListener) -> None:
        self._listener = listener
        self._sweeper.arm(self._store.next_expiry())

    async def close(self) -> None:
        self._sweeper.close()

    sync_reads = True
    sync_writes = True

    async def get(self, scope: str, key: str) -> Entry | None:
        return self._store.get(scope, key)

    def get_now(self, scope: str, key: str) -> Entry | None:
        return self._store.get(scope, key)

    async def get_many(self, scope: str, keys: Sequence[str]) -> builtins.list[Entry | None]:
        return self._store.get_many(scope, keys)

    async def mutate(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        old, new, _ = self._store.apply(scope, key, fn)
        return old, new

    def mutate_now(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        old, new, _ = self._store.apply(scope, key, fn)
        return old, new

    async def mutate_many(
        self, items: Sequence[MutationItem]
    ) -> builtins.list[tuple[Entry | None, Entry | None]]:
        return [(old, new) for old, new, _ in self._store.apply_many(items)]

    async def list(self, scope: str) -> builtins.list[Entry]:
        return self._store.list(scope)

    async def list_page(
        self, scope: str, prefix: str, after: str | None, limit: int | None
    ) -> tuple[builtins.list[tuple[str, Entry]], bool]:
        return self._store.list_page(scope, prefix, after, limit)

    async def count(self, scope: str, prefix: str) -> int:
        return self._store.count(scope, prefix)

    async def list_groups(self, prefix: str = "") -> builtins.list[str]:
        return self._store.list_groups(prefix)
