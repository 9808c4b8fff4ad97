"""Helpers for the reliability tests: a raw WebSocket client, engine probes, SDK worker processes.

`RawWS` speaks RFC 6455 by hand so a test can send frames no well-behaved
library would (bad UTF-8, stray continuations, reserved bits, oversized
frames). Everything else talks to the engine the way users do: the pyiii SDK
or the official SDK worker programs of tests/compat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.ws_upgrade import upgrade_request

ROOT = Path(__file__).resolve().parents[2]
COMPAT = Path(os.environ.get("III_COMPAT_DIR") or ROOT / ".compat")
NODE_WORKER = ROOT / "tests" / "compat" / "node" / "worker.mjs"
PY_WORKER = ROOT / "tests" / "compat" / "python" / "worker.py"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --- a raw WebSocket client --------------------------------------------------------------


@dataclass
class Closed:
    """The engine closed the connection: the close frame's code and reason (None: no frame)."""

    code: int | None
    reason: str


class RawWS:
    """A WebSocket client that sends any frame, valid or not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed: Closed | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        headers: dict[str, str] | None = None,
        path: str = "/",
        rcvbuf: int | None = None,
        read_limit: int = 64 * 1024 * 1024,
    ) -> RawWS:
        """Upgrade a new socket.

        ``rcvbuf`` pins the kernel receive buffer (no autotuning); ``read_limit``
        bounds what is read ahead of ``recv`` (asyncio stops reading at twice it),
        so a small one makes a worker that does not read.
        """
        m = re.match(r"ws://([^:/]+):(\d+)", url)
        assert m, url
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (m.group(1), int(m.group(2))))
        reader, writer = await asyncio.open_connection(sock=sock, limit=read_limit)
        writer.write(upgrade_request(f"{m.group(1)}:{m.group(2)}", path, headers))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            writer.close()
            raise ConnectionError(f"upgrade refused: {status.decode(errors='replace')}")
        return cls(reader, writer)

    @staticmethod
    def encode_frame(
        opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
    ) -> bytes:
        head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
        n = len(payload)
        bit = 0x80 if mask else 0
        if n < 126:
            head.append(bit | n)
        elif n < 65536:
            head.append(bit | 126)
            head += struct.pack("!H", n)
        else:
            head.append(bit | 127)
            head += struct.pack("!Q", n)
        if not mask:
            return bytes(head) + payload
        key = os.urandom(4)
        # XOR with the repeated key, at C speed via int arithmetic.
        reps = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(reps, "big")).to_bytes(n, "big")
        return bytes(head) + key + masked

    async def send_frame(self, opcode: int, payload: bytes, **kw: Any) -> None:
        self.writer.write(self.encode_frame(opcode, payload, **kw))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def send_text(self, text: str | bytes) -> None:
        await self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    async def send_json(self, msg: Any) -> None:
        await self.send_text(json.dumps(msg))

    async def recv(self, timeout: float = 5.0) -> str | bytes | Closed:
        """The next data message, or ``Closed`` once the engine closed (or dropped) the socket."""
        if self.closed is not None:
            return self.closed
        try:
            while True:
                b1, b2 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
                n = b2 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
                opcode = b1 & 0xF
                if opcode == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self.closed = Closed(code, payload[2:].decode("utf-8", "replace"))
                    self.writer.close()
                    return self.closed
                if opcode in (OP_PING, OP_PONG):
                    continue
                return payload.decode() if opcode == OP_TEXT else payload
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed = Closed(None, "")
            return self.closed

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        got = await self.recv(timeout)
        assert isinstance(got, str), f"expected a text frame, got {got!r}"
        msg = json.loads(got)
        assert isinstance(msg, dict)
        return msg

    async def call(self, function_id: str, data: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Invoke and return the matching ``invocationresult`` (other frames are skipped)."""
        inv = str(uuid.uuid4())
        await self.send_json(
            {"type": "invokefunction", "invocation_id": inv, "function_id": function_id, "data": data}
        )
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv_json(max(0.1, deadline - time.monotonic()))
            if msg.get("type") == "invocationresult" and msg.get("invocation_id") == inv:
                return msg

    async def close(self) -> None:
        if self.closed is None:
            with contextlib.suppress(Exception):
                await self.send_frame(OP_CLOSE, struct.pack("!H", 1000))
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def raw_worker(url: str, headers: dict[str, str] | None = None, **options: Any) -> RawWS:
    """A raw connection that has consumed its ``workerregistered`` greeting."""
    ws = await RawWS.connect(url, headers, **options)
    first = await ws.recv_json()
    assert first["type"] == "workerregistered", first
    return ws


# --- engine probes ----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (what `ss -ltn` shows)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                addr_hex, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:
                    continue
                raw = bytes.fromhex(addr_hex)
                if width == 8:
                    found.add(".".join(str(b) for b in raw[::-1]))
                else:
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    found.add(":".join(b"".join(words)[i : i + 2].hex() for i in range(0, 16, 2)))
    return found


# --- official SDK worker programs (tests/compat/README.md) ----------------------------------

_MARKERS = {
    "node-0.9": "node_modules/iii-sdk/package.json",
    "node-0.22": "node_modules/@iii-dev/helpers/package.json",
    "py-0.11.6": "bin/python",
    "py-0.25.0": "bin/python",
}


def require_compat(*versions: str) -> None:
    """Fail (never skip) when an official SDK install is missing: `make test` installs them."""
    missing = [v for v in versions if not (COMPAT / v / _MARKERS[v]).exists()]
    if missing:
        pytest.fail(
            f"official SDK installs missing from {COMPAT}: {', '.join(missing)}; "
            "run `make test` or scripts/install-compat.sh",
            pytrace=False,
        )


def sdk_argv(version: str, role: str, *args: str) -> tuple[list[str], dict[str, str]]:
    if version.startswith("node-"):
        return ["node", str(NODE_WORKER), role, *args], {"III_NODE_SDK": str(COMPAT / version)}
    return [str(COMPAT / version / "bin" / "python"), str(PY_WORKER), role, *args], {}


class SdkProc:
    """An official SDK worker program; its stdout JSON lines are collected as they arrive."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc = name, proc
        self.messages: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._pumps = [
            asyncio.ensure_future(self._pump(proc.stdout, parse=True)),
            asyncio.ensure_future(self._pump(proc.stderr, parse=False)),
        ]

    @classmethod
    async def start(cls, version: str, role: str, *args: str, env: dict[str, str]) -> SdkProc:
        argv, extra = sdk_argv(version, role, *args)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OTEL_ENABLED": "false", **extra, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(f"{version} {role}", proc)

    async def _pump(self, stream: asyncio.StreamReader | None, *, parse: bool) -> None:
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if not parse:
                self.stderr.append(text)
                continue
            try:
                msg = json.loads(text)
            except ValueError:
                msg = {"_raw": text}
            self.messages.append(msg if isinstance(msg, dict) else {"_raw": text})

    def describe(self) -> str:
        out = "\n".join(json.dumps(m) for m in self.messages[-10:])
        err = "\n".join(self.stderr[-20:])
        return f"[{self.name} rc={self.proc.returncode}]\nstdout:\n{out}\nstderr:\n{err}"

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0, start: int = 0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages[start:]:
                if "fatal" in msg:
                    pytest.fail(f"{self.name} failed: {msg['fatal']}\n{self.describe()}")
                if predicate(msg):
                    return msg
            if self.proc.returncode is not None:
                await asyncio.sleep(0.1)
                pytest.fail(f"{self.name} exited early\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: expected line not seen in {timeout:g}s\n{self.describe()}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 8)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for pump in self._pumps:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pump, 2)
