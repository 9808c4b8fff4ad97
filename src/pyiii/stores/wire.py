"""Decoding the inputs of the functions over a store, and its errors.

Every failure is a ``DESERIALIZATION_ERROR`` whose message names the function
and the field (serde's wording, as the reference engine words it), raised
before anything is read or written.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.errors import IIIError
from pyiii.stores import ops

__all__ = ["AnyObject", "PairOutput", "bad_input", "check_numbers", "decode", "pair_output", "parse_ops"]


class AnyObject(msgspec.Struct):
    """Any JSON object: the input of functions that take no fields."""


class PairOutput(msgspec.Struct):
    """A write's result as far as the engine reads it: the value before and after."""

    old_value: Raw = Raw(b"null")
    new_value: Raw = Raw(b"null")


pair_output = msgspec.json.Decoder(PairOutput)


def decode(decoder: msgspec.json.Decoder[Any], data: Raw, function_id: str) -> Any:
    """``data`` decoded by ``decoder``; a ``DESERIALIZATION_ERROR`` naming the field if it does not fit."""
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise bad_input(function_id, _serde_style(str(exc))) from None


def bad_input(function_id: str, detail: str) -> IIIError:
    return IIIError(errors.DESERIALIZATION_ERROR, f"Failed to deserialize input for {function_id}: {detail}")


def _serde_style(text: str) -> str:
    # msgspec says "Object missing required field `scope`"; keep it readable.
    return text.replace("Object missing required field", "missing field")


# An exponent of three digits or more (``[eE][+-]?[0-9]{3}``): the only way a
# JSON number can be too large for a double (msgspec keeps big integers
# exact). Looked for without a regex, which tries a match at every byte and
# cost more than the rest of a small set (~7.9k instructions for an 80-byte
# value, against ~3.1k): every digit becomes 0 and E becomes e, signs are
# dropped, and one substring is searched for. Whatever the pattern matches is
# found; the rare extra hit (``e+-123``) only costs the decode below, which
# decides, as an exponent-looking string always did.
_EXPONENT_FOLD = bytes(
    ord("0") if c in b"0123456789" else ord("e") if c == ord("E") else c for c in range(256)
)


def check_numbers(raw: bytes, function_id: str, where: str = "value") -> None:
    """Refuse values with numbers no reader could hold (1e400 reads as Infinity)."""
    # find(), not ``in``: bytes.__contains__ first tries its argument as an
    # int and formats a TypeError for it, which costs more than the search.
    if raw.translate(_EXPONENT_FOLD, b"+-").find(b"e000") == -1:
        return
    try:
        msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:
        raise bad_input(
            function_id, f"{where}: {exc} (a number beyond the double range; send it as a string)"
        ) from None


# Parsed ``ops`` arrays by their JSON text. Callers tend to send the same few
# texts over and over (an increment of a counter), and parsing one costs more
# than the rest of the update. Only short texts that parsed are kept, so the
# cache stays small and every error is still raised by a fresh parse. Sharing
# the ops is safe: ``apply_ops`` never mutates them.
_PARSED: dict[bytes, tuple[ops.Op, ...]] = {}
_PARSED_MAX_ENTRIES = 256
_PARSED_MAX_BYTES = 512


def parse_ops(raw_ops: Raw, function_id: str, where: str = "ops") -> list[ops.Op]:
    text = bytes(raw_ops)
    cached = _PARSED.get(text)
    if cached is not None:
        return list(cached)
    try:
        parsed = ops.parse_ops(msgspec.json.decode(text))
    except ops.OpsDecodeError as exc:
        raise bad_input(function_id, f"{where}: {exc.message}") from None
    except msgspec.ValidationError as exc:  # e.g. 1e400: no double holds it
        raise bad_input(function_id, f"{where}: {exc}") from None
    if len(text) <= _PARSED_MAX_BYTES:
        if len(_PARSED) >= _PARSED_MAX_ENTRIES:
            _PARSED.clear()
        _PARSED[text] = tuple(parsed)
    return parsed
