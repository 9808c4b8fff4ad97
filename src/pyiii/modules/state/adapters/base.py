"""The one interface every State adapter implements.

Adapters store *entries*: the value as JSON text plus a version. They know
nothing about update ops or triggers. Every write goes through ``mutate``:
the State module passes a pure function from the current entry to the new
value, and the adapter runs it atomically with respect to every other write
of that key (an adapter that retries optimistically, like Redis, may call it
more than once, so it must not have side effects).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Entry:
    """A stored value: compact JSON text and a per-key monotonic version."""

    raw: bytes
    version: int


class _Keep:
    """Sentinel type: the mutation leaves the key exactly as it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()

# current entry (None = absent) -> new JSON text, None to delete, or KEEP.
Mutation = Callable[[Entry | None], bytes | None | _Keep]


# (event_type, scope, key, old JSON text or None, new JSON text or None)
ChangeListener = Callable[[bytes, str, str, bytes | None, bytes | None], None]


class AdapterError(Exception):
    """The backing store failed (I/O, connection). Mapped to *_ERROR codes."""


class StateAdapter(abc.ABC):
    """Storage for State: scope -> key -> Entry.

    Ordering contract for ``list``: entries in the order their keys were first
    inserted (overwriting keeps the position; delete + insert moves to the end).
    """

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Load or connect. Raise ``ConfigError`` for an unusable store."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush everything acknowledged and release resources."""

    @abc.abstractmethod
    async def get(self, scope: str, key: str) -> Entry | None:
        """The current entry, or None when the key is absent."""

    @abc.abstractmethod
    async def mutate(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        """Atomically replace the key with ``fn(current)``; return (old, new).

        Returns only once the change is durable for this adapter. When ``fn``
        returns KEEP, nothing is written and (old, old) is returned. ``fn``
        may raise; the exception propagates and nothing is written.
        """

    @abc.abstractmethod
    async def list(self, scope: str) -> builtins.list[Entry]:
        """All entries of a scope in insertion order; [] for an unknown scope."""

    @abc.abstractmethod
    async def list_groups(self) -> builtins.list[str]:
        """Sorted unique names of scopes that hold at least one key."""

    # True when every method only awaits plain asyncio futures (no
    # asyncio.timeout, no current_task()): the engine may then step calls
    # eagerly and skip creating a Task for the ones that never wait.
    eager_safe: bool = False

    # A remote adapter (the bridge) forwards whole ``state::*`` calls to
    # another engine: a pure ``mutate`` function cannot travel over the
    # wire, so the State module calls ``call`` instead of the methods above.
    remote: bool = False

    async def call(self, function_id: str, payload: bytes) -> bytes | None:
        """Run ``state::*`` ``function_id`` remotely; its result as JSON text.

        None means the call had no result. Raises ``AdapterError`` when the
        remote side cannot be reached, and ``IIIError`` with the remote code
        for errors the remote State module reported.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a remote adapter")

    def subscribe(self, listener: ChangeListener) -> bool:
        """Deliver every change, from any engine, to ``listener``.

        Adapters shared by several engines (Redis) broadcast their changes
        so a trigger fires wherever its worker is connected; they call
        ``listener`` for each change, local ones included, and return True.
        The default returns False: the State module then publishes its own
        writes locally.
        """
        return False
