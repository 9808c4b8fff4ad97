"""The State module's config block (``iii-state`` / ``modules::state::StateModule``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyiii.config.values import REDIS_SCHEMES, WS_SCHEMES, Block, found

AdapterName = Literal["kv", "redis", "bridge"]
StoreMethod = Literal["in_memory", "file_based"]

ADAPTER_NAMES: dict[str, AdapterName] = {"kv": "kv", "redis": "redis", "bridge": "bridge"}
ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::state::adapters::KvStore": "kv",
    "modules::state::adapters::RedisAdapter": "redis",
    "modules::state::adapters::Bridge": "bridge",
    "modules::state::adapters::BridgeAdapter": "bridge",
}
STORE_METHODS: dict[str, StoreMethod] = {"in_memory": "in_memory", "file_based": "file_based"}

DEFAULT_REDIS_URL = "redis://localhost:6379"
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
    bridge_url: str = "ws://localhost:49134"


def parse(block: Block) -> StateConfig:
    """Validate a State ``config:`` block."""
    block.keys(_KEYS)
    values: dict[str, object] = {
        "triggers_enabled": block.bool("triggers_enabled", True),
        "max_value_bytes": block.opt_int("max_value_bytes", minimum=0) or None,
    }
    if "adapter" in block:
        raw = block.get("adapter")
        if not isinstance(raw, dict):
            block.fail(
                f"expected a mapping like {{name: kv, config: {{...}}}}, found {found(raw)}; "
                "valid adapter names: kv, redis, bridge",
                "adapter",
            )
        values.update(_adapter(block.block("adapter")))
    if "save_interval_ms" in block:
        values["save_interval_ms"] = block.opt_int("save_interval_ms")
    return StateConfig(**values)  # type: ignore[arg-type]


def _adapter(spec: Block) -> dict[str, object]:
    spec.keys(("name", "class", "config"))
    if "name" in spec and "class" in spec:
        spec.fail("has both 'name' and 'class'; use one")
    adapter: AdapterName
    if "class" in spec:
        adapter = spec.choice("class", "kv", ADAPTER_CLASSES, kind="State adapter class")
    elif "name" in spec:
        adapter = spec.choice("name", "kv", ADAPTER_NAMES, kind="State adapter")
    else:
        spec.fail("adapter has no 'name'; valid: {name: kv|redis|bridge, config: {...}}")
    cfg = spec.block("config")
    cfg.keys(_ADAPTER_KEYS[adapter])
    values: dict[str, object] = {"adapter": adapter}
    if adapter == "kv":
        values["store_method"] = cfg.choice("store_method", "in_memory", STORE_METHODS)
        if "file_path" in cfg:
            values["file_path"] = cfg.opt_str("file_path")
        elif values["store_method"] == "file_based":
            # Accepted (the reference has a default too), but where the data goes must not be a surprise.
            cfg.warn(
                f"store_method file_based without file_path: the store is {DEFAULT_FILE_PATH} "
                "(relative to the directory the engine starts in); set file_path to choose",
                "file_path",
            )
        if "save_interval_ms" in cfg:
            values["save_interval_ms"] = cfg.opt_int("save_interval_ms")
    elif adapter == "redis":
        values["redis_url"] = cfg.url("redis_url", DEFAULT_REDIS_URL, REDIS_SCHEMES)
    else:
        urls = {key: cfg.url(key, "", WS_SCHEMES) for key in ("bridge_url", "url") if key in cfg}
        if len(set(urls.values())) > 1:
            cfg.fail(
                f"'url' and 'bridge_url' disagree ({urls['bridge_url']!r} vs {urls['url']!r}); give only one",
                "url",
            )
        if urls:
            values["bridge_url"] = next(iter(urls.values()))
    return values
