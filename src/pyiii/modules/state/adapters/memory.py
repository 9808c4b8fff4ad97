"""In-memory State storage.

``MemoryStore`` is the synchronous core: plain dicts, no awaits, so every
operation is atomic on the event loop. ``MemoryAdapter`` exposes it as a
``StateAdapter``; ``SqliteAdapter`` keeps one as its read mirror.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from pyiii.modules.state.adapters.base import Entry, Mutation, StateAdapter, _Keep


class MemoryStore:
    """scope -> key -> Entry, with one store-wide version counter.

    Python dicts keep insertion order, and assigning to an existing key keeps
    its position, which is exactly the ``list`` ordering contract. Empty
    scopes are removed so ``list_groups`` only reports scopes with keys.
    """

    __slots__ = ("_scopes", "version")

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, Entry]] = {}
        # Store-wide rather than per key: a re-created key then still gets a
        # larger version than it had before it was deleted.
        self.version = 0

    def get(self, scope: str, key: str) -> Entry | None:
        """The current entry, or None."""
        keys = self._scopes.get(scope)
        return None if keys is None else keys.get(key)

    def apply(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None, bool]:
        """Run ``fn`` on the current entry and store its result.

        Returns (old, new, changed). ``changed`` is False for KEEP and for
        deleting an absent key: nothing was written and no version was used.
        If ``fn`` raises, the exception propagates and nothing changes.
        """
        keys = self._scopes.get(scope)
        old = None if keys is None else keys.get(key)
        raw = fn(old)
        if isinstance(raw, _Keep) or (raw is None and old is None):
            return old, old, False
        self.version += 1
        if raw is None:
            assert keys is not None  # old is not None, so the scope exists
            del keys[key]
            if not keys:
                del self._scopes[scope]
            return old, None, True
        new = Entry(raw, self.version)
        if keys is None:
            keys = self._scopes[scope] = {}
        keys[key] = new
        return old, new, True

    def list(self, scope: str) -> builtins.list[Entry]:
        """Entries of a scope in first-insertion order."""
        keys = self._scopes.get(scope)
        return [] if keys is None else builtins.list(keys.values())

    def list_groups(self) -> builtins.list[str]:
        """Sorted names of scopes holding at least one key."""
        return sorted(self._scopes)

    def replace(self, rows: Iterable[tuple[str, str, Entry]], version: int) -> None:
        """Replace the whole content; ``rows`` come in list order.

        ``version`` is the counter to continue from; it is raised to the
        largest version among ``rows`` so versions never go backwards.
        """
        scopes: dict[str, dict[str, Entry]] = {}
        for scope, key, entry in rows:
            keys = scopes.get(scope)
            if keys is None:
                keys = scopes[scope] = {}
            keys[key] = entry
            version = max(version, entry.version)
        self._scopes = scopes
        self.version = version


class MemoryAdapter(StateAdapter):
    """State kept in process memory only (``store_method: in_memory``).

    Every write is applied synchronously between two awaits, so it is
    atomic with respect to all other operations on the same event loop.
    """

    eager_safe = True

    def __init__(self) -> None:
        self._store = MemoryStore()

    async def get(self, scope: str, key: str) -> Entry | None:
        return self._store.get(scope, key)

    async def mutate(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        old, new, _ = self._store.apply(scope, key, fn)
        return old, new

    async def list(self, scope: str) -> builtins.list[Entry]:
        return self._store.list(scope)

    async def list_groups(self) -> builtins.list[str]:
        return self._store.list_groups()
