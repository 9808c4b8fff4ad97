"""A private ``redis-server`` for tests: loopback only, nothing saved to disk.

``RedisServer(workdir).start()`` runs the Debian ``redis-server`` binary on a
free port with ``--save '' --appendonly no``; ``stop()`` and ``start()`` again
keep the same port, so clients holding the URL see an outage and a recovery.

``RedisClusterServers(workdir).start()`` runs three such servers with
``--cluster-enabled yes`` and joins them into one Redis Cluster (three
primaries, no replicas) with ``redis-cli --cluster create``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

INSTALL_HINT = "redis-server is not installed; run `make test` (it installs the Debian redis-server package)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """Path of redis-server, or raise RuntimeError telling how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    return path


class RedisServer:
    """One redis-server process on 127.0.0.1, started and stopped on demand."""

    def __init__(self, workdir: Path, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.running:
            return self
        log = (self.workdir / "redis.log").open("ab")
        # Pass settings as arguments (no config file); `--save ''` turns RDB
        # snapshots off, so a restart starts empty and nothing touches disk.
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--daemonize", "no",
                "--protected-mode", "yes",
                *self.extra_args,
            ],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout}s:\n{self.log_tail()}")

    def ping(self) -> bool:
        """True when the server answers PING (plain RESP over a socket)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "redis.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _redis_cli_binary() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise RuntimeError(INSTALL_HINT.replace("redis-server is", "redis-cli is"))
    return path


class RedisClusterServers:
    """Three cluster-enabled redis-servers on 127.0.0.1 joined into one Redis Cluster."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.cli = _redis_cli_binary()
        self.workdir = workdir
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "5000",
                    # The bus port defaults to port + 10000, which may be taken or above 65535.
                    "--cluster-port", str(_free_port()),
                ],
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """URL of the first node (a cluster client discovers the others)."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            created = subprocess.run(
                [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed ({created.returncode}):\n"
                    + created.stdout.decode(errors="replace")[-2000:]
                    + created.stderr.decode(errors="replace")[-2000:]
                )
            deadline = time.monotonic() + timeout
            while not all(self._cluster_ok(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis Cluster did not reach cluster_state:ok within {timeout}s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _cluster_ok(self, node: RedisServer) -> bool:
        info = subprocess.run(
            [self.cli, "-p", str(node.port), "cluster", "info"], capture_output=True, timeout=5, check=False
        )
        return b"cluster_state:ok" in info.stdout

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
