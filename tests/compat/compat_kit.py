"""Helpers for driving the official SDK worker programs (tests/compat/README.md) from tests.

`.compat/` is made by `scripts/install-compat.sh` (`make test` runs it). Every worker program
prints one JSON object per line on stdout; `WorkerProc` collects them while the test's event
loop keeps running (pyiii SDK workers in the test process share that loop, so nothing here
blocks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPAT = Path(os.environ.get("III_COMPAT_DIR") or ROOT / ".compat")
NODE_WORKER = ROOT / "tests" / "compat" / "node" / "worker.mjs"
PY_WORKER = ROOT / "tests" / "compat" / "python" / "worker.py"
SEED = ROOT / "examples" / "seed"
REPO_CONFIG = ROOT / "iii-config.yaml"
IN_MEMORY_CONFIG = REPO_CONFIG.read_text().replace("store_method: file_based", "store_method: in_memory")

VERSIONS = ("node-0.9", "node-0.22", "py-0.11.6", "py-0.25.0")
# what each install must contain to be usable
_MARKERS = {
    "node-0.9": "node_modules/iii-sdk/package.json",
    "node-0.22": "node_modules/@iii-dev/helpers/package.json",
    "py-0.11.6": "bin/python",
    "py-0.25.0": "bin/python",
    "py-motia": "bin/motia",  # Motia 1.0.4rc1 on iii-sdk 0.11.3 (not in VERSIONS: only Motia tests use it)
}


def require_compat(*versions: str) -> None:
    """Fail (never skip) when an official SDK install is missing."""
    missing = [v for v in versions or VERSIONS if not (COMPAT / v / _MARKERS[v]).exists()]
    if missing:
        pytest.fail(
            f"official SDK installs missing from {COMPAT}: {', '.join(missing)}. "
            "Run `make test` (or `scripts/install-compat.sh`) first.",
            pytrace=False,
        )


def prefix_of(version: str) -> str:
    """A function-id prefix per version: node-0.9 -> n09."""
    return version.replace("node-", "n").replace("py-", "p").replace(".", "").replace("-", "")


def worker_argv(version: str, role: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and extra env for one official worker program run."""
    if version.startswith("node-"):
        return ["node", str(NODE_WORKER), role, *args], {"III_NODE_SDK": str(COMPAT / version)}
    return [str(COMPAT / version / "bin" / "python"), str(PY_WORKER), role, *args], {}


def ensure_node_modules(directory: Path, version: str) -> None:
    """Make `directory/node_modules` resolve to the `.compat/<version>` install.

    Leaves an existing node_modules alone (e.g. one made by `npm install` there).
    """
    link = directory / "node_modules"
    if link.exists():
        return
    target = os.path.relpath(COMPAT / version / "node_modules", directory)
    with contextlib.suppress(FileExistsError):
        if link.is_symlink():  # dangling (the install moved): replace it
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


class WorkerProc:
    """A subprocess whose stdout JSON lines are collected as they arrive."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.messages: list[dict[str, Any]] = []
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._readers = [
            asyncio.create_task(self._pump(proc.stdout, self.stdout_lines, parse=True)),
            asyncio.create_task(self._pump(proc.stderr, self.stderr_lines, parse=False)),
        ]

    @classmethod
    async def start(
        cls, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path | None = None
    ) -> WorkerProc:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd or ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        return cls(name, proc)

    async def _pump(self, stream: asyncio.StreamReader | None, sink: list[str], *, parse: bool) -> None:
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            sink.append(text)
            if parse:
                try:
                    msg = json.loads(text)
                except ValueError:
                    msg = {"_raw": text}
                self.messages.append(msg if isinstance(msg, dict) else {"_raw": text})

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def describe(self) -> str:
        out = "\n".join(self.stdout_lines[-20:])
        err = "\n".join(self.stderr_lines[-30:])
        return f"[{self.name} pid={self.pid} rc={self.returncode}]\nstdout:\n{out}\nstderr (tail):\n{err}"

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0, what: str = ""
    ) -> dict[str, Any]:
        """The first stdout message matching `predicate`; fails with the worker's output."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages:
                if "fatal" in msg:
                    pytest.fail(f"{self.name} failed to start: {msg['fatal']}\n{self.describe()}")
                if predicate(msg):
                    return msg
            if self.proc.returncode is not None and all(r.done() for r in self._readers):
                pytest.fail(
                    f"{self.name} exited before printing {what or 'the expected line'}\n{self.describe()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name}: no {what or 'expected line'} within {timeout:g}s\n{self.describe()}"
                )
            await asyncio.sleep(0.02)

    async def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        return await self.wait_for(lambda m: m.get("ready") is True, timeout, "ready line")

    async def finish(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait for the process to exit on its own; its stdout messages."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            pytest.fail(f"{self.name} did not exit within {timeout:g}s\n{self.describe()}")
        await asyncio.gather(*self._readers)
        return self.messages

    async def result(self, timeout: float = 30.0) -> dict[str, Any]:
        """For one-shot roles: the single JSON line of a process that must exit 0."""
        msgs = await self.finish(timeout)
        assert self.returncode == 0, f"{self.name} exited {self.returncode}\n{self.describe()}"
        assert len(msgs) == 1, f"{self.name}: expected one JSON line\n{self.describe()}"
        return msgs[0]

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        for r in self._readers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r, 5)
        return self.proc.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        """SIGKILL at once (no wait)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class Spawner:
    """Starts worker programs for one test and kills whatever is left at teardown."""

    def __init__(self) -> None:
        self.procs: list[WorkerProc] = []

    async def official(
        self, version: str, role: str, *args: str, url: str, env: dict[str, str] | None = None
    ) -> WorkerProc:
        require_compat(version)
        argv, version_env = worker_argv(version, role, *args)
        env = {**version_env, **(env or {}), "III_URL": url}
        proc = await WorkerProc.start(f"{version} {role} {' '.join(args)}".strip(), argv, env)
        self.procs.append(proc)
        return proc

    async def command(
        self, name: str, argv: Sequence[str], *, url: str, cwd: Path | None = None
    ) -> WorkerProc:
        proc = await WorkerProc.start(name, argv, {"III_URL": url}, cwd)
        self.procs.append(proc)
        return proc

    async def close(self) -> None:
        await asyncio.gather(*(p.stop(signal.SIGKILL, 5) for p in self.procs if p.returncode is None))


async def wait_output(engine: Any, text: str, timeout: float = 10.0) -> str:
    """Wait (without blocking the loop) until the engine's console shows `text`; that line."""
    deadline = time.monotonic() + timeout
    while True:
        for line in engine.output.splitlines():
            if text in line:
                return str(line)
        if time.monotonic() > deadline:
            pytest.fail(f"engine output never showed {text!r} within {timeout:g}s:\n{engine.output[-4000:]}")
        await asyncio.sleep(0.05)


async def until(check: Callable[[], Any], timeout: float, what: str, proc: WorkerProc) -> None:
    """Wait (without blocking the loop) until ``check()`` holds; else fail with the worker's output."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{proc.describe()}")
        await asyncio.sleep(0.05)


SEED_FILES = ("state-writer.ts", "state-reader.ts", "state-update.ts")


def as_latest_sdk(guide_ts: str) -> str:
    """A guide file rewritten for npm iii-sdk 0.22, the two ways examples/seed/README.md names."""
    text = guide_ts.replace(
        "import { registerWorker, Logger } from 'iii-sdk'\n",
        "import { registerWorker } from 'iii-sdk'\nimport { Logger } from '@iii-dev/helpers/observability'\n",
    )
    return re.sub(r"registerFunction\(\{ id: ('[^']+') \}", r"registerFunction(\1", text)


PYTHON = sys.executable
