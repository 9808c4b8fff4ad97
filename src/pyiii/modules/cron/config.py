"""The Cron module's config block (``iii-cron`` / ``modules::cron::CronModule``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyiii.config.adapters import DEFAULT_REDIS_URL, STORE_METHODS, read_adapter
from pyiii.config.values import REDIS_SCHEMES, Block

AdapterName = Literal["kv", "redis"]

ADAPTER_NAMES: dict[str, AdapterName] = {"kv": "kv", "redis": "redis"}
ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::cron::KvCronAdapter": "kv",
    "modules::cron::RedisCronAdapter": "redis",
}

DEFAULT_LOCK_TTL_MS = 30_000
_EXAMPLE = "{name: redis, config: {redis_url: ...}}"  # shown when adapter: is not a mapping
_ADAPTER_KEYS: dict[AdapterName, tuple[str, ...]] = {
    "kv": ("lock_ttl_ms", "lock_index", "store_method", "file_path", "save_interval_ms"),
    "redis": ("redis_url", "lock_ttl_ms"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CronConfig:
    """Configuration of the Cron module.

    ``lock_ttl_ms`` bounds how long one run holds its job's lock (and how
    late a tick may still start, see ``module.py``). ``lock_index`` names the
    kv adapter's lock table. ``store_method``/``file_path``/``save_interval_ms``
    are accepted for configs written for the reference; pyiii's kv locks live
    in memory because they only matter while the engine runs.
    """

    adapter: AdapterName = "kv"
    lock_ttl_ms: int = DEFAULT_LOCK_TTL_MS
    lock_index: str = "cron_locks"
    redis_url: str = DEFAULT_REDIS_URL


def parse(block: Block) -> CronConfig:
    """Validate a Cron ``config:`` block."""
    block.keys(("adapter",))
    chosen = read_adapter(block, "Cron", ADAPTER_NAMES, ADAPTER_CLASSES, _ADAPTER_KEYS, example=_EXAMPLE)
    if chosen is None:
        return CronConfig()
    adapter, cfg = chosen
    values: dict[str, object] = {
        "adapter": adapter,
        # At least a second: a shorter lock could expire while a run is being
        # started, and the lock is also the window in which a late tick may run.
        "lock_ttl_ms": cfg.int("lock_ttl_ms", DEFAULT_LOCK_TTL_MS, minimum=1000, maximum=86_400_000),
    }
    if adapter == "kv":
        values["lock_index"] = cfg.str("lock_index", "cron_locks")
        cfg.choice("store_method", "in_memory", STORE_METHODS)
        cfg.opt_str("file_path")
        cfg.opt_int("save_interval_ms", minimum=0)
    else:
        values["redis_url"] = cfg.url("redis_url", DEFAULT_REDIS_URL, REDIS_SCHEMES)
    return CronConfig(**values)  # type: ignore[arg-type]
