"""The opaque cursor of a paged ``state::list``.

A cursor is the last key returned. It has its own module because two sides
share the encoding: the State module, and the bridge adapter, which builds
cursors for the remote engine.
"""

from __future__ import annotations

import base64
import binascii

from pyiii.stores.wire import bad_input

_CURSOR_MARK = "k"


def encode_cursor(key: str) -> str:
    """An opaque cursor: the last key returned (``k`` + base64url, no padding)."""
    text = base64.urlsafe_b64encode(key.encode("utf-8", "surrogatepass")).rstrip(b"=").decode("ascii")
    return _CURSOR_MARK + text


def decode_cursor(cursor: str, function_id: str) -> str:
    try:
        if not cursor.startswith(_CURSOR_MARK):
            raise ValueError(cursor)
        body = cursor[len(_CURSOR_MARK) :]
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        key = data.decode("utf-8", "surrogatepass")
        if encode_cursor(key) != cursor:
            raise ValueError(cursor)
        return key
    except (ValueError, binascii.Error):
        raise bad_input(function_id, "cursor: not a cursor returned by state::list") from None
