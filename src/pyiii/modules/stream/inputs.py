"""The wire shapes of the ``stream::*`` functions and how a stream maps onto a store.

A store holds scope -> key -> entry. A stream item ``stream_name / group_id /
item_id`` is key ``item_id`` of scope ``<len(stream_name)>:<stream_name>:<group_id>``:
the length makes the split unambiguous whatever the names contain, and the
groups of one stream are the scopes starting with ``<len>:<stream_name>:``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Raw

from pyiii.stores.wire import AnyObject, decode


def scope_of(stream_name: str, group_id: str) -> str:
    return f"{len(stream_name)}:{stream_name}:{group_id}"


def stream_prefix(stream_name: str) -> str:
    """What every scope of ``stream_name`` starts with."""
    return f"{len(stream_name)}:{stream_name}:"


def split_scope(scope: str) -> tuple[str, str] | None:
    """(stream_name, group_id) of a scope, or None for a scope that is not a stream's."""
    head, sep, rest = scope.partition(":")
    if not sep or not head.isdigit():
        return None
    n = int(head)
    if len(rest) < n + 1 or rest[n] != ":":
        return None
    return rest[:n], rest[n + 1 :]


class ItemInput(msgspec.Struct):
    stream_name: str
    group_id: str
    item_id: str


class SetInput(msgspec.Struct):
    stream_name: str
    group_id: str
    item_id: str
    data: Raw


class UpdateInput(msgspec.Struct):
    stream_name: str
    group_id: str
    item_id: str
    ops: Raw


class GroupInput(msgspec.Struct):
    stream_name: str
    group_id: str


class StreamInput(msgspec.Struct):
    stream_name: str


class SendInput(msgspec.Struct, rename={"event_type": "type"}):
    stream_name: str
    group_id: str
    event_type: str
    data: Raw = Raw(b"null")
    id: str | None = None


class OldOutput(msgspec.Struct):
    """What a function serving ``stream::delete(<name>)`` must return."""

    old_value: Raw = Raw(b"null")


_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t)
    for t in (ItemInput, SetInput, UpdateInput, GroupInput, StreamInput, SendInput, AnyObject)
}
old_output = msgspec.json.Decoder(OldOutput)


def decode_input(cls: type, data: Raw, function_id: str) -> Any:
    return decode(_decoders[cls], data, function_id)
