"""A fresh clone, with nothing beside it, collects and passes tests on its own.

The repository is cloned (its committed HEAD) into an empty temporary
directory and tested there with this run's interpreter and installed
dependencies, but the clone's own ``src`` (``PYTHONPATH``). Collecting the
whole suite catches any test that reads files from outside the repository at
import time; a handful of tests that read the repository's data files run in
full. Nothing tracked may name a path beside the repository or on the machine
it was written on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = "|".join([r"\.\./" + "shared/", "/" + "work/", "shared/" + "(spec|seed)/"])
FAST_TESTS = [
    "tests/modules/state/test_ops.py",
    "tests/modules/state/test_state_vectors.py",
    "tests/test_config.py",
    "tests/test_docs.py",
    "tests/test_examples.py",
]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is needed to test a fresh clone", pytrace=False)
    target = tmp_path_factory.mktemp("fresh") / "pyiii"
    done = subprocess.run(
        [git, "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["pyiii"]  # nothing beside it
    return target


def in_clone(clone: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(clone / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    # The official SDK installs are not part of a clone; share this checkout's.
    env.setdefault("III_COMPAT_DIR", str(ROOT / ".compat"))
    return subprocess.run(
        [sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_nothing_tracked_points_outside_the_repository(clone: Path) -> None:
    found = subprocess.run(["git", "grep", "-nE", OUTSIDE], cwd=clone, capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", f"paths outside the repository:\n{found.stdout}"


def test_the_clone_uses_its_own_source(clone: Path) -> None:
    done = in_clone(clone, "-c", "import pyiii; print(pyiii.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(clone / "src")


def test_the_whole_suite_collects_in_a_fresh_clone(clone: Path) -> None:
    done = in_clone(clone, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    match = re.search(r"^(\d+) tests collected", done.stdout, flags=re.M)
    assert match and int(match.group(1)) > 500, done.stdout[-2000:]


def test_tests_that_read_repository_data_pass_in_a_fresh_clone(clone: Path) -> None:
    done = in_clone(clone, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *FAST_TESTS)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert re.search(r"^\d+ passed", done.stdout.strip().splitlines()[-1]), done.stdout[-2000:]
