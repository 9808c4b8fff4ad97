"""The ``adapter:`` entry that modules with a choice of backend share.

```yaml
adapter:
  name: redis                     # or class: modules::<module>::RedisAdapter
  config: {redis_url: redis://localhost:6379}
```

:func:`read_adapter` picks the adapter and hands back its ``config:`` block
(unknown keys already refused); a module reads that adapter's own settings.
The readers below are for settings several modules' adapters have in common.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

from pyiii.config.values import REDIS_SCHEMES, WS_SCHEMES, Block, found

A = TypeVar("A", bound=str)

StoreMethod = Literal["in_memory", "file_based"]
STORE_METHODS: dict[str, StoreMethod] = {"in_memory": "in_memory", "file_based": "file_based"}
DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_BRIDGE_URL = "ws://localhost:49134"
# The adapters of a store of State or Streams (each module names its own old-shape classes).
StoreAdapterName = Literal["kv", "redis", "bridge"]
STORE_ADAPTER_NAMES: dict[str, StoreAdapterName] = {"kv": "kv", "redis": "redis", "bridge": "bridge"}


def read_adapter(
    block: Block,
    kind: str,
    names: Mapping[str, A],
    classes: Mapping[str, A],
    keys: Mapping[A, tuple[str, ...]],
    *,
    example: str | None = None,
) -> tuple[A, Block] | None:
    """The adapter ``block`` chooses and its ``config:`` block; ``None`` when it names none.

    ``kind`` names the module in errors ("State"); the first of ``names`` is
    the default; ``keys`` are each adapter's valid ``config:`` keys;
    ``example`` is the mapping shown when ``adapter:`` is not one (default
    ``{name: <default>, config: {...}}``).
    """
    default = next(iter(names.values()))
    if example is None:
        example = f"{{name: {next(iter(names))}, config: {{...}}}}"
    if "adapter" not in block:
        return None
    raw = block.get("adapter")
    if not isinstance(raw, dict):
        block.fail(
            f"expected a mapping like {example}, found {found(raw)}; valid adapter names: {', '.join(names)}",
            "adapter",
        )
    spec = block.block("adapter")
    spec.keys(("name", "class", "config"))
    if "name" in spec and "class" in spec:
        spec.fail("has both 'name' and 'class'; use one")
    adapter: A
    if "class" in spec:
        adapter = spec.choice("class", default, classes, kind=f"{kind} adapter class")
    elif "name" in spec:
        adapter = spec.choice("name", default, names, kind=f"{kind} adapter")
    else:
        spec.fail(f"adapter has no 'name'; valid: {{name: {'|'.join(names)}, config: {{...}}}}")
    cfg = spec.block("config")
    cfg.keys(keys[adapter])
    return adapter, cfg


def store_adapter(adapter: str, cfg: Block, default_file_path: str) -> dict[str, object]:
    """The settings of a data store's ``kv``, ``redis`` or ``bridge`` adapter, as config field values.

    State and Streams keep their data through these three; a module reads any
    setting of its own (``save_interval_ms``...) after this.
    """
    values: dict[str, object] = {"adapter": adapter}
    if adapter == "kv":
        values.update(kv_store(cfg, default_file_path))
    elif adapter == "redis":
        values["redis_url"] = cfg.url("redis_url", DEFAULT_REDIS_URL, REDIS_SCHEMES)
    else:
        url = bridge_url(cfg)
        if url is not None:
            values["bridge_url"] = url
    return values


def kv_store(cfg: Block, default_file_path: str) -> dict[str, object]:
    """``store_method`` and ``file_path`` of a kv adapter, as config field values.

    ``file_path`` is kept as written (a relative path is resolved against the
    directory the engine starts in); it is left out when not given.
    """
    values: dict[str, object] = {"store_method": cfg.choice("store_method", "in_memory", STORE_METHODS)}
    if "file_path" in cfg:
        values["file_path"] = cfg.opt_str("file_path")
    elif values["store_method"] == "file_based":
        # Accepted (the reference has a default too), but where the data goes must not be a surprise.
        cfg.warn(
            f"store_method file_based without file_path: the store is {default_file_path} "
            "(relative to the directory the engine starts in); set file_path to choose",
            "file_path",
        )
    return values


def bridge_url(cfg: Block) -> str | None:
    """A bridge adapter's engine URL, given as ``bridge_url`` or ``url``; ``None`` when neither."""
    urls = {key: cfg.url(key, "", WS_SCHEMES) for key in ("bridge_url", "url") if key in cfg}
    if len(set(urls.values())) > 1:
        cfg.fail(
            f"'url' and 'bridge_url' disagree ({urls['bridge_url']!r} vs {urls['url']!r}); give only one",
            "url",
        )
    return next(iter(urls.values()), None)
