"""The Queue module's config block (``iii-queue`` / ``modules::queue::QueueModule``).

```yaml
- name: iii-queue
  config:
    queue_configs:            # named queues; `default` always exists
      payments: {max_retries: 10, concurrency: 2, type: fifo, message_group_field: account}
    adapter:
      name: builtin           # builtin | redis
      config: {store_method: file_based, file_path: ./data/queue_store}  # synchronous: full | normal
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pyiii.config.adapters import DEFAULT_REDIS_URL, STORE_METHODS, StoreMethod, read_adapter
from pyiii.config.values import REDIS_SCHEMES, Block, found

AdapterName = Literal["builtin", "redis"]
Synchronous = Literal["full", "normal"]
QueueType = Literal["standard", "fifo"]

DEFAULT_QUEUE = "default"

ADAPTER_NAMES: dict[str, AdapterName] = {"builtin": "builtin", "redis": "redis"}
ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::queue::BuiltinQueueAdapter": "builtin",
    "modules::queue::RedisAdapter": "redis",
}
SYNCHRONOUS: dict[str, Synchronous] = {"full": "full", "normal": "normal"}
QUEUE_TYPES: dict[str, QueueType] = {"standard": "standard", "fifo": "fifo"}

_KEYS = ("queue_configs", "adapter")
_QUEUE_KEYS = (
    "max_retries",
    "concurrency",
    "type",
    "message_group_field",
    "backoff_ms",
    "poll_interval_ms",
    "handler_timeout_ms",
    # RabbitMQ-only in the reference; accepted and ignored.
    "max_priority",
    "priority_field",
)
_ADAPTER_KEYS: dict[AdapterName, tuple[str, ...]] = {
    "builtin": ("store_method", "file_path", "save_interval_ms", "synchronous"),
    "redis": ("redis_url", "visibility_timeout_ms", "key_prefix"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """How one named queue delivers (a ``queue_configs`` entry).

    ``max_retries`` is the number of deliveries before a message goes to the
    dead-letter queue (the reference's meaning: 3 = one try and two retries;
    0 counts as 1).
    A failure is retried after ``backoff_ms * 2^(attempt-1)``. ``concurrency``
    bounds the handlers of this queue running at once on one engine; a
    ``fifo`` queue runs one message per ``message_group_field`` value at a time,
    in publish order, and up to ``concurrency`` groups side by side.
    ``handler_timeout_ms`` (pyiii): a handler that has not answered by then
    counts as failed. ``poll_interval_ms``: how often a consumer looks for due
    retries (new messages wake it at once).
    """

    max_retries: int = 3
    concurrency: int = 10
    type: QueueType = "standard"
    message_group_field: str | None = None
    backoff_ms: int = 1000
    poll_interval_ms: int = 100
    handler_timeout_ms: int = 30_000

    def describe(self) -> dict[str, Any]:
        """The settings as the management functions show them."""
        out: dict[str, Any] = {
            "max_retries": self.max_retries,
            "concurrency": self.concurrency,
            "type": self.type,
            "backoff_ms": self.backoff_ms,
            "poll_interval_ms": self.poll_interval_ms,
            "handler_timeout_ms": self.handler_timeout_ms,
        }
        if self.message_group_field is not None:
            out["message_group_field"] = self.message_group_field
        return out


def _default_queues() -> dict[str, QueueSettings]:
    return {DEFAULT_QUEUE: QueueSettings()}


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """Configuration of the Queue module.

    ``queues`` always holds ``default`` (an explicit entry replaces its
    settings). ``visibility_timeout_ms`` (redis): how long a message taken by
    an engine stays invisible to the others without that engine renewing its
    lease; after an engine dies its messages are delivered by another one
    that much later. ``synchronous`` (file_based): ``full`` fsyncs every
    commit before a publish is acknowledged (it survives a power cut);
    ``normal`` does not (it survives ``kill -9`` of the engine, not a crash
    of the machine) and is faster where fsync is slow.
    """

    queues: Mapping[str, QueueSettings] = field(default_factory=_default_queues)
    adapter: AdapterName = "builtin"
    store_method: StoreMethod = "in_memory"
    file_path: str = "./data/queue_store"
    synchronous: Synchronous = "full"
    redis_url: str = DEFAULT_REDIS_URL
    visibility_timeout_ms: int = 30_000
    key_prefix: str = "pyiii"


def parse(block: Block) -> QueueConfig:
    """Validate a Queue ``config:`` block."""
    block.keys(_KEYS)
    values: dict[str, Any] = {}
    queues = _default_queues()
    qblock = block.block("queue_configs")
    for name in qblock.data:
        if not name.strip():
            qblock.fail("queue names must not be empty")
        raw = qblock.get(name)
        if raw is not None and not isinstance(raw, dict):
            qblock.fail(f"expected a mapping of queue settings, found {found(raw)}", name)
        queues[name] = _queue(qblock.block(name), name)
    values["queues"] = queues
    chosen = read_adapter(block, "Queue", ADAPTER_NAMES, ADAPTER_CLASSES, _ADAPTER_KEYS)
    if chosen is not None:
        values.update(_adapter(*chosen))
    return QueueConfig(**values)


def _queue(q: Block, name: str) -> QueueSettings:
    q.keys(_QUEUE_KEYS)
    kind = q.choice("type", "standard", QUEUE_TYPES, kind="queue type")
    group_field = q.opt_str("message_group_field")
    if kind == "fifo" and group_field is None:
        q.fail(
            f"queue '{name}' is fifo but has no message_group_field; name the field of the"
            " message whose value orders it (e.g. message_group_field: account_id)"
        )
    return QueueSettings(
        max_retries=q.int("max_retries", 3, minimum=0),
        concurrency=q.int("concurrency", 10, minimum=1, maximum=10_000),
        type=kind,
        message_group_field=group_field,
        backoff_ms=q.int("backoff_ms", 1000, minimum=0),
        poll_interval_ms=q.int("poll_interval_ms", 100, minimum=1),
        handler_timeout_ms=q.int("handler_timeout_ms", 30_000, minimum=1),
    )


def _adapter(adapter: AdapterName, cfg: Block) -> dict[str, object]:
    values: dict[str, object] = {"adapter": adapter}
    if adapter == "builtin":
        values["store_method"] = cfg.choice("store_method", "in_memory", STORE_METHODS)
        if "file_path" in cfg:
            values["file_path"] = cfg.str("file_path", "./data/queue_store")
        values["synchronous"] = cfg.choice("synchronous", "full", SYNCHRONOUS)
    else:
        values["redis_url"] = cfg.url("redis_url", DEFAULT_REDIS_URL, REDIS_SCHEMES)
        values["visibility_timeout_ms"] = cfg.int("visibility_timeout_ms", 30_000, minimum=100)
        prefix = cfg.str("key_prefix", "pyiii")
        if "{" in prefix or "}" in prefix:
            cfg.fail("must not contain braces (they would move the Redis hash tag)", "key_prefix")
        values["key_prefix"] = prefix
    return values
