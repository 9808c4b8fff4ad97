"""The Streams module's config block (``iii-stream`` / ``modules::stream::StreamModule``)."""

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
    "modules::stream::adapters::KvStore": "kv",
    "modules::stream::adapters::RedisAdapter": "redis",
    "modules::stream::adapters::BridgeAdapter": "bridge",
}

DEFAULT_PORT = 3112
DEFAULT_HOST = "127.0.0.1"
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
    chosen = read_adapter(block, "Stream", ADAPTER_NAMES, ADAPTER_CLASSES, _ADAPTER_KEYS)
    if chosen is not None:
        values.update(_adapter(*chosen))
    return StreamConfig(**values)  # type: ignore[arg-type]


def _adapter(adapter: AdapterName, cfg: Block) -> dict[str, object]:
    values = store_adapter(adapter, cfg, DEFAULT_FILE_PATH)
    if adapter == "kv":
        # Accepted for the reference's configs; checked, without effect here.
        for key in ("save_interval_ms", "channel_size"):
            if key in cfg:
                cfg.opt_int(key, minimum=1)
    return values
