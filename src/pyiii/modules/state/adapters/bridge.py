"""State kept by another engine: this engine forwards every call to it.

The adapter connects to the engine at ``bridge_url`` as a worker named
``iii-state-bridge`` (``pyiii.stores.remote``; it reconnects by itself, with
backoff of up to 10 s) and sends each ``state::*`` call there with the caller's payload
unchanged. It is a *remote* adapter: ``mutate`` takes a Python function,
which cannot travel, so the State module uses ``call`` for whole operations
(see ``StateAdapter.remote``). The local module still validates payloads
first, then fires this engine's own ``state`` triggers from the remote
result; the remote engine fires its own.

Errors: while the bridge is not connected, calls fail at once with
``AdapterError`` ("the engine at <url> is unreachable"), which the module
reports as ``SET_ERROR``/``GET_ERROR``/...; they work again as soon as the
worker has reconnected. Errors the remote State module reports
(``deserialization_error``, ``VALUE_TOO_LARGE``, its own ``*_ERROR``) come
back with their code unchanged.

The extensions (``with_meta``, preconditions, ``ttl_ms``, paged
``state::list``, ``state::count``, ``get_many``, ``set_many``,
``transaction``) are forwarded the same way, so they are exactly as atomic
as on the remote engine; a ``VERSION_MISMATCH`` keeps its ``current_version``
(and ``index``). Expiries fire triggers on the remote engine only.

Limits: the SDK turns a JSON ``null`` result and a missing result into the
same ``None``, so through the bridge ``state::get`` of a stored null looks
like a missing key, and deleting a key that holds null fires no local
``state:deleted`` (the remote engine's triggers are unaffected).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import msgspec

from pyiii import errors
from pyiii.modules.state.cursors import encode_cursor
from pyiii.stores.base import AdapterError, Entry, Mutation, MutationItem, StateAdapter
from pyiii.stores.remote import CALL_TIMEOUT_MS, RemoteEngine

WORKER_NAME = "iii-state-bridge"

# Errors the remote State module reports: passed on as they are.
STATE_CODES = frozenset(
    {
        errors.DESERIALIZATION_ERROR,
        errors.VALUE_TOO_LARGE,
        errors.SET_ERROR,
        errors.GET_ERROR,
        errors.DELETE_ERROR,
        errors.UPDATE_ERROR,
        errors.LIST_ERROR,
        errors.LIST_GROUPS_ERROR,
        errors.VERSION_MISMATCH,
        errors.INVALID_ARGUMENTS,
        "TRANSACTION_ERROR",
        "IMPORT_ERROR",
    }
)

# Expected result shape per function, checked before anything is relayed.
_SHAPES: dict[str, type | tuple[type, ...]] = {
    "state::set": dict,
    "state::update": dict,
    "state::list": (list, dict),  # dict: a paged listing {items, cursor}
    "state::list_groups": dict,
    "state::count": dict,
    "state::get_many": dict,
    "state::set_many": dict,
    "state::transaction": dict,
    "state::scopes": dict,
    "state::keys": dict,
    "state::import": dict,
}


class BridgeAdapter(StateAdapter):
    """Forwards State calls to the engine at ``url`` (see module docstring)."""

    remote = True

    def __init__(self, url: str, *, call_timeout_ms: int = CALL_TIMEOUT_MS) -> None:
        self.url = url
        self.call_timeout_ms = call_timeout_ms
        self._remote = RemoteEngine(
            url,
            worker_name=WORKER_NAME,
            passthrough=STATE_CODES,
            what="state calls",
            call_timeout_ms=call_timeout_ms,
        )

    async def open(self) -> None:
        await self._remote.open()

    async def close(self) -> None:
        await self._remote.close()

    @property
    def connected(self) -> bool:
        return self._remote.connected

    async def call(self, function_id: str, payload: bytes) -> bytes | None:
        result = await self._remote.call(function_id, payload)
        shape = _SHAPES.get(function_id)
        if shape is not None and not isinstance(result, shape):
            raise AdapterError(
                f"the engine at {self.url} sent an unexpected {function_id} result: {result!r:.200}"
            )
        if function_id == "state::list_groups" and not isinstance(result.get("groups"), builtins.list):
            raise AdapterError(f"the engine at {self.url} sent a state::list_groups result without groups")
        return None if result is None else msgspec.json.encode(result)

    # The storage interface, for callers other than the State module.

    async def get(self, scope: str, key: str) -> Entry | None:
        # A plain get: the remote engine may be the reference engine.
        raw = await self.call("state::get", msgspec.json.encode({"scope": scope, "key": key}))
        return None if raw is None else Entry(raw, 0)

    async def mutate(self, scope: str, key: str, fn: Mutation) -> tuple[Entry | None, Entry | None]:
        raise AdapterError("the bridge adapter forwards whole state calls (call()); it has no mutate")

    async def mutate_many(
        self, items: Sequence[MutationItem]
    ) -> builtins.list[tuple[Entry | None, Entry | None]]:
        # The State module forwards state::transaction / state::set_many as calls.
        raise AdapterError("the bridge adapter forwards whole state calls (call()); it has no mutate_many")

    async def get_many(self, scope: str, keys: Sequence[str]) -> builtins.list[Entry | None]:
        payload = {"scope": scope, "keys": list(keys), "with_meta": True}
        raw = await self.call("state::get_many", msgspec.json.encode(payload))
        metas: builtins.list[dict[str, Any]] = msgspec.json.decode(raw)["values"] if raw is not None else []
        return [_entry(m) for m in metas]

    async def list_page(
        self, scope: str, prefix: str, after: str | None, limit: int | None
    ) -> tuple[builtins.list[tuple[str, Entry]], bool]:
        # The remote cursor is the last key; this engine encodes it the same way.
        payload: dict[str, Any] = {"scope": scope, "prefix": prefix, "with_keys": True}
        if limit is not None:
            payload["limit"] = limit
        if after is not None:
            payload["cursor"] = encode_cursor(after)
        raw = await self.call("state::list", msgspec.json.encode(payload))
        page: dict[str, Any] = msgspec.json.decode(raw) if raw is not None else {"items": []}
        rows = [(item["key"], Entry(msgspec.json.encode(item["value"]), 0)) for item in page["items"]]
        return rows, page.get("cursor") is not None

    async def count(self, scope: str, prefix: str) -> int:
        raw = await self.call("state::count", msgspec.json.encode({"scope": scope, "prefix": prefix}))
        return int(msgspec.json.decode(raw)["count"]) if raw is not None else 0

    async def list(self, scope: str) -> builtins.list[Entry]:
        raw = await self.call("state::list", msgspec.json.encode({"scope": scope}))
        values: builtins.list[Any] = msgspec.json.decode(raw) if raw is not None else []
        return [Entry(msgspec.json.encode(v), 0) for v in values]

    async def list_groups(self, prefix: str = "") -> builtins.list[str]:
        raw = await self.call("state::list_groups", b"{}")
        groups: builtins.list[str] = msgspec.json.decode(raw)["groups"] if raw is not None else []
        return [group for group in groups if group.startswith(prefix)]


def _entry(meta: dict[str, Any]) -> Entry | None:
    """An Entry from a remote ``with_meta`` read."""
    if not meta.get("exists"):
        return None
    return Entry(
        msgspec.json.encode(meta.get("value")), int(meta.get("version") or 0), meta.get("expires_at_ms")
    )
