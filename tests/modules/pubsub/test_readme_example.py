"""README "Background work": its program is examples/background/pubsub_cron.py, and it runs."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from support.engines import running_server, url_of

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "background"


def test_readme_shows_the_example_program() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Background work") :]
    shown = section[section.index("```python\n") + 10 :]
    shown = shown[: shown.index("```")]
    program = (EXAMPLE / "pubsub_cron.py").read_text()
    assert program[program.index("import asyncio\n") :].rstrip() == shown.rstrip()


async def test_the_example_runs_against_its_config() -> None:
    async with running_server((EXAMPLE / "iii-config.yaml").read_text()) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE / "pubsub_cron.py"),
            env={**os.environ, "III_URL": url_of(server)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "emailed: ['A-1', 'A-2', 'A-3'] counted: ['A-1', 'A-2', 'A-3']" in text
    assert "cron ran at: " in text
