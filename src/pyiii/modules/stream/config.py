"""The Streams module's config block (``iii-stream`` / ``modules::stream::StreamModule``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyiii.config.values import REDIS_SCHEMES, WS_SCHEMES, Block, found

AdapterName = Literal["kv", "redis", "bridge"]
StoreMethod = Literal["in_memory", "file_based"]

ADAPTER_NAMES: dict[str, AdapterName] = {"kv": "kv", "redis": "redis", "bridge": "bridge"}
ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::stream::adapters::KvStore": "kv",
    "modules::stream::adapters::RedisAdapter": "redis",
    "modules::stream::adapters::BridgeAdapter": "bridge",
}
STORE_METHODS: dict[str, StoreMethod] = {"in_memory": "in_memory", "file_based": "file_based"}

DEFAULT_PORT = 3112
DEFAULT_HOST = "127.0.0.1"
DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_BRIDGE_URL = "ws://localhost:49134"
DEFAULT_FILE_PATH = "./data/stream_store.db"
# Unsent bytes a client may leave on its socket before it is dropped.
DEFAULT_MAX_SEND_BUFFER_BYTES = 4 * 1024 * 1024
# Redis keys of streams start with this, apart from State's ("pyiii").
REDIS_PREFIX = "pyiii-stream"

_KEYS = ("port", "host", "auth_function", "adapter", "max_send_buffer_bytes")
_ADAPTER_KEYS: dict[AdapterName, tuple[str, ...]] = {
    "kv": ("store_method", "file_path", "save_interval_ms", "channel_size"),
    "redis": ("redis_url",),
    "bridge": ("bridge_url", "url"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamConfig:
    """Configuration of the Streams module.

    ``max_send_buffer_bytes`` (a pyiii setting): a client whose unsent frames
    pass it is dropped. ``save_interval_ms`` and ``channel_size`` of the kv
    adapter are accepted for compatibility and have no effect (every write
    is committed before it is acknowledged; each client has its own buffer).
    """

    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    auth_function: str | None = None
    adapter: AdapterName = "kv"
    store_method: StoreMethod = "in_memory"
    file_path: str = DEFAULT_FILE_PATH
    redis_url: str = DEFAULT_REDIS_URL
    bridge_url: str = DEFAULT_BRIDGE_URL
    max_send_buffer_bytes: int = DEFAULT_MAX_SEND_BUFFER_BYTES


def parse(block: Block) -> StreamConfig:
    """Validate a Streams ``config:`` block."""
    block.keys(_KEYS)
    values: dict[str, object] = {
        "port": block.int("port", DEFAULT_PORT, minimum=0, maximum=65535),
        "host": block.str("host", DEFAULT_HOST).strip(),
        "auth_function": block.opt_str("auth_function"),
        "max_send_buffer_bytes": block.int(
            "max_send_buffer_bytes", DEFAULT_MAX_SEND_BUFFER_BYTES, minimum=1024
        ),
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
    return StreamConfig(**values)  # type: ignore[arg-type]


def _adapter(spec: Block) -> dict[str, object]:
    spec.keys(("name", "class", "config"))
    if "name" in spec and "class" in spec:
        spec.fail("has both 'name' and 'class'; use one")
    adapter: AdapterName
    if "class" in spec:
        adapter = spec.choice("class", "kv", ADAPTER_CLASSES, kind="Stream adapter class")
    elif "name" in spec:
        adapter = spec.choice("name", "kv", ADAPTER_NAMES, kind="Stream adapter")
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
            cfg.warn(
                f"store_method file_based without file_path: the store is {DEFAULT_FILE_PATH} "
                "(relative to the directory the engine starts in); set file_path to choose",
                "file_path",
            )
        for key in ("save_interval_ms", "channel_size"):
            if key in cfg:
                cfg.opt_int(key, minimum=1)
    elif adapter == "redis":
        values["redis_url"] = cfg.url("redis_url", DEFAULT_REDIS_URL, REDIS_SCHEMES)
    else:
        urls = {key: cfg.url(key, "", WS_SCHEMES) for key in ("bridge_url", "url") if key in cfg}
        if len(set(urls.values())) > 1:
            cfg.fail(
                f"'url' and 'bridge_url' disagree ({urls['bridge_url']!r} vs {urls['url']!r}); give only one"
            )
        if urls:
            values["bridge_url"] = next(iter(urls.values()))
    return values
