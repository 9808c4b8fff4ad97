"""Figures read now and then for ``/metrics``: keys per scope and queue depths.

They cost a call per scope or queue, so they are read at scrape time only
when the last reading is older than ``sample_interval_ms`` and only for the
``MAX_SCOPES`` largest-named-first scopes; nothing runs between scrapes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from pyiii.errors import IIIError

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine
    from pyiii.metrics import Recorder

log = logging.getLogger("pyiii.console")
MAX_SCOPES = 200  # scopes whose keys are counted per sample
MAX_QUEUES = 200
SAMPLE_TIMEOUT_S = 2.0


async def _call(engine: Engine, function_id: str, data: Any) -> Any:
    raw = await engine.call_within(SAMPLE_TIMEOUT_S, function_id, data)
    return None if raw is None else msgspec.json.decode(raw)


def has(engine: Engine, function_id: str) -> bool:
    return ("default", function_id) in engine.functions


async def scope_counts(engine: Engine, limit: int | None = None) -> tuple[list[tuple[str, int]], int]:
    """(scope, key count) for the first ``limit`` scopes by name, and how many scopes there are."""
    groups = (await _call(engine, "state::list_groups", {}) or {}).get("groups", [])
    names = [g for g in groups if isinstance(g, str)]
    out = []
    for scope in names[:limit] if limit is not None else names:
        counted = await _call(engine, "state::count", {"scope": scope})
        out.append((scope, int(counted.get("count", 0)) if isinstance(counted, dict) else 0))
    return out, len(names)


async def refresh(engine: Engine, recorder: Recorder, max_age_s: float) -> None:
    """Re-read the sampled figures if they are older than ``max_age_s``; failures leave the old ones."""
    samples = recorder.samples
    now = time.monotonic()
    if samples.taken_at and now - samples.taken_at < max_age_s:
        return
    samples.taken_at = now
    state = engine.services.get("iii-state")
    if state is not None:
        recorder.adapters["state::"] = str(getattr(state, "adapter_label", ""))
    try:
        if has(engine, "state::list_groups") and has(engine, "state::count"):
            counts, total = await scope_counts(engine, MAX_SCOPES)
            samples.scope_keys = dict(counts)
            samples.scopes_total = total
        if has(engine, "engine::queue::list_topics") and has(engine, "engine::queue::topic_stats"):
            queues: dict[str, tuple[int, int, int]] = {}
            topics = await _call(engine, "engine::queue::list_topics", {}) or []
            for topic in topics[:MAX_QUEUES]:
                name = topic.get("name") if isinstance(topic, dict) else None
                if not isinstance(name, str):
                    continue
                stats = await _call(engine, "engine::queue::topic_stats", {"topic": name}) or {}
                queues[name] = (
                    int(stats.get("depth", 0)),
                    int(stats.get("dlq_depth", 0)),
                    int(stats.get("consumer_count", 0)),
                )
            samples.queues = queues
    except (IIIError, TimeoutError, msgspec.DecodeError, ValueError, TypeError) as exc:
        log.warning("metrics: sampling state and queues failed: %s", exc)
