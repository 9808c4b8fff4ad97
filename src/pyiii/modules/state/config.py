"""The State module's config block (``iii-state`` / ``modules::state::StateModule``)."""

from __future__ import annotations

from dataclasses import dataclass

from pyiii.config.adapters import (
    DEFAULT_BRIDGE_URL,
    DEFAULT_REDIS_URL,
    StoreMethod,
    read_adapter,
    store_adapter,
)
from pyiii.config.adapters import (
    STORE_ADAPTER_NAMES as ADAPTER_NAMES,
)
from pyiii.config.adapters import StoreAdapterName as AdapterName
from pyiii.config.values import Block

ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::state::adapters::KvStore": "kv",
    "modules::state::adapters::RedisAdapter": "redis",
    "modules::state::adapters::Bridge": "bridge",
    "modules::state::adapters::BridgeAdapter": "bridge",
}

DEFAULT_FILE_PATH = "./data/state_store.db"
_KEYS = ("adapter", "triggers_enabled", "max_value_bytes", "save_interval_ms")
_ADAPTER_KEYS: dict[AdapterName, tuple[str, ...]] = {
    "kv": ("store_method", "file_path", "save_interval_ms"),
    "redis": ("redis_url",),
    "bridge": ("bridge_url", "url"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    """Configuration of the State module.

    ``file_path`` (kv adapter, ``file_based``) is kept exactly as written; a
    relative path is resolved against the process's current working directory
    when the store opens it, not against the config file's directory.
    ``save_interval_ms`` is accepted and recorded but has no effect in pyiii.
    ``max_value_bytes`` is ``None`` for "no limit" (a configured ``0`` also
    means no limit).
    """

    adapter: AdapterName = "kv"
    store_method: StoreMethod = "in_memory"
    file_path: str = DEFAULT_FILE_PATH
    save_interval_ms: int | None = None
    triggers_enabled: bool = True
    max_value_bytes: int | None = None
    redis_url: str = DEFAULT_REDIS_URL
    bridge_url: str = DEFAULT_BRIDGE_URL


def parse(block: Block) -> StateConfig:
    """Validate a State ``config:`` block."""
    block.keys(_KEYS)
    values: dict[str, object] = {
        "triggers_enabled": block.bool("triggers_enabled", True),
        "max_value_bytes": block.opt_int("max_value_bytes", minimum=0) or None,
    }
    chosen = read_adapter(block, "State", ADAPTER_NAMES, ADAPTER_CLASSES, _ADAPTER_KEYS)
    if chosen is not None:
        values.update(_adapter(*chosen))
    if "save_interval_ms" in block:
        values["save_interval_ms"] = block.opt_int("save_interval_ms")
    return StateConfig(**values)  # type: ignore[arg-type]


def _adapter(adapter: AdapterName, cfg: Block) -> dict[str, object]:
    values = store_adapter(adapter, cfg, DEFAULT_FILE_PATH)
    if adapter == "kv" and "save_interval_ms" in cfg:
        values["save_interval_ms"] = cfg.opt_int("save_interval_ms")
    return values
