"""Shared fixtures: real engines on free loopback ports.

``engine_proc`` runs ``python -m pyiii serve`` as a subprocess (for tests that
read its console, kill it or restart it); ``engine`` runs a Server inside the
test's event loop (cheaper, still real sockets). ``redis_url`` is a private
redis-server shared by the session; ``private_redis`` is one a test may stop
and restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.engines import free_port
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
# The repository's iii-config.yaml serves the console on ${III_CONSOLE_PORT:3113}: engines
# started by tests (and their subprocesses) take a free port instead, so they never collide.
os.environ.setdefault("III_CONSOLE_PORT", "0")


class EngineProcess:
    """A `pyiii serve` subprocess whose console output is collected."""

    def __init__(
        self,
        workdir: Path,
        config: str | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / "iii-config.yaml"
            self.config_path.write_text(config)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EngineProcess:
        args = [sys.executable, "-m", "pyiii", "serve", "--port", str(self.port)]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        self.proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        ready = threading.Event()

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with self._lock:
                    self.lines.append(line.rstrip("\n"))
                if "engine ready on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("engine did not start:\n" + self.output)
        return self

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            time.sleep(0.05)
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture
def engine_proc(tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine subprocess with in-memory state, in a temp working directory."""
    eng = EngineProcess(tmp_path).start()
    yield eng
    eng.stop()


@pytest.fixture
def make_engine_proc(tmp_path: Path) -> Iterator[type[EngineProcess]]:
    """Factory for engines with a given config; all are stopped afterwards."""
    started: list[EngineProcess] = []

    class _Factory(EngineProcess):
        def __init__(
            self,
            config: str | None = None,
            port: int | None = None,
            env: dict[str, str] | None = None,
            workdir: Path | None = None,
        ) -> None:
            super().__init__(workdir or tmp_path, config, port, env)
            started.append(self)

    yield _Factory
    for eng in started:
        eng.stop()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[str]:
    """An in-process engine (in-memory state) on a free port; yields its URL."""
    from pyiii.config import parse_config
    from pyiii.engine.server import Server

    config = parse_config("workers: []\n", source="test")
    import dataclasses

    from pyiii.modules.state.config import StateConfig

    config = dataclasses.replace(config, port=0).with_module("iii-state", StateConfig())
    server = Server(config)
    await server.start()
    yield f"ws://127.0.0.1:{server.port}"
    await server.stop()
    await asyncio.sleep(0)


# -- Redis -------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session (never stopped by tests).

    Fails (does not skip) when redis-server is missing: `make test` installs it.
    """
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server."""
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone: it may ``stop()`` and ``start()`` it."""
    try:
        server = RedisServer(tmp_path / "redis").start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()
