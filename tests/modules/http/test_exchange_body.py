"""Exchange.start_body against a stand-in for granian's protocol object: when it is asked, and for what."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyiii.httpserver import BodyTooLarge, Exchange


class _Headers:
    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def items(self) -> list[tuple[str, str]]:
        return list(self._headers.items())

    def get(self, name: str, default: Any = None) -> Any:
        return self._headers.get(name, default)


class _Scope:
    def __init__(self, headers: dict[str, str]) -> None:
        self.method, self.path, self.query_string, self.client = "POST", "/x", "", "127.0.0.1:1"
        self.headers = _Headers(headers)


class _Proto:
    """Counts how often the body is asked for, whole (``await proto()``) or in chunks."""

    def __init__(self, body: bytes = b"", chunks: tuple[bytes, ...] = ()) -> None:
        self.body, self.chunks = body, chunks
        self.whole = self.iterated = 0

    def __call__(self) -> Any:
        # granian starts the read when called and hands back something to await.
        self.whole += 1
        return self._whole()

    async def _whole(self) -> bytes:
        return self.body

    def __aiter__(self) -> AsyncIterator[bytes]:
        self.iterated += 1
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def _exchange(headers: dict[str, str], proto: _Proto) -> Exchange:
    return Exchange(_Scope(headers), proto)


async def test_a_declared_body_is_asked_for_at_once_and_awaited_later() -> None:
    proto = _Proto(b"hello")
    reading = _exchange({"content-length": "5"}, proto).start_body(10)
    assert proto.whole == 1  # the read started before the await
    assert await reading == b"hello"


async def test_a_declared_length_over_the_limit_fails_before_reading() -> None:
    proto = _Proto(b"x" * 20)
    with pytest.raises(BodyTooLarge) as exc:
        _exchange({"content-length": "20"}, proto).start_body(10)
    assert exc.value.declared == 20 and proto.whole == 0


async def test_a_chunked_body_is_read_and_bounded() -> None:
    proto = _Proto(chunks=(b"ab", b"cd"))
    assert await _exchange({"transfer-encoding": "chunked"}, proto).start_body(10) == b"abcd"
    assert proto.iterated == 1
    over = _Proto(chunks=(b"abcdef", b"ghijkl"))
    with pytest.raises(BodyTooLarge):
        await _exchange({"transfer-encoding": "chunked"}, over).start_body(10)


async def test_no_length_and_not_chunked_is_no_body_and_granian_is_not_asked() -> None:
    proto = _Proto(b"never")
    assert await _exchange({}, proto).start_body(10) == b""
    assert await _exchange({"content-length": "0"}, proto).start_body(10) == b""
    assert (proto.whole, proto.iterated) == (0, 0)
