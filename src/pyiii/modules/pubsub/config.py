"""The PubSub module's config block (``iii-pubsub`` / ``modules::pubsub::PubSubModule``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyiii.config.adapters import DEFAULT_REDIS_URL, read_adapter
from pyiii.config.values import REDIS_SCHEMES, Block

AdapterName = Literal["local", "redis"]

ADAPTER_NAMES: dict[str, AdapterName] = {"local": "local", "redis": "redis"}
ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::pubsub::LocalAdapter": "local",
    "modules::pubsub::RedisAdapter": "redis",
}
_EXAMPLE = "{name: redis, config: {redis_url: ...}}"  # shown when adapter: is not a mapping
_ADAPTER_KEYS: dict[AdapterName, tuple[str, ...]] = {"local": (), "redis": ("redis_url",)}


@dataclass(frozen=True, slots=True, kw_only=True)
class PubSubConfig:
    """Configuration of the PubSub module: which adapter carries the messages."""

    adapter: AdapterName = "local"
    redis_url: str = DEFAULT_REDIS_URL


def parse(block: Block) -> PubSubConfig:
    """Validate a PubSub ``config:`` block."""
    block.keys(("adapter",))
    chosen = read_adapter(block, "PubSub", ADAPTER_NAMES, ADAPTER_CLASSES, _ADAPTER_KEYS, example=_EXAMPLE)
    if chosen is None:
        return PubSubConfig()
    adapter, cfg = chosen
    if adapter == "redis":
        return PubSubConfig(adapter="redis", redis_url=cfg.url("redis_url", DEFAULT_REDIS_URL, REDIS_SCHEMES))
    return PubSubConfig(adapter="local")
