"""``wire.parse_ops`` keeps parsed ops by their text: same results, same errors, no shared state."""

from __future__ import annotations

import msgspec
import pytest
from msgspec import Raw

from pyiii.errors import IIIError
from pyiii.stores import ops, wire


def test_a_repeated_ops_text_parses_to_equal_ops_and_applies_the_same() -> None:
    text = Raw(b'[{"type":"merge","value":{"a":{"b":[1]}}},{"type":"append","path":["a","b"],"value":2}]')
    first = wire.parse_ops(text, "state::update")
    second = wire.parse_ops(text, "state::update")
    assert first == second and first is not second
    second.append(first[0])  # a caller's list is its own
    assert len(wire.parse_ops(text, "state::update")) == 2
    for _ in range(2):
        value, errors = ops.apply_ops({"x": 1}, True, wire.parse_ops(text, "state::update"))
        assert errors == [] and value == {"x": 1, "a": {"b": [1, 2]}}
    # The ops' own values were never changed by applying them.
    assert msgspec.json.encode(wire.parse_ops(text, "state::update")[0].value) == b'{"a":{"b":[1]}}'


def test_a_bad_ops_text_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(IIIError, match="missing field `by`"):
            wire.parse_ops(Raw(b'[{"type":"increment","path":"n"}]'), "state::update")


def test_the_cache_stays_bounded() -> None:
    for n in range(wire._PARSED_MAX_ENTRIES * 2):
        wire.parse_ops(Raw(b'[{"type":"increment","path":"n","by":%d}]' % n), "state::update")
    assert len(wire._PARSED) <= wire._PARSED_MAX_ENTRIES
    long_text = b'[{"type":"set","path":"s","value":"' + b"x" * wire._PARSED_MAX_BYTES + b'"}]'
    wire.parse_ops(Raw(long_text), "state::update")
    assert long_text not in wire._PARSED
