"""`make example`'s report explains what it prints (examples/run.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

RUN_PY = Path(__file__).resolve().parents[1] / "examples" / "run.py"


def load_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_run", RUN_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_placeholder_users_entry_is_explained() -> None:
    run = load_run()
    created = {"id": "4b1f", "name": "Alice", "email": "alice@example.com"}
    placeholder = {"lastLogin": "2026-01-01T00:00:00.000Z", "loginCount": 2}
    lines = run.describe(
        "\n".join(
            [
                json.dumps({"step": "state-writer.ts", "ok": True}),
                json.dumps({"users": [created, placeholder]}),
            ]
        )
    )
    assert lines[0] == "state-writer.ts: ok"
    heading = "state scope 'users' now holds:"
    assert lines[1:4] == [heading, f"  {json.dumps(created)}", f"  {json.dumps(placeholder)}"]
    note = " ".join(lines[4:])
    assert "'some-user-id'" in note and "creates a key that is missing" in note
    assert "loginCount" in note and "number of TypeScript flows" in note
    # an entry with an id gets no note
    assert run.describe(json.dumps({"users": [created]})) == [heading, f"  {json.dumps(created)}"]
