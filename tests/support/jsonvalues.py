"""Comparing JSON values the way State promises to keep them."""

from __future__ import annotations


def same_json(a: object, b: object) -> bool:
    """JSON equality that also requires identical types (3 != 3.0 != True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b
