"""Typed helpers for the State module, available as ``worker.state``.

    state = worker.state
    await state.set("users", uid, {"name": "Ada"}, ttl_ms=3_600_000)
    entry = await state.get_meta("users", uid)          # StateEntry(exists, value, version, ...)
    await state.set("users", uid, new, expect_version=entry.version)   # VersionMismatch if it moved
    async for item in state.items("users", prefix="u:"):  # every key, page by page
        ...

Every method is one ``state::*`` call (see the README's State reference);
``modify`` is the read-modify-write loop with retries. A failed precondition
raises ``VersionMismatch``, an ``IIIError`` with code ``VERSION_MISMATCH``
whose ``current_version`` (and ``details["current_version"]``) is the key's
version, None when it does not exist.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pyiii import errors
from pyiii.errors import IIIError

if TYPE_CHECKING:
    from pyiii.sdk.worker import Worker

__all__ = ["Item", "Page", "State", "StateEntry", "TxOp", "VersionMismatch", "WriteResult"]


class VersionMismatch(IIIError):
    """A precondition (``expect_version`` / ``expect_exists``) did not hold; nothing changed."""

    @property
    def current_version(self) -> int | None:
        """The key's version when the call was checked (None: the key did not exist)."""
        value = (self.details or {}).get("current_version")
        return value if isinstance(value, int) else None

    @property
    def index(self) -> int | None:
        """For a transaction, the position of the item whose precondition failed."""
        value = (self.details or {}).get("index")
        return value if isinstance(value, int) else None

    @classmethod
    def from_error(cls, error: IIIError) -> VersionMismatch:
        return cls(
            error.code,
            error.message,
            function_id=error.function_id,
            stacktrace=error.stacktrace,
            details=error.details,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StateEntry:
    """A key as ``state::get`` with ``with_meta`` reports it."""

    exists: bool
    value: Any
    version: int | None
    expires_at_ms: int | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> StateEntry:
        return cls(bool(data["exists"]), data.get("value"), data.get("version"), data.get("expires_at_ms"))


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """What a set, update or transaction item did."""

    old_value: Any
    new_value: Any
    version: int | None = None  # None for a delete
    expires_at_ms: int | None = None
    errors: builtins.list[dict[str, Any]] = dataclasses.field(default_factory=builtins.list)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> WriteResult:
        return cls(
            data.get("old_value"),
            data.get("new_value"),
            data.get("version"),
            data.get("expires_at_ms"),
            builtins.list(data.get("errors") or ()),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    key: str
    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``cursor`` continues it (None: this was the last page)."""

    items: builtins.list[Item]
    cursor: str | None


_UNSET: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class TxOp:
    """One item of ``State.transaction``; build it with ``TxOp.set/update/delete``."""

    op: str
    scope: str
    key: str
    value: Any = _UNSET
    ops: builtins.list[dict[str, Any]] | None = None
    expect_version: int | None = None
    expect_exists: bool | None = None
    ttl_ms: int | None = None

    @classmethod
    def set(
        cls,
        scope: str,
        key: str,
        value: Any,
        *,
        expect_version: int | None = None,
        expect_exists: bool | None = None,
        ttl_ms: int | None = None,
    ) -> TxOp:
        return cls("set", scope, key, value, None, expect_version, expect_exists, ttl_ms)

    @classmethod
    def update(
        cls,
        scope: str,
        key: str,
        ops: Iterable[Mapping[str, Any]],
        *,
        expect_version: int | None = None,
        expect_exists: bool | None = None,
        ttl_ms: int | None = None,
    ) -> TxOp:
        steps = [dict(o) for o in ops]
        return cls("update", scope, key, _UNSET, steps, expect_version, expect_exists, ttl_ms)

    @classmethod
    def delete(
        cls, scope: str, key: str, *, expect_version: int | None = None, expect_exists: bool | None = None
    ) -> TxOp:
        return cls("delete", scope, key, _UNSET, None, expect_version, expect_exists)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"op": self.op, "scope": self.scope, "key": self.key}
        if self.value is not _UNSET:
            wire["value"] = self.value
        if self.ops is not None:
            wire["ops"] = self.ops
        return _with_options(wire, self.expect_version, self.expect_exists, self.ttl_ms)


def _with_options(
    payload: dict[str, Any], expect_version: int | None, expect_exists: bool | None, ttl_ms: int | None
) -> dict[str, Any]:
    if expect_version is not None:
        payload["expect_version"] = expect_version
    if expect_exists is not None:
        payload["expect_exists"] = expect_exists
    if ttl_ms is not None:
        payload["ttl_ms"] = ttl_ms
    return payload


class State:
    """``state::*`` calls with typed results (see the module docstring)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def _call(self, function_id: str, payload: dict[str, Any]) -> Any:
        try:
            return await self._worker.trigger(function_id, payload)
        except IIIError as exc:
            if exc.code == errors.VERSION_MISMATCH and not isinstance(exc, VersionMismatch):
                raise VersionMismatch.from_error(exc) from None
            raise

    # -- single keys -----------------------------------------------------------

    async def get(self, scope: str, key: str) -> Any:
        """The stored value, or None (also for a stored null: see ``get_meta``)."""
        return await self._call("state::get", {"scope": scope, "key": key})

    async def get_meta(self, scope: str, key: str) -> StateEntry:
        """Value, version and expiry; ``exists`` tells a stored null from a missing key."""
        data = await self._call("state::get", {"scope": scope, "key": key, "with_meta": True})
        return StateEntry.from_wire(data)

    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        expect_version: int | None = None,
        expect_exists: bool | None = None,
        ttl_ms: int | None = None,
    ) -> WriteResult:
        """Store ``value``; without ``ttl_ms`` the key never expires (an earlier expiry is cleared)."""
        payload = {"scope": scope, "key": key, "value": value, "with_meta": True}
        data = await self._call("state::set", _with_options(payload, expect_version, expect_exists, ttl_ms))
        return WriteResult.from_wire(data)

    async def update(
        self,
        scope: str,
        key: str,
        ops: Iterable[Mapping[str, Any]],
        *,
        expect_version: int | None = None,
        expect_exists: bool | None = None,
        ttl_ms: int | None = None,
    ) -> WriteResult:
        """Apply update ops atomically; without ``ttl_ms`` the key keeps its expiry."""
        payload = {"scope": scope, "key": key, "ops": [dict(o) for o in ops], "with_meta": True}
        payload = _with_options(payload, expect_version, expect_exists, ttl_ms)
        data = await self._call("state::update", payload)
        return WriteResult.from_wire(data)

    async def delete(
        self, scope: str, key: str, *, expect_version: int | None = None, expect_exists: bool | None = None
    ) -> Any:
        """Delete the key; returns the value it held (None if there was none)."""
        payload = _with_options({"scope": scope, "key": key}, expect_version, expect_exists, None)
        return await self._call("state::delete", payload)

    async def modify(
        self,
        scope: str,
        key: str,
        fn: Callable[[Any], Any] | Callable[[Any], Awaitable[Any]],
        *,
        attempts: int = 10,
        ttl_ms: int | None = None,
    ) -> WriteResult:
        """Read-modify-write: store ``fn(current value)`` unless the key changed meanwhile.

        ``fn`` gets the current value (None when absent) and returns the new
        one; it runs again, on the newer value, each time another writer got
        there first. Raises ``VersionMismatch`` after ``attempts`` tries.
        """
        for attempt in range(attempts):
            entry = await self.get_meta(scope, key)
            new = fn(entry.value)
            if isinstance(new, Awaitable):
                new = await new
            try:
                if entry.exists:
                    return await self.set(scope, key, new, expect_version=entry.version, ttl_ms=ttl_ms)
                return await self.set(scope, key, new, expect_exists=False, ttl_ms=ttl_ms)
            except VersionMismatch:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- several keys ----------------------------------------------------------

    async def get_many(self, scope: str, keys: Iterable[str]) -> builtins.list[Any]:
        """The values of ``keys`` (None where missing), in order."""
        data = await self._call("state::get_many", {"scope": scope, "keys": builtins.list(keys)})
        return builtins.list(data["values"])

    async def get_many_meta(self, scope: str, keys: Iterable[str]) -> builtins.list[StateEntry]:
        payload = {"scope": scope, "keys": builtins.list(keys), "with_meta": True}
        data = await self._call("state::get_many", payload)
        return [StateEntry.from_wire(v) for v in data["values"]]

    async def set_many(
        self,
        scope: str,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        *,
        ttl_ms: int | None = None,
    ) -> builtins.list[WriteResult]:
        """Store several keys of one scope in one durable commit."""
        pairs = items.items() if isinstance(items, Mapping) else items
        payload: dict[str, Any] = {
            "scope": scope,
            "items": [{"key": k, "value": v} for k, v in pairs],
            "with_meta": True,
        }
        if ttl_ms is not None:
            payload["ttl_ms"] = ttl_ms
        data = await self._call("state::set_many", payload)
        return [WriteResult.from_wire(r) for r in data["results"]]

    async def transaction(self, ops: Iterable[TxOp | Mapping[str, Any]]) -> builtins.list[WriteResult]:
        """Apply every op or none (``VersionMismatch.index`` names a failed precondition)."""
        wire = [op.to_wire() if isinstance(op, TxOp) else dict(op) for op in ops]
        data = await self._call("state::transaction", {"ops": wire})
        return [WriteResult.from_wire(r) for r in data["results"]]

    # -- scopes ----------------------------------------------------------------

    async def values(self, scope: str) -> builtins.list[Any]:
        """Every value of the scope, in first-insertion order (plain ``state::list``)."""
        return builtins.list(await self._call("state::list", {"scope": scope}) or [])

    async def list(
        self, scope: str, *, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> Page:
        """One page of keys starting with ``prefix``, in code-point order."""
        payload: dict[str, Any] = {"scope": scope, "prefix": prefix, "limit": limit, "with_keys": True}
        if cursor is not None:
            payload["cursor"] = cursor
        data = await self._call("state::list", payload)
        return Page([Item(i["key"], i["value"]) for i in data["items"]], data["cursor"])

    async def pages(self, scope: str, *, prefix: str = "", page_size: int = 1000) -> AsyncIterator[Page]:
        """Every page; keys that exist throughout the walk come exactly once."""
        cursor: str | None = None
        while True:
            page = await self.list(scope, prefix=prefix, limit=page_size, cursor=cursor)
            yield page
            if page.cursor is None:
                return
            cursor = page.cursor

    async def items(self, scope: str, *, prefix: str = "", page_size: int = 1000) -> AsyncIterator[Item]:
        """Every (key, value) of the scope under ``prefix``, page by page."""
        async for page in self.pages(scope, prefix=prefix, page_size=page_size):
            for item in page.items:
                yield item

    async def count(self, scope: str, prefix: str = "") -> int:
        data = await self._call("state::count", {"scope": scope, "prefix": prefix})
        return int(data["count"])

    async def groups(self) -> builtins.list[str]:
        """Names of the scopes that hold keys, sorted."""
        data = await self._call("state::list_groups", {})
        return builtins.list(data["groups"])
