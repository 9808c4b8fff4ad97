"""The one interface every State adapter implements.

Adapters store *entries*: the value as JSON text plus a version. They know
nothing about update ops or triggers. Every write goes through ``mutate``:
the State module passes a pure function from the current entry to the new
value, and the adapter runs it atomically with respect to every other write
of that key (an adapter that retries optimistically, like Redis, may call it
more than once, so it must not have side effects).

Preconditions (compare-and-set) are checks inside that function: it raises
``PreconditionFailed`` and the adapter writes nothing. Expiry (TTL) is part
of the entry: an expired entry reads as absent everywhere, and the adapter
reports its removal once through the listener given to ``on_expired``.
"""

from __future__ import annotations

import abc
import builtins
import time
from collections.abc import Callable, Sequence

import msgspec


# A Struct, not a frozen dataclass: every write makes one, and a frozen
# dataclass's __init__ (object.__setattr__ per field) costs ~9x more. gc=False:
# an entry holds only bytes and ints, so it can never be part of a cycle.
class Entry(msgspec.Struct, frozen=True, gc=False):
    """A stored value: JSON text, a per-key monotonic version, an optional expiry.

    ``expires_at`` is absolute wall-clock time in milliseconds since the
    Unix epoch (so it survives restarts); None means the entry never expires.
    """

    raw: bytes
    version: int
    expires_at: int | None = None


class Put(bytes):
    """JSON text to store with an expiry: what a mutation returns for a TTL write.

    A ``bytes`` subclass, so an adapter that ignores expiry still stores the
    text; plain ``bytes`` from a mutation means "no expiry".
    """

    expires_at: int | None

    def __new__(cls, raw: bytes, expires_at: int | None = None) -> Put:
        self = super().__new__(cls, raw)
        self.expires_at = expires_at
        return self


class Restored(Put):
    """JSON text to store with a given version and expiry: what a restore writes.

    An import (``state::import``) brings back entries dumped from another
    store; they keep their version instead of taking the next one, and the
    store's counter is raised to it so later writes still get larger ones.
    """

    version: int

    def __new__(cls, raw: bytes, version: int, expires_at: int | None = None) -> Restored:
        self = bytes.__new__(cls, raw)
        self.expires_at = expires_at
        self.version = version
        return self


def stored(raw: bytes, version: int) -> Entry:
    """The entry a mutation's JSON text becomes at ``version``."""
    if type(raw) is Put:
        return Entry(bytes(raw), version, raw.expires_at)
    return Entry(raw, version)


def versioned(raw: bytes, counter: int) -> tuple[Entry, int]:
    """The entry a mutation's JSON text becomes, and the version counter after it.

    A write takes the next version; a ``Restored`` keeps its own and raises
    the counter to it (never lowers it).
    """
    if type(raw) is Restored:
        return Entry(bytes(raw), raw.version, raw.expires_at), max(counter, raw.version)
    counter += 1
    return stored(raw, counter), counter


class _Keep:
    """Sentinel type: the mutation leaves the key exactly as it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()

# current entry (None = absent or expired) -> new JSON text (a ``Put`` to
# give it an expiry), None to delete, or KEEP.
Mutation = Callable[[Entry | None], bytes | None | _Keep]


# (event_type, scope, key, old JSON text or None, new JSON text or None)
ChangeListener = Callable[[bytes, str, str, bytes | None, bytes | None], None]

# (scope, key, the entry that expired): called once per expired entry,
# after its removal is durable.
ExpiryListener = Callable[[str, str, Entry], None]


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch (the clock of ``expires_at``)."""
    return time.time_ns() // 1_000_000


class AdapterError(Exception):
    """The backing store failed (I/O, connection). Mapped to *_ERROR codes."""


class PreconditionFailed(Exception):
    """Raised by a mutation whose precondition does not hold; nothing is written.

    ``current_version`` is the version the key has (None: absent). ``index``
    is set by ``mutate_many`` callers to the failing item's position.
    """

    def __init__(self, message: str, current_version: int | None, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.current_version = current_version
        self.index = index


# One item of ``mutate_many``: (scope, key, mutation).
MutationItem = tuple[str, str, Mutation]


def net_changes(
    keys: Sequence[tuple[str, str]], pairs: Sequence[tuple[Entry | None, Entry | None]]
) -> builtins.list[tuple[str, str, Entry | None, Entry | None]]:
    """(scope, key, before, after) for each key a ``mutate_many`` changed.

    ``keys`` and ``pairs`` are per item. A key written by several items
    appears once, from its entry before the first to its entry after the
    last, in the order keys were first changed; a key created and deleted
    again (absent before and after) does not appear. This is what change
    events of a transaction report: one per changed key.
    """
    first: dict[tuple[str, str], Entry | None] = {}
    last: dict[tuple[str, str], Entry | None] = {}
    for key, (old, new) in zip(keys, pairs, strict=True):
        if old is new:
            continue  # nothing written by this item (KEEP, or deleting an absent key)
        first.setdefault(key, old)
        last[key] = new
    return [
        (scope, key, first[(scope, key)], after)
        for (scope, key), after in last.items()
        if first[(scope, key)] is not None or after is not None
    ]


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

    async def mutate_many(
        self, items: Sequence[MutationItem]
    ) -> builtins.list[tuple[Entry | None, Entry | None]]:
        """Apply every item, in order, as one atomic and durable unit.

        Each mutation sees the key as left by the earlier items (a key may
        appear twice). If any mutation raises, nothing is written and the
        exception propagates. Returns (old, new) per item, like ``mutate``.
        """
        raise AdapterError(f"{type(self).__name__} does not support transactions")

    async def get_many(self, scope: str, keys: Sequence[str]) -> builtins.list[Entry | None]:
        """The current entries of ``keys`` (None where absent), read at one instant
        where the adapter can."""
        return [await self.get(scope, key) for key in keys]

    @abc.abstractmethod
    async def list(self, scope: str) -> builtins.list[Entry]:
        """All entries of a scope in insertion order; [] for an unknown scope."""

    async def list_page(
        self, scope: str, prefix: str, after: str | None, limit: int | None
    ) -> tuple[builtins.list[tuple[str, Entry]], bool]:
        """Keys starting with ``prefix`` and greater than ``after``, in code-point order.

        At most ``limit`` (None: all) (key, entry) pairs, and whether more
        matching keys follow the last one returned.
        """
        raise AdapterError(f"{type(self).__name__} cannot list keys")

    async def count(self, scope: str, prefix: str) -> int:
        """How many keys of ``scope`` start with ``prefix`` ("" counts all)."""
        raise AdapterError(f"{type(self).__name__} cannot count keys")

    @abc.abstractmethod
    async def list_groups(self, prefix: str = "") -> builtins.list[str]:
        """Sorted unique names of scopes that hold at least one key and start with ``prefix``."""

    def on_expired(self, listener: ExpiryListener) -> None:  # noqa: B027 - optional hook
        """Report each expired entry to ``listener`` once its removal is durable.

        Called by the State module once it is started; expired entries found
        earlier (at load) are reported after this call. Adapters that
        broadcast changes (``subscribe``) report expiries there instead.
        """

    def on_resumed(self, listener: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Call ``listener`` each time the ``subscribe`` feed is back after it was lost.

        Changes committed while the feed was down were never delivered; a
        module whose listeners hold copies (the Streams clients) re-reads then.
        Adapters without a feed that can be lost never call it.
        """

    # True when every method only awaits plain asyncio futures (no
    # asyncio.timeout, no current_task()): the engine may then step calls
    # eagerly and skip creating a Task for the ones that never wait.
    eager_safe: bool = False
    # The methods that are eager-safe in the sense above even when not all
    # are (known once the adapter is open): the engine then steps just the
    # functions that only call these without a Task.
    eager_methods: frozenset[str] = frozenset()

    # True when ``get_now`` (``mutate_now``) does what ``get`` (``mutate``)
    # does without ever waiting (the entries are in memory): the State module
    # then answers those calls without a coroutine, which at one call in
    # flight is a noticeable share of the call. A subclass that overrides
    # ``get`` or ``mutate`` must clear the flag.
    sync_reads: bool = False
    sync_writes: bool = False

    def get_now(self, scope: str, key: str) -> Entry | None:
        """``get``, synchronously; only for adapters with ``sync_reads``."""
        raise TypeError(f"{type(self).__name__} has no synchronous get")

    def mutate_now(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        """``mutate``, synchronously; only for adapters with ``sync_writes``."""
        raise TypeError(f"{type(self).__name__} has no synchronous mutate")

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
        raise TypeError(f"{type(self).__name__} is not a remote adapter; call its methods instead")

    def subscribe(self, listener: ChangeListener) -> bool:
        """Deliver every change, from any engine, to ``listener``.

        Adapters shared by several engines (Redis) broadcast their changes
        so a trigger fires wherever its worker is connected; they call
        ``listener`` for each change, local ones included, and return True.
        The default returns False: the State module then publishes its own
        writes locally.
        """
        return False

    async def publish(self, kind: bytes, scope: str, key: str, old: bytes | None, new: bytes | None) -> bool:
        """Hand an event no write of this store made to every ``subscribe`` listener.

        For events that travel like changes but are not stored here (an
        ephemeral message, a write a function served instead of the store).
        True when the adapter delivers it to the listeners of every engine,
        this one included, in order with its own changes of ``scope``; the
        default returns False and the caller delivers it locally. Raises
        ``AdapterError`` when the event could not be sent.
        """
        return False
