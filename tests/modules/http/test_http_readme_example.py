"""README "Functions over HTTP" shows examples/http/ as it is (tests/test_docs.py runs the README's copy)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "http"


def section() -> str:
    readme = (ROOT / "README.md").read_text()
    text = readme[readme.index("## Functions over HTTP\n") :]
    return text[: text.index("\n## ", 1)]


def block(kind: str) -> str:
    found = re.findall(rf"```{kind}\n(.*?)```", section(), flags=re.S)
    assert len(found) == 1, f"one {kind} block in the section"
    return str(found[0])


def test_readme_shows_the_example_program_config_and_requests() -> None:
    program = (EXAMPLE / "todos.py").read_text()
    assert program[program.index("import itertools\n") :] == block("python")
    assert (EXAMPLE / "iii-config.yaml").read_text() == block("yaml")
    assert (EXAMPLE / "requests.sh").read_text() == block("sh")
