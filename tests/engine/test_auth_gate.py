"""The request-head parser of the authenticating listener (auth_gate.py)."""

from __future__ import annotations

from pyiii.engine.auth_gate import parse_head


def test_parse_head() -> None:
    head = b"GET /?token=a%20b&x=1 HTTP/1.1\r\nHost: h\r\nX-Token: t\r\nX-Dup: 1\r\nx-dup: 2"
    assert parse_head(head) == ("/", "token=a%20b&x=1", {"host": "h", "x-token": "t", "x-dup": "1, 2"})
    assert parse_head(b"GET /ws/channels/a%2Fb HTTP/1.1\r\n")[0] == "/ws/channels/a/b"  # type: ignore[index]


def test_parse_head_rejects_garbage() -> None:
    assert parse_head(b"hello") is None
    assert parse_head(b"GET / SMTP\r\n") is None
    assert parse_head(b"GET / HTTP/1.1\r\nno colon here") is None
