"""The configs the README shows are configs the engine accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyiii.config import parse_config

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_config_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_config_parses(block: str) -> None:
    config = parse_config(block, source="README.md", environ={})
    assert config.state is not None
