"""Channels with the official SDKs, unchanged: Node iii-sdk 0.22.1 (createChannel) and Python
iii-sdk 0.25.0 (create_channel), between each other and with pyiii workers.

The worker programs' roles (tests/compat/README.md): ``serve-channels PREFIX`` serves
``PREFIX::consume`` (reads a channel it gets a reader ref for) and ``PREFIX::produce`` (writes
to one it gets a writer ref for); ``channel-send`` / ``channel-receive`` create a channel and
hand the other end to such a function. Data is text messages plus a byte pattern (byte i is
i % 251), compared by SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from compat_kit import Spawner, prefix_of, require_compat

from pyiii import Worker, connect

pytestmark = pytest.mark.timeout(120)

OFFICIAL = ("node-0.22", "py-0.25.0")
TEXTS = ['{"type":"start","n":1}', "plain text, not ASCII: déjà ✓"]
SIZE = 4 * 1024 * 1024
LARGE = 64 * 1024 * 1024


def pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def digest(size: int) -> dict[str, Any]:
    return {"bytes": size, "sha256": hashlib.sha256(pattern(size)).hexdigest()}


@pytest.fixture(scope="module", autouse=True)
def _compat_installed() -> None:
    require_compat(*OFFICIAL)


@pytest.fixture
async def pyiii_server(engine_proc: Any) -> AsyncIterator[Worker]:
    """A pyiii worker serving pyiii::consume / pyiii::produce, the same contract as serve-channels."""
    worker = await connect(engine_proc.url, name="pyiii-channels")

    async def consume(data: dict[str, Any]) -> Any:
        texts: list[str] = []
        h, size = hashlib.sha256(), 0
        async for message in worker.open_reader(data["reader"]):
            if isinstance(message, bytes):
                h.update(message)
                size += len(message)
            else:
                texts.append(message)
            if data.get("slow_ms"):
                await asyncio.sleep(data["slow_ms"] / 1000)
        return {"bytes": size, "sha256": h.hexdigest(), "texts": texts}

    async def produce(data: dict[str, Any]) -> Any:
        async with worker.open_writer(data["writer"]) as writer:
            for text in data.get("texts") or []:
                await writer.send_text(text)
            await writer.send_bytes(pattern(data["size"]))
        return digest(data["size"])

    worker.register_function("pyiii::consume", consume)
    worker.register_function("pyiii::produce", produce)
    for _ in range(100):  # registrations have no ack: wait until the engine routes to us
        functions = await worker.trigger("engine::functions::list", {"prefix": "pyiii::"})
        if len(functions["functions"]) == 2:
            break
        await asyncio.sleep(0.05)
    yield worker
    await worker.shutdown()


async def official_send_and_receive(
    spawn: Spawner, version: str, url: str, prefix: str, size: int = SIZE
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An official worker writes a channel to PREFIX::consume and reads one from PREFIX::produce."""
    texts = json.dumps(TEXTS)
    send = await spawn.official(version, "channel-send", f"{prefix}::consume", str(size), "4", texts, url=url)
    recv = await spawn.official(
        version, "channel-receive", f"{prefix}::produce", str(size), "4", texts, url=url
    )
    return await asyncio.gather(send.result(60), recv.result(60))


def check(send_out: dict[str, Any], recv_out: dict[str, Any], size: int = SIZE) -> None:
    assert "error" not in send_out and "error" not in recv_out, (send_out, recv_out)
    assert send_out["sent"] == digest(size)
    assert send_out["result"] == {**digest(size), "texts": TEXTS}
    assert recv_out["result"] == digest(size)
    assert recv_out["received"] == {**digest(size), "texts": TEXTS}


@pytest.mark.parametrize("server", OFFICIAL)
@pytest.mark.parametrize("creator", OFFICIAL)
async def test_official_creates_official_serves(
    engine_proc: Any, spawn: Spawner, creator: str, server: str
) -> None:
    url, prefix = engine_proc.url, prefix_of(server)
    serving = await spawn.official(server, "serve-channels", prefix, url=url)
    await serving.ready()
    check(*await official_send_and_receive(spawn, creator, url, prefix))


@pytest.mark.parametrize("version", OFFICIAL)
async def test_official_creates_pyiii_serves(
    engine_proc: Any, spawn: Spawner, pyiii_server: Worker, version: str
) -> None:
    check(*await official_send_and_receive(spawn, version, engine_proc.url, "pyiii"))


@pytest.mark.parametrize("version", ("node-0.9", "py-0.11.6"))
async def test_older_official_sdks_create_channels(
    engine_proc: Any, spawn: Spawner, pyiii_server: Worker, version: str
) -> None:
    """The previous generation (iii.createChannel / iii.create_channel methods) works the same."""
    require_compat(version)
    check(
        *await official_send_and_receive(spawn, version, engine_proc.url, "pyiii", size=512 * 1024),
        size=512 * 1024,
    )


@pytest.mark.parametrize("version", OFFICIAL)
async def test_pyiii_creates_official_serves(engine_proc: Any, spawn: Spawner, version: str) -> None:
    prefix = prefix_of(version)
    serving = await spawn.official(version, "serve-channels", prefix, url=engine_proc.url)
    await serving.ready()
    async with await connect(engine_proc.url, name="pyiii-creator") as worker:
        # pyiii writes, the official worker reads.
        out = await worker.create_channel(buffer_size=4)
        consumed = asyncio.ensure_future(worker.trigger(f"{prefix}::consume", {"reader": out.reader_ref}))
        async with out.writer as writer:
            for text in TEXTS:
                await writer.send_text(text)
            await writer.send_bytes(pattern(SIZE))
        assert await consumed == {**digest(SIZE), "texts": TEXTS}
        # The official worker writes, pyiii reads.
        back = await worker.create_channel(buffer_size=4)
        payload = {"writer": back.writer_ref, "size": SIZE, "texts": TEXTS}
        produced = asyncio.ensure_future(worker.trigger(f"{prefix}::produce", payload))
        texts: list[str] = []
        data = await back.reader.read_all(on_text=texts.append)
        assert await produced == digest(SIZE)
        assert {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} == digest(SIZE)
        assert texts == TEXTS


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.parametrize("version", OFFICIAL)
async def test_large_payload_backpressure_keeps_engine_memory_bounded(
    engine_proc: Any, spawn: Spawner, pyiii_server: Worker, version: str
) -> None:
    """64 MiB from an official writer to a slow reader through a 4-message channel: the writer
    is held back (channel_stalls) and the engine's peak memory grows by far less than 64 MiB."""
    url, prefix = engine_proc.url, prefix_of(version)
    serving = await spawn.official(version, "serve-channels", prefix, url=url)
    await serving.ready()
    warm = 256 * 1024
    check(*await official_send_and_receive(spawn, version, url, prefix, size=warm), size=warm)
    before = _peak_rss_kib(engine_proc.proc.pid)
    stalls_before = (await pyiii_server.trigger("engine::stats", {}))["channel_stalls"]

    extra = json.dumps({"slow_ms": 1})  # pyiii::consume sleeps 1 ms per message: a slow reader
    send = await spawn.official(
        version, "channel-send", "pyiii::consume", str(LARGE), "4", "[]", extra, url=url
    )
    out = await send.result(90)
    assert out.get("sent") == digest(LARGE), out
    assert out["result"] == {**digest(LARGE), "texts": []}

    stats = await pyiii_server.trigger("engine::stats", {})
    grown_mib = (_peak_rss_kib(engine_proc.proc.pid) - before) / 1024
    assert stats["channel_stalls"] > stalls_before, stats  # the writer waited for the reader
    assert grown_mib < 12, f"engine peak memory grew {grown_mib:.1f} MiB moving 64 MiB"
    assert stats["channels"] == 0 and stats["channel_buffered_bytes"] == 0
