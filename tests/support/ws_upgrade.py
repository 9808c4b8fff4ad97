"""A WebSocket upgrade request written by hand, for tests that need the raw HTTP answer."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping


def upgrade_request(host: str, path: str = "/", headers: Mapping[str, str] | None = None) -> bytes:
    """The request line and headers of an upgrade (a fresh key, version 13), ready to write."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
