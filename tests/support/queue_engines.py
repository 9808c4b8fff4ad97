"""In-process engines with the Queue module (the queue tests and benchmarks use them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from pyiii.config import parse_config
from pyiii.engine.server import Server


def adapter_block(adapter: str, workdir: Path, redis_url: str | None, prefix: str) -> dict[str, Any]:
    if adapter == "in_memory":
        return {"name": "builtin", "config": {"store_method": "in_memory"}}
    if adapter == "file_based":
        return {"name": "builtin", "config": {"store_method": "file_based", "file_path": str(workdir / "q")}}
    assert redis_url is not None
    return {
        "name": "redis",
        "config": {"redis_url": redis_url, "key_prefix": prefix, "visibility_timeout_ms": 2000},
    }


def queue_config_yaml(
    queue_configs: dict[str, Any], adapter: dict[str, Any], others: tuple[dict[str, Any], ...] = ()
) -> str:
    """The config of an engine with ``iii-queue`` and the module blocks ``others``."""
    config = {"queue_configs": queue_configs, "adapter": adapter}
    block = {"workers": [{"name": "iii-queue", "config": config}, *others]}
    return yaml.safe_dump(block)


class QueueEngine:
    """An in-process engine with the Queue module."""

    def __init__(self, config_text: str) -> None:
        self.config_text = config_text
        self.server: Server | None = None

    async def start(self, port: int = 0) -> QueueEngine:
        config = dataclasses.replace(parse_config(self.config_text, source="test"), port=port)
        self.server = Server(config)
        await self.server.start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}"

    @property
    def module(self) -> Any:
        assert self.server is not None
        return self.server.module("iii-queue")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def restart(self) -> None:
        """Stop and start again on the same port (workers reconnect by themselves)."""
        assert self.server is not None
        port = self.server.port
        await self.stop()
        await self.start(port)
