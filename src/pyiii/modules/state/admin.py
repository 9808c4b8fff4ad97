"""Operator functions of the State module: browse with metadata, restore a dump.

* ``state::scopes`` -- scopes with their key counts, paged in name order;
* ``state::keys`` -- a scope's keys with version and expiry (and, asked for,
  values), paged in key order with a prefix filter, at any scope size;
* ``state::import`` -- write dumped entries back *keeping* their version and
  expiry, only into keys that are absent; every item that is not written is
  reported with its reason, nothing present is ever overwritten.

The CLI (``pyiii state ...``) and the console use them; they are extensions
the official SDKs never call. Kept apart from ``module.py``, which holds the
reference's functions and their extensions.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta, Raw

from pyiii import errors
from pyiii.engine.registry import CallContext
from pyiii.errors import IIIError
from pyiii.modules.state.cursors import decode_cursor, encode_cursor
from pyiii.stores.base import KEEP, AdapterError, Entry, Put, Restored, now_ms
from pyiii.stores.wire import check_numbers, decode

if TYPE_CHECKING:
    from pyiii.modules.state.module import StateModule

DEFAULT_PAGE = 100
MAX_KEYS_PAGE = 10_000
MAX_SCOPES_PAGE = 1_000
MAX_VERSION = 2**63 - 1  # what every store can keep (SQLite INTEGER)
IMPORT_ERROR = "IMPORT_ERROR"


class ScopesInput(msgspec.Struct):
    prefix: str = ""
    limit: Annotated[int, Meta(ge=1, le=MAX_SCOPES_PAGE)] = DEFAULT_PAGE
    cursor: str | None = None


class KeysInput(msgspec.Struct):
    scope: str
    prefix: str = ""
    limit: Annotated[int, Meta(ge=1, le=MAX_KEYS_PAGE)] = DEFAULT_PAGE
    cursor: str | None = None
    with_values: bool = False


class ImportItem(msgspec.Struct):
    scope: str
    key: str
    value: Raw
    # None: the entry takes the next version, like any write.
    version: Annotated[int, Meta(ge=1, le=MAX_VERSION)] | None = None
    expires_at_ms: Annotated[int, Meta(ge=0)] | None = None


class ImportInput(msgspec.Struct):
    items: list[ImportItem]


_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t) for t in (ScopesInput, KeysInput, ImportInput)
}


class _Absent:
    """The mutation of one imported item: write it only where the key is absent.

    Records what it found; an adapter that retries (Redis) may run it more
    than once, and the last run is the one that committed.
    """

    __slots__ = ("found", "out")

    def __init__(self, out: bytes) -> None:
        self.out = out
        self.found: Entry | None = None

    def __call__(self, current: Entry | None) -> Any:
        self.found = current
        return KEEP if current is not None else self.out


def _page_cursor(last: str, more: bool) -> bytes:
    return msgspec.json.encode(encode_cursor(last)) if more else b"null"


class StateAdmin:
    """The handlers of ``state::scopes``, ``state::keys`` and ``state::import``."""

    def __init__(self, module: StateModule) -> None:
        self.module = module

    def functions(self) -> list[tuple[str, Any, str]]:
        return [
            ("state::scopes", self.scopes, "Scopes with their key counts, paged"),
            ("state::keys", self.keys, "Keys of a scope with version and expiry, paged"),
            ("state::import", self.import_, "Restore dumped entries into absent keys, keeping versions"),
        ]

    async def scopes(self, data: Raw, ctx: CallContext) -> Any:
        inp: ScopesInput = decode(_decoders[ScopesInput], data, ctx.function_id)
        after = decode_cursor(inp.cursor, ctx.function_id) if inp.cursor is not None else None
        adapter = self.module.adapter
        if adapter.remote:
            fid, code = ctx.function_id, errors.LIST_GROUPS_ERROR
            return await self._forward(fid, data, code, "Failed to list scopes")
        try:
            names = [n for n in await adapter.list_groups(inp.prefix) if after is None or n > after]
            page = names[: inp.limit]
            counts = [await adapter.count(name, "") for name in page]
        except AdapterError as exc:
            raise IIIError(errors.LIST_GROUPS_ERROR, f"Failed to list scopes: {exc}") from None
        enc = msgspec.json.encode
        items = b",".join(
            b'{"scope":' + enc(name) + b',"keys":%d}' % n for name, n in zip(page, counts, strict=True)
        )
        more = len(names) > len(page)
        cursor = _page_cursor(page[-1], more) if page else b"null"
        return Raw(b'{"scopes":[' + items + b'],"cursor":' + cursor + b"}")

    async def keys(self, data: Raw, ctx: CallContext) -> Any:
        inp: KeysInput = decode(_decoders[KeysInput], data, ctx.function_id)
        after = decode_cursor(inp.cursor, ctx.function_id) if inp.cursor is not None else None
        adapter = self.module.adapter
        if adapter.remote:
            return await self._forward(ctx.function_id, data, errors.LIST_ERROR, "Failed to list keys")
        try:
            rows, more = await adapter.list_page(inp.scope, inp.prefix, after, inp.limit)
        except AdapterError as exc:
            raise IIIError(errors.LIST_ERROR, f"Failed to list keys: {exc}") from None
        enc = msgspec.json.encode
        parts = []
        for key, entry in rows:
            item = b'{"key":' + enc(key) + b',"version":%d' % entry.version
            if entry.expires_at is not None:
                item += b',"expires_at_ms":%d' % entry.expires_at
            if inp.with_values:
                item += b',"value":' + entry.raw
            parts.append(item + b"}")
        cursor = _page_cursor(rows[-1][0], more) if rows else b"null"
        return Raw(b'{"items":[' + b",".join(parts) + b'],"cursor":' + cursor + b"}")

    async def import_(self, data: Raw, ctx: CallContext) -> Any:
        fid = ctx.function_id
        inp: ImportInput = decode(_decoders[ImportInput], data, fid)
        module = self.module
        if module.adapter.remote:
            return await self._forward(fid, data, IMPORT_ERROR, "Failed to import entries")
        skipped: list[dict[str, Any]] = []
        now = now_ms()
        by_scope: dict[str, list[tuple[int, ImportItem, _Absent]]] = defaultdict(list)
        for i, item in enumerate(inp.items):
            raw = bytes(item.value)
            where = f"items[{i}]: "
            try:
                check_numbers(raw, fid, f"{where}value")
                module._check_size(raw, where)
            except IIIError as exc:
                skipped.append(_skip(i, item, "invalid", code=exc.code, message=exc.message))
                continue
            if item.expires_at_ms is not None and item.expires_at_ms <= now:
                skipped.append(_skip(i, item, "expired", expires_at_ms=item.expires_at_ms))
                continue
            if item.version is not None:
                out: bytes = Restored(raw, item.version, item.expires_at_ms)
            else:
                out = raw if item.expires_at_ms is None else Put(raw, item.expires_at_ms)
            by_scope[item.scope].append((i, item, _Absent(out)))
        imported = 0
        # One atomic unit per scope: a Redis Cluster keeps each scope in its own slot.
        for scope, rows in by_scope.items():
            try:
                pairs = await module.adapter.mutate_many([(scope, item.key, fn) for _, item, fn in rows])
            except AdapterError as exc:
                raise IIIError(
                    IMPORT_ERROR, f"Failed to import entries (scope {scope!r}): {exc}; {imported} written"
                ) from None
            for i, item, fn in rows:
                if fn.found is not None:
                    skipped.append(_skip(i, item, "exists", current_version=fn.found.version))
                else:
                    imported += 1
            module._publish_all([(scope, item.key) for _, item, _ in rows], pairs)
        skipped.sort(key=lambda s: int(s["index"]))
        return {"imported": imported, "skipped": skipped}

    async def _forward(self, function_id: str, data: Raw, code: str, failure: str) -> Any:
        out = await self.module._forward(function_id, data, code, failure)
        if out is None:
            raise IIIError(code, f"{failure}: the remote engine returned no result")
        return Raw(out)


def _skip(index: int, item: ImportItem, reason: str, **details: Any) -> dict[str, Any]:
    return {"index": index, "scope": item.scope, "key": item.key, "reason": reason, **details}
