"""The wire shapes of the ``state::*`` functions, and their checks.

What a call may send (and what a remote engine sends back, as far as the
bridge relay needs it), decoded into msgspec Structs, plus the checks on the
raw JSON that the Structs cannot express: numbers beyond the double range and
update ops. Every failure here is a ``DESERIALIZATION_ERROR`` naming the
function, before anything is read or written; keeping them apart from the
mutations and the module leaves one place for the input contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

from pyiii.stores.wire import AnyObject, PairOutput, decode

TtlMs = Annotated[int, Meta(gt=0)]
Limit = Annotated[int, Meta(ge=1)]


class GetInput(msgspec.Struct):
    scope: str
    key: str
    with_meta: bool = False


class SetInput(msgspec.Struct):
    scope: str
    key: str
    value: Raw | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    expect_version: int | None = None
    expect_exists: bool | None = None
    ttl_ms: TtlMs | None = None
    with_meta: bool = False


class UpdateInput(msgspec.Struct):
    scope: str
    key: str
    ops: Raw
    expect_version: int | None = None
    expect_exists: bool | None = None
    ttl_ms: TtlMs | None = None
    with_meta: bool = False


class DeleteInput(msgspec.Struct):
    scope: str
    key: str
    expect_version: int | None = None
    expect_exists: bool | None = None


class ListInput(msgspec.Struct):
    scope: str
    prefix: str | None = None
    limit: Limit | None = None
    cursor: str | None = None
    with_keys: bool | None = None


class CountInput(msgspec.Struct):
    scope: str
    prefix: str | None = None


class GetManyInput(msgspec.Struct):
    scope: str
    keys: list[str]
    with_meta: bool = False


class _SetManyItem(msgspec.Struct):
    key: str
    value: Raw
    ttl_ms: TtlMs | None = None


class SetManyInput(msgspec.Struct):
    scope: str
    items: list[_SetManyItem]
    ttl_ms: TtlMs | None = None
    with_meta: bool = False


class _TxOp(msgspec.Struct):
    op: Literal["set", "update", "delete"]
    scope: str
    key: str
    value: Raw | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    ops: Raw | UnsetType = UNSET
    expect_version: int | None = None
    expect_exists: bool | None = None
    ttl_ms: TtlMs | None = None


class TransactionInput(msgspec.Struct):
    ops: list[_TxOp]


class _ResultsOutput(msgspec.Struct):
    """A remote set_many/transaction result, as far as local triggers need it."""

    results: list[PairOutput]


results_output = msgspec.json.Decoder(_ResultsOutput)


_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t)
    for t in (
        GetInput,
        SetInput,
        UpdateInput,
        DeleteInput,
        ListInput,
        CountInput,
        GetManyInput,
        SetManyInput,
        TransactionInput,
        AnyObject,
    )
}


def decode_input(cls: type, data: Raw, function_id: str) -> Any:
    """``data`` as a ``cls``; a ``DESERIALIZATION_ERROR`` naming the field if it does not fit."""
    try:
        return _decoders[cls].decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return decode(_decoders[cls], data, function_id)  # raises, with the message in one place
