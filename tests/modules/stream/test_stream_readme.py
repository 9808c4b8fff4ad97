"""README "Streams": its program is examples/streams/live_progress.py, and it runs.

The README shows it as a ```py block: it needs an engine with the Streams module
(examples/streams/iii-config.yaml), not the default engine tests/test_docs.py runs
the ```python blocks against.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from support.engines import free_port, running_server, url_of

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "streams"


def test_readme_shows_the_example_program() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Streams") :]
    shown = section[section.index("```py\n") + 6 :]
    shown = shown[: shown.index("```")]
    program = (EXAMPLE / "live_progress.py").read_text()
    assert program[program.index("import asyncio\n") :].rstrip() == shown.rstrip()
    config = section[section.index("```yaml\n") + 8 :]
    assert config[: config.index("```")].strip() in (EXAMPLE / "iii-config.yaml").read_text()


async def test_the_example_runs_against_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("STREAM_PORT", str(port))
    async with running_server((EXAMPLE / "iii-config.yaml").read_text()) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE / "live_progress.py"),
            env={**os.environ, "III_URL": url_of(server), "III_STREAM_URL": f"ws://127.0.0.1:{port}"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "sync: [{'done': 0, 'total': 3}]" in text
    assert "update job-7 {'done': 3, 'total': 3}" in text
