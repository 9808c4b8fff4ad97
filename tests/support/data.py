"""Test data kept in the repository (``tests/data``), so a fresh clone tests on its own."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
# One case per line: initial value, raw ops, and the expected new value / per-op errors
# (or a whole-call failure) of ``state::update``.
UPDATE_OPS_VECTORS = DATA_DIR / "update-ops-vectors.json"
