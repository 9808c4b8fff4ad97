"""The iii-queue config block: defaults, both shapes, and errors that say what to fix."""

from __future__ import annotations

import pytest

from pyiii.config import parse_config
from pyiii.errors import ConfigError
from pyiii.modules.queue.config import QueueConfig, QueueSettings


def queue(text: str) -> QueueConfig:
    config = parse_config(text, source="iii-config.yaml", environ={"REDIS_URL": "redis://r:6380"})
    found = config.module_config("iii-queue")
    assert isinstance(found, QueueConfig)
    return found


def test_defaults_and_the_always_present_default_queue() -> None:
    cfg = queue("workers:\n  - name: queue\n")
    assert cfg == QueueConfig()
    assert cfg.queues == {"default": QueueSettings()}
    d = cfg.queues["default"]
    assert (d.max_retries, d.concurrency, d.type) == (3, 10, "standard")
    assert (d.backoff_ms, d.poll_interval_ms) == (1000, 100)
    assert cfg.adapter == "builtin" and cfg.store_method == "in_memory" and cfg.synchronous == "full"
    normal = "adapter: {name: builtin, config: {store_method: file_based, synchronous: normal}}"
    assert queue(f"workers:\n  - name: iii-queue\n    config: {{{normal}}}\n").synchronous == "normal"


def test_the_reference_sample_config() -> None:
    cfg = queue(
        """\
workers:
  - name: iii-queue
    config:
      queue_configs:
        default: {max_retries: 5, concurrency: 5, type: standard}
        payment:
          max_retries: 10
          concurrency: 2
          type: fifo
          message_group_field: transaction_id
      adapter:
        name: builtin
        config: {store_method: file_based, file_path: ./data/queue_store}
"""
    )
    assert cfg.queues["default"] == QueueSettings(max_retries=5, concurrency=5)
    assert cfg.queues["payment"] == QueueSettings(
        max_retries=10, concurrency=2, type="fifo", message_group_field="transaction_id"
    )
    assert (cfg.store_method, cfg.file_path) == ("file_based", "./data/queue_store")


def test_old_shape_and_redis_with_env() -> None:
    cfg = queue(
        """\
modules:
  - class: modules::queue::QueueModule
    config:
      adapter:
        class: modules::queue::RedisAdapter
        config: {redis_url: "${REDIS_URL:redis://localhost:6379}", visibility_timeout_ms: 5000}
"""
    )
    assert (cfg.adapter, cfg.redis_url, cfg.visibility_timeout_ms) == ("redis", "redis://r:6380", 5000)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("queue_configs: {p: {type: fifo}}", "queue 'p' is fifo but has no message_group_field"),
        ("queue_configs: {p: {type: lifo}}", "unknown queue type 'lifo'"),
        ("queue_configs: {p: {concurrency: 0}}", "queue_configs.p.concurrency: 0 is out of range"),
        ("queue_configs: {p: {max_retrys: 2}}", "did you mean 'max_retries'?"),
        ("queue_configs: {p: 3}", "expected a mapping of queue settings"),
        ("adapter: {name: rabbit}", "unknown Queue adapter 'rabbit'"),
        ("adapter: {name: redis, config: {redis_url: 'http://x'}}", "valid schemes"),
        ("adapter: {name: builtin, config: {store_method: disk}}", "unknown store_method 'disk'"),
        ("adapter: {name: builtin, config: {synchronous: off}}", "unknown synchronous 'off'"),
        ("adapter: {name: redis, config: {key_prefix: 'a{b}'}}", "must not contain braces"),
        ("port: 3111", "unknown key 'port'"),
    ],
)
def test_bad_config_names_what_to_fix(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match="iii-queue") as err:
        queue(f"workers:\n  - name: iii-queue\n    config: {{{body}}}\n")
    assert message in str(err.value)


def test_listing_both_names_is_an_error() -> None:
    with pytest.raises(ConfigError):
        queue("workers:\n  - name: iii-queue\n  - name: queue\n")
