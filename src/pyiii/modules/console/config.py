"""The console module's config block (``iii-console`` / ``console``)."""

from __future__ import annotations

from dataclasses import dataclass

from pyiii.config.values import Block

DEFAULT_PORT = 3113
DEFAULT_HOST = "127.0.0.1"
_KEYS = ("host", "port", "metrics", "sample_interval_ms", "log_buffer", "invoke_timeout_ms")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleConfig:
    """Where the console listens and what it keeps.

    ``metrics`` turns recording on (``/metrics`` answers either way, with
    zero counts when off); ``sample_interval_ms`` is how old the sampled
    figures (keys per scope, queue depths) may get before a scrape re-reads
    them; ``log_buffer`` is how many recent log lines the log page starts
    with; ``invoke_timeout_ms`` bounds a call made from the console.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    metrics: bool = True
    sample_interval_ms: int = 10_000
    log_buffer: int = 2000
    invoke_timeout_ms: int = 30_000


def parse(block: Block) -> ConsoleConfig:
    """Validate a console ``config:`` block."""
    block.keys(_KEYS)
    return ConsoleConfig(
        host=block.str("host", DEFAULT_HOST),
        port=block.int("port", DEFAULT_PORT, minimum=0, maximum=65535),
        metrics=block.bool("metrics", True),
        sample_interval_ms=block.int("sample_interval_ms", 10_000, minimum=0),
        log_buffer=block.int("log_buffer", 2000, minimum=0, maximum=1_000_000),
        invoke_timeout_ms=block.int("invoke_timeout_ms", 30_000, minimum=1),
    )
