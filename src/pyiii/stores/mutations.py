"""What a ``state::*`` write does to a key, and how its result reads.

The mutations an adapter runs inside its atomic step (set, delete, update,
each behind an optional ``expect_version`` / ``expect_exists`` precondition),
the JSON results rendered from the old and new entries, and the change
events a batch of writes fires. None of it calls an adapter, the engine or
the network: it is the same whichever adapter runs it and whoever called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.errors import IIIError
from pyiii.stores import ops
from pyiii.stores.base import (
    KEEP,
    Entry,
    Mutation,
    PreconditionFailed,
    Put,
    net_changes,
    now_ms,
)
from pyiii.stores.events import CREATED, DELETED, UPDATED
from pyiii.stores.ops import Op


def pair(old: Entry | None, new_raw: bytes, extra: bytes = b"") -> Raw:
    return Raw(
        b"".join(
            (
                b'{"old_value":',
                old.raw if old is not None else b"null",
                b',"new_value":',
                new_raw,
                extra,
                b"}",
            )
        )
    )


def meta_fields(entry: Entry | None) -> bytes:
    """``,"version":N[,"expires_at_ms":T]`` for a written entry."""
    if entry is None:
        return b""
    if entry.expires_at is None:
        return b',"version":%d' % entry.version
    return b',"version":%d,"expires_at_ms":%d' % (entry.version, entry.expires_at)


def meta(entry: Entry | None) -> bytes:
    """The ``with_meta`` form of a read: exists, value, version, expires_at_ms?"""
    if entry is None:
        return b'{"exists":false,"value":null,"version":null}'
    return b'{"exists":true,"value":' + entry.raw + meta_fields(entry) + b"}"


# --- preconditions ------------------------------------------------------------


class _Precondition:
    """``expect_version`` / ``expect_exists``, checked against the current entry."""

    __slots__ = ("expect_exists", "expect_version", "key", "scope")

    def __init__(self, scope: str, key: str, expect_version: int | None, expect_exists: bool | None) -> None:
        self.scope, self.key = scope, key
        self.expect_version, self.expect_exists = expect_version, expect_exists

    def check(self, current: Entry | None) -> None:
        """Raise ``PreconditionFailed`` unless ``current`` satisfies every expectation."""
        found = "the key does not exist" if current is None else f"found version {current.version}"
        if self.expect_exists is True and current is None:
            self._fail(f"expected the key to exist, but {found}", current)
        if self.expect_exists is False and current is not None:
            self._fail(f"expected the key not to exist, but {found}", current)
        if self.expect_version is not None and (current is None or current.version != self.expect_version):
            self._fail(f"expected version {self.expect_version}, but {found}", current)

    def _fail(self, what: str, current: Entry | None) -> None:
        raise PreconditionFailed(
            f"state {self.scope!r}/{self.key!r}: {what}; nothing was changed",
            None if current is None else current.version,
        )


def precondition(scope: str, key: str, inp: Any) -> _Precondition | None:
    if inp.expect_version is None and inp.expect_exists is None:
        return None
    return _Precondition(scope, key, inp.expect_version, inp.expect_exists)


def mismatch(exc: PreconditionFailed) -> IIIError:
    details: dict[str, Any] = {"current_version": exc.current_version}
    message = exc.message
    if exc.index is not None:
        details = {"index": exc.index, **details}
        message = f"ops[{exc.index}]: {message}"
    return IIIError(errors.VERSION_MISMATCH, message, details=details)


_decode = msgspec.json.Decoder().decode  # the same as msgspec.json.decode, without its per-call setup
_encode = msgspec.json.Encoder().encode


# --- mutations ------------------------------------------------------------------


# The mutations are msgspec Structs rather than plain classes: one is built
# per write, and a Struct is built in C (a Python __init__ cost ~2.5x more).
# gc=False: they hold bytes, ints, ops and a precondition, never a cycle.


class SetFn(msgspec.Struct, gc=False):
    """The mutation of a set: ``raw`` (with ``ttl_ms``), behind an optional precondition.

    Its fields are public so an adapter that can run a set natively (one
    Redis script) does so; every other adapter just calls it.
    """

    raw: bytes
    pre: _Precondition | None
    ttl_ms: int | None

    def __call__(self, current: Entry | None) -> bytes:
        if self.pre is not None:
            self.pre.check(current)
        # A set replaces the entry: without ttl_ms it never expires.
        return self.raw if self.ttl_ms is None else Put(self.raw, now_ms() + self.ttl_ms)


class DeleteFn(msgspec.Struct, gc=False):
    """The mutation of a delete, behind an optional precondition (see ``SetFn``)."""

    pre: _Precondition | None

    def __call__(self, current: Entry | None) -> bytes | None | Any:
        if self.pre is not None:
            self.pre.check(current)
        return None if current is not None else KEEP


def set_fn(raw: bytes, pre: _Precondition | None, ttl_ms: int | None) -> Mutation:
    return SetFn(raw, pre, ttl_ms)


def delete_fn(pre: _Precondition | None) -> Mutation:
    return DeleteFn(pre)


class UpdateRun(msgspec.Struct, gc=False):
    """The mutation of one update (the parsed ops, precondition, ttl_ms, size limit).

    Keeps what its last run produced: an optimistic adapter may run it more
    than once, and the fields describe the run whose result was stored.
    """

    ops: Sequence[Op]
    pre: _Precondition | None
    ttl_ms: int | None
    max_bytes: int | None = None
    new_raw: bytes = b""
    op_errors: list[dict[str, Any]] = []  # msgspec copies an empty list default per instance

    def __call__(self, current: Entry | None) -> bytes:
        if self.pre is not None:
            self.pre.check(current)
        value = _decode(current.raw) if current is not None else None
        new_value, self.op_errors = ops.apply_ops(value, current is not None, self.ops)
        self.new_raw = _encode(new_value)
        if self.max_bytes is not None and len(self.new_raw) > self.max_bytes:
            # Unlike the reference, the limit holds for updates too: an append
            # loop must not grow a value without bound. Nothing is written.
            raise IIIError(
                errors.VALUE_TOO_LARGE,
                f"the updated value would be {len(self.new_raw)} bytes, over the configured "
                f"max_value_bytes limit of {self.max_bytes}",
            )
        # Without ttl_ms an update keeps the key's expiry (if any).
        if self.ttl_ms is not None:
            return Put(self.new_raw, now_ms() + self.ttl_ms)
        if current is None or current.expires_at is None:
            return self.new_raw
        return Put(self.new_raw, current.expires_at)

    def extra(self) -> bytes:
        return b',"errors":' + msgspec.json.encode(self.op_errors) if self.op_errors else b""

    def result(self, old: Entry | None, new: Entry | None) -> bytes:
        """The transaction item result: old/new value, errors?, version."""
        return bytes(pair(old, self.new_raw, self.extra() + meta_fields(new)))


class SetResult:
    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def result(self, old: Entry | None, new: Entry | None) -> bytes:
        return bytes(pair(old, self.raw, meta_fields(new)))


class _DeleteResult:
    __slots__ = ()

    def result(self, old: Entry | None, new: Entry | None) -> bytes:
        return bytes(pair(old, b"null"))


delete_result = _DeleteResult()
Render = UpdateRun | SetResult | _DeleteResult


def indexed(index: int, fn: Mutation) -> Mutation:
    """``fn``, with the item index attached to a failed precondition."""

    def run(current: Entry | None) -> Any:
        try:
            return fn(current)
        except PreconditionFailed as exc:
            exc.index = index
            raise

    return run


def events(
    keys: list[tuple[str, str]], pairs: list[tuple[Entry | None, Entry | None]]
) -> list[tuple[bytes, str, str, Entry | None, bytes | None]]:
    """One event per key that changed (see ``net_changes``)."""
    changed: list[tuple[bytes, str, str, Entry | None, bytes | None]] = []
    for scope, key, old, new in net_changes(keys, pairs):
        kind = CREATED if old is None else DELETED if new is None else UPDATED
        changed.append((kind, scope, key, old, None if new is None else new.raw))
    return changed
