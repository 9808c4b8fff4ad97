"""Random ids and keys without a syscall each: slices of a pooled ``os.urandom``.

The HTTP module opens two channels and an invocation per request; ``uuid.uuid4()``
and ``secrets.token_urlsafe()`` each read the kernel's random source, which was a
tenth of the engine's time per request. The bytes come from the same source,
in one read per 256 ids, and are kept as text (hex for ids, urlsafe base64 for
keys), so an id or a key is a slice of a string.
"""

from __future__ import annotations

import base64
import os

_POOLED = 256  # ids or keys per refill of their text pool
_hex = ""  # 32 hex digits (16 random bytes) per id
_hex_at = 0
_b64 = ""  # 43 base64 characters (258 random bits) per key
_b64_at = 0
_KEY_CHARS = 43


def random_uuid() -> str:
    """A random id shaped like a version-4 UUID (``xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx``)."""
    global _hex, _hex_at
    at = _hex_at
    if at + 32 > len(_hex):
        _hex, at = os.urandom(16 * _POOLED).hex(), 0
    _hex_at = at + 32
    h = _hex[at : at + 32]
    # The variant digit is 8, 9, a or b: two of its bits are random, as in uuid4.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def random_key() -> str:
    """A 43-character urlsafe key of random characters (as ``secrets.token_urlsafe(32)``: 6 bits each)."""
    global _b64, _b64_at
    at = _b64_at
    if at + _KEY_CHARS > len(_b64):
        # 33 bytes encode to 44 characters with no padding; 43 of each 44 are used.
        _b64, at = base64.urlsafe_b64encode(os.urandom(33 * _POOLED)).decode(), 0
    _b64_at = at + _KEY_CHARS + 1
    return _b64[at : at + _KEY_CHARS]
