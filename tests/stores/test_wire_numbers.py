"""``wire.check_numbers``: its regex-free filter finds every number beyond the double range."""

from __future__ import annotations

import random
import re

import pytest

from pyiii.errors import IIIError
from pyiii.stores import wire

# What the filter stands for: any match of this may be a number too large for a double.
EXPONENT = re.compile(rb"[eE][+-]?[0-9]{3}")


def _filter_hits(raw: bytes) -> bool:
    return raw.translate(wire._EXPONENT_FOLD, b"+-").find(b"e000") != -1


def test_the_filter_finds_every_three_digit_exponent() -> None:
    rng = random.Random(17)
    alphabet = b'0123456789eE+-.x"{}[]:, \xc3\xa9'
    for _ in range(50_000):
        text = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        if EXPONENT.search(text) is not None:
            assert _filter_hits(text), text


@pytest.mark.parametrize(
    "raw",
    [b"1e400", b"-1E+400", b'{"a":[1,2,{"b":-2.5e999}]}', b"[10e0308]", b'{"x":"e123","n":1E400}'],
)
def test_numbers_beyond_the_double_range_are_refused(raw: bytes) -> None:
    with pytest.raises(IIIError, match="beyond the double range"):
        wire.check_numbers(raw, "state::set")


@pytest.mark.parametrize(
    "raw",
    [
        b"1e308",
        b"-2.5E-300",
        b"0.1e0309",
        b"1e-999",
        b'{"s":"e+400 in a string","t":"E-999"}',
        b'{"n":12345678901234567890}',
        b"{}",
    ],
)
def test_everything_else_passes(raw: bytes) -> None:
    wire.check_numbers(raw, "state::set")
