"""README "Background work": its programs are examples/background/*.py, and they run.

The section shows, in this order, durable_queue.py (queue) and pubsub_cron.py (pub/sub and
cron); each runs against examples/background/iii-config.yaml (its file_based queue store in
a temporary working directory).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from support.engines import running_server, url_of

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "background"
PROGRAMS = {
    "durable_queue.py": [
        "charged: ['B-1', 'B-2', 'B-3'] attempts: {'B-1': 1, 'B-2': 2, 'B-3': 1, 'B-4': 3}",
        "reports: ['2026-05-01'] dead letters: [('B-4', 'invocation_failed: RuntimeError: card declined')]",
    ],
    "pubsub_cron.py": ["emailed: ['A-1', 'A-2', 'A-3'] counted: ['A-1', 'A-2', 'A-3']", "cron ran at: "],
}


def section_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Background work\n") :]
    section = section[: section.index("\n## ", 1)]
    return [part.split("```", 1)[0] for part in section.split("```python\n")[1:]]


def test_readme_shows_the_example_programs() -> None:
    shown = section_blocks()
    assert len(shown) == len(PROGRAMS)
    for block, name in zip(shown, PROGRAMS, strict=True):
        program = (EXAMPLE / name).read_text()
        assert program[program.index("import asyncio\n") :].rstrip() == block.rstrip(), name


@pytest.mark.parametrize("name", PROGRAMS)
async def test_the_example_runs_against_its_config(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the queue's file_path is relative
    async with running_server((EXAMPLE / "iii-config.yaml").read_text()) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE / name),
            env={**os.environ, "III_URL": url_of(server)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    for line in PROGRAMS[name]:
        assert line in text, text
    if name == "durable_queue.py":
        assert (tmp_path / "data" / "queue_store" / "pyiii-queue.sqlite3").exists()
