"""Fixtures shared by the module tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from compat.compat_kit import Spawner


@pytest.fixture
async def spawn() -> AsyncIterator[Spawner]:
    """Starts official-SDK worker programs; whatever is left is killed at teardown."""
    spawner = Spawner()
    yield spawner
    await spawner.close()
