"""pyiii.ids: pooled random ids and keys keep the shape and uniqueness of uuid4 / token_urlsafe."""

from __future__ import annotations

import re
import uuid

from pyiii import ids

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_uuids_are_version_4_shaped_and_distinct_across_pool_refills() -> None:
    made = [ids.random_uuid() for _ in range(5000)]  # the pool holds 256 of them: several refills
    assert all(UUID4.fullmatch(u) for u in made), [u for u in made if not UUID4.fullmatch(u)][:3]
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(u).version == 4 for u in made[:100])


def test_keys_are_43_urlsafe_characters_and_distinct() -> None:
    keys = [ids.random_key() for _ in range(2000)]  # several refills of their pool too
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", k) for k in keys)
    assert len(set(keys)) == len(keys)


def test_key_characters_are_spread_over_the_alphabet() -> None:
    text = "".join(ids.random_key() for _ in range(2000))  # 86,000 characters, 64 kinds
    counts = [text.count(c) for c in set(text)]
    assert len(counts) == 64
    assert min(counts) > 0.8 * len(text) / 64 and max(counts) < 1.2 * len(text) / 64
