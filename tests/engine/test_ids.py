"""pyiii.ids: pooled random ids and keys keep the shape and uniqueness of uuid4 / token_urlsafe."""

from __future__ import annotations

import re
import uuid

from pyiii import ids

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_uuids_are_version_4_shaped_and_distinct_across_pool_refills() -> None:
    made = [ids.random_uuid() for _ in range(5000)]  # the pool holds 1280 of them: several refills
    assert all(UUID4.fullmatch(u) for u in made), [u for u in made if not UUID4.fullmatch(u)][:3]
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(u).version == 4 for u in made[:100])


def test_keys_are_43_urlsafe_characters_and_distinct() -> None:
    keys = [ids.random_key() for _ in range(2000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", k) for k in keys)
    assert len(set(keys)) == len(keys)


def test_random_bytes_larger_than_the_pool() -> None:
    big = ids.random_bytes(100_000)
    assert len(big) == 100_000 and len(set(big)) > 200
