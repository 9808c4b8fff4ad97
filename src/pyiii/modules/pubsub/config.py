"""The PubSub module's config block (``iii-pubsub`` / ``modules::pubsub::PubSubModule``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyiii.config.values import REDIS_SCHEMES, Block, found

AdapterName = Literal["local", "redis"]

ADAPTER_NAMES: dict[str, AdapterName] = {"local": "local", "redis": "redis"}
ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::pubsub::LocalAdapter": "local",
    "modules::pubsub::RedisAdapter": "redis",
}
DEFAULT_REDIS_URL = "redis://localhost:6379"
_ADAPTER_KEYS: dict[AdapterName, tuple[str, ...]] = {"local": (), "redis": ("redis_url",)}


@dataclass(frozen=True, slots=True, kw_only=True)
class PubSubConfig:
    """Configuration of the PubSub module: which adapter carries the messages."""

    adapter: AdapterName = "local"
    redis_url: str = DEFAULT_REDIS_URL


def parse(block: Block) -> PubSubConfig:
    """Validate a PubSub ``config:`` block."""
    block.keys(("adapter",))
    if "adapter" not in block:
        return PubSubConfig()
    if not isinstance(block.get("adapter"), dict):
        block.fail(
            f"expected a mapping like {{name: redis, config: {{redis_url: ...}}}}, found "
            f"{found(block.get('adapter'))}; valid adapter names: local, redis",
            "adapter",
        )
    spec = block.block("adapter")
    spec.keys(("name", "class", "config"))
    if "name" in spec and "class" in spec:
        spec.fail("has both 'name' and 'class'; use one")
    adapter: AdapterName
    if "class" in spec:
        adapter = spec.choice("class", "local", ADAPTER_CLASSES, kind="PubSub adapter class")
    elif "name" in spec:
        adapter = spec.choice("name", "local", ADAPTER_NAMES, kind="PubSub adapter")
    else:
        spec.fail("adapter has no 'name'; valid: {name: local|redis, config: {...}}")
    cfg = spec.block("config")
    cfg.keys(_ADAPTER_KEYS[adapter])
    if adapter == "redis":
        return PubSubConfig(adapter="redis", redis_url=cfg.url("redis_url", DEFAULT_REDIS_URL, REDIS_SCHEMES))
    return PubSubConfig(adapter="local")
