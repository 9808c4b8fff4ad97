"""The Cron module's config block (``iii-cron`` / ``modules::cron::CronModule``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyiii.config.values import REDIS_SCHEMES, Block, found

AdapterName = Literal["kv", "redis"]

ADAPTER_NAMES: dict[str, AdapterName] = {"kv": "kv", "redis": "redis"}
ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::cron::KvCronAdapter": "kv",
    "modules::cron::RedisCronAdapter": "redis",
}
STORE_METHODS = {"in_memory": "in_memory", "file_based": "file_based"}

DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_LOCK_TTL_MS = 30_000
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
    if "adapter" not in block:
        return CronConfig()
    if not isinstance(block.get("adapter"), dict):
        block.fail(
            f"expected a mapping like {{name: redis, config: {{redis_url: ...}}}}, found "
            f"{found(block.get('adapter'))}; valid adapter names: kv, redis",
            "adapter",
        )
    spec = block.block("adapter")
    spec.keys(("name", "class", "config"))
    if "name" in spec and "class" in spec:
        spec.fail("has both 'name' and 'class'; use one")
    adapter: AdapterName
    if "class" in spec:
        adapter = spec.choice("class", "kv", ADAPTER_CLASSES, kind="Cron adapter class")
    elif "name" in spec:
        adapter = spec.choice("name", "kv", ADAPTER_NAMES, kind="Cron adapter")
    else:
        spec.fail("adapter has no 'name'; valid: {name: kv|redis, config: {...}}")
    cfg = spec.block("config")
    cfg.keys(_ADAPTER_KEYS[adapter])
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
