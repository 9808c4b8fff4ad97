"""State functions through the engine: configs, the value, the calls.

Rows (run.py, section ``state``): state::get / state::set / state::update
(increment) / state::transaction (one set and one update of two keys) via the
pyiii SDK, in_memory and file_based, 1 and 64 in flight, each against the
transport ceiling at the same concurrency; the file_based writes against the
same in_memory ones, and at 1 in flight against their bound (in_memory p50 +
one fsync p50 of the same disk, see ``fsync_call``).

    python benchmarks/state.py        # = run.py --only state
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Call, section_main

STATE_CONFIG = "workers:\n  - name: iii-state\n    config:\n      adapter: {{name: kv, config: {{{}}}}}\n"
CONFIGS = {
    "in_memory": STATE_CONFIG.format("store_method: in_memory"),
    "file_based": STATE_CONFIG.format("store_method: file_based, file_path: ./data/state"),
}
# ~80 bytes of JSON; the redis-py rows store the same encoding.
VALUE = {"id": "u1", "name": "Alice", "email": "alice@example.com", "loginCount": 0}
KEYS = 100
SCOPE = "bench"
INCREMENT = [{"type": "increment", "path": "loginCount", "by": 1}]


async def seed(worker: Any, scope: str = SCOPE, keys: int = KEYS) -> None:
    for i in range(keys):
        await worker.trigger("state::set", {"scope": scope, "key": f"k{i}", "value": VALUE})


def state_calls(worker: Any, scope: str = SCOPE, keys: int = KEYS) -> dict[str, Call]:
    """state::get / set / update calls over ``keys`` keys, the call counter picking the key."""
    return {
        "state::get": lambda n: worker.trigger("state::get", {"scope": scope, "key": f"k{n % keys}"}),
        "state::set": lambda n: worker.trigger(
            "state::set", {"scope": scope, "key": f"k{n % keys}", "value": VALUE}
        ),
        "state::update": lambda n: worker.trigger(
            "state::update", {"scope": scope, "key": f"k{n % keys}", "ops": INCREMENT}
        ),
        "state::transaction": lambda n: worker.trigger(
            "state::transaction",
            {
                "ops": [
                    {"op": "set", "scope": scope, "key": f"k{n % keys}", "value": VALUE},
                    {"op": "update", "scope": scope, "key": f"k{(n + 1) % keys}", "ops": INCREMENT},
                ]
            },
        ),
    }


def fsync_call(directory: Path) -> Call:
    """One small append + ``fsync`` of a file in ``directory``: the disk's share of a commit.

    A durable ``file_based`` write at 1 in flight pays one of these (SQLite's
    WAL commit appends the frames and fsyncs the WAL); measured in the same
    run, on the same disk, it is the bound printed beside that row.
    """
    path = directory / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"x" * 120

    async def call(_n: int) -> object:
        os.write(fd, record)
        os.fsync(fd)
        return None

    return call


def main() -> None:
    section_main("state", __doc__)


if __name__ == "__main__":
    main()
