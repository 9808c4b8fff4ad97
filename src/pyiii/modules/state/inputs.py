"""The wire shapes of the ``state::*`` functions, and their checks.

What a call may send (and what a remote engine sends back, as far as the
bridge relay needs it), decoded into msgspec Structs, plus the checks on the
raw JSON that the Structs cannot express: numbers beyond the double range and
update ops. Every failure here is a ``DESERIALIZATION_ERROR`` naming the
function, before anything is read or written; keeping them apart from the
mutations and the module leaves one place for the input contract.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

from pyiii import errors
from pyiii.errors import IIIError
from pyiii.modules.state import ops

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


class AnyObject(msgspec.Struct):
    pass


class _PairOutput(msgspec.Struct):
    """A remote set/update result, as far as local triggers need it."""

    old_value: Raw = Raw(b"null")
    new_value: Raw = Raw(b"null")


class _ResultsOutput(msgspec.Struct):
    """A remote set_many/transaction result, as far as local triggers need it."""

    results: list[_PairOutput]


pair_output = msgspec.json.Decoder(_PairOutput)
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
    try:
        return _decoders[cls].decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise bad_input(function_id, _serde_style(str(exc))) from None


def bad_input(function_id: str, detail: str) -> IIIError:
    return IIIError(errors.DESERIALIZATION_ERROR, f"Failed to deserialize input for {function_id}: {detail}")


def _serde_style(text: str) -> str:
    # msgspec says "Object missing required field `scope`"; keep it readable.
    return text.replace("Object missing required field", "missing field")


# An exponent of three digits or more: the only way a JSON number can be
# too large for a double (msgspec keeps big integers exact).
_BIG_EXPONENT = re.compile(rb"[eE][+-]?[0-9]{3}")


def check_numbers(raw: bytes, function_id: str, where: str = "value") -> None:
    """Refuse values with numbers no reader could hold (1e400 reads as Infinity)."""
    if _BIG_EXPONENT.search(raw) is None:
        return
    try:
        msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:
        raise bad_input(
            function_id, f"{where}: {exc} (a number beyond the double range; send it as a string)"
        ) from None


def parse_ops(raw_ops: Raw, function_id: str, where: str = "ops") -> list[ops.Op]:
    try:
        return ops.parse_ops(msgspec.json.decode(raw_ops))
    except ops.OpsDecodeError as exc:
        raise bad_input(function_id, f"{where}: {exc.message}") from None
    except msgspec.ValidationError as exc:  # e.g. 1e400: no double holds it
        raise bad_input(function_id, f"{where}: {exc}") from None
