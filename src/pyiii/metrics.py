"""Engine metrics: cheap recording on the hot path, Prometheus exposition at scrape time.

Recording is plain Python arithmetic on dicts and lists (an invocation costs
one ``bisect`` and three increments); nothing of ``prometheus_client`` runs
per call. At scrape time :class:`EngineCollector` turns the counts into
metric families and ``prometheus_client`` writes the text format.

The engine holds ``engine.metrics``: ``None`` when no module asked for
metrics (every hook is then one ``is None`` test), a :class:`Recorder`
when the console module is loaded with metrics on.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

# Latency bucket upper bounds in seconds: in-process built-ins answer in
# microseconds, worker round trips in tens of microseconds to seconds.
BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# Distinct function ids / HTTP routes kept apart; more share the label "other",
# so a flood of one-off ids cannot grow the exposition without bound.
MAX_SERIES = 2000
OTHER = "other"


# One function's figures, a plain list so that recording is a few index increments:
# [ok count, error count, total seconds, bucket 0, ..., bucket n, +Inf bucket].
OK, ERRORS, TOTAL_S, FIRST_BUCKET = 0, 1, 2, 3
STATS_LEN = FIRST_BUCKET + len(BUCKETS) + 1


@dataclass
class Samples:
    """Values read from modules now and then (not per call): keys per scope, queues."""

    taken_at: float = 0.0
    scope_keys: dict[str, int] = field(default_factory=dict)
    scopes_total: int = 0
    queues: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> depth, dead, consumers


class Recorder:
    """What the engine and modules record while running."""

    def __init__(self) -> None:
        self.functions: dict[str, list[Any]] = {}
        self.http: dict[tuple[str, str, int], int] = {}  # (method, route, status) -> count
        self.samples = Samples()
        self.started = time.time()
        # (function id prefix, label) -> adapter label, set by modules that own functions.
        self.adapters: dict[str, str] = {}

    def invocation(
        self,
        function_id: str,
        ok: bool,
        seconds: float,
        _bucket: Callable[[tuple[float, ...], float], int] = bisect.bisect_left,
    ) -> None:
        """One finished invocation (``ok``: it returned a result, not an error).

        The hot path: about a quarter of a microsecond, no lock (the engine
        records from its event loop only), no prometheus_client call.
        """
        stats = self.functions.get(function_id)
        if stats is None:
            stats = self._new_function(function_id)
        stats[OK if ok else ERRORS] += 1
        stats[TOTAL_S] += seconds
        stats[FIRST_BUCKET + _bucket(BUCKETS, seconds)] += 1

    def _new_function(self, function_id: str) -> list[Any]:
        if len(self.functions) >= MAX_SERIES:
            function_id = OTHER
        return self.functions.setdefault(function_id, [0, 0, 0.0] + [0] * (len(BUCKETS) + 1))

    def http_request(self, method: str, route: str, status: int) -> None:
        """One answered HTTP request on the HTTP module (``route`` is its pattern, not the path)."""
        key = (method, route, status)
        count = self.http.get(key)
        if count is None and len(self.http) >= MAX_SERIES:
            key = (method, OTHER, status)
            count = self.http.get(key)
        self.http[key] = (count or 0) + 1

    def adapter_of(self, function_id: str) -> str:
        for prefix, adapter in self.adapters.items():
            if function_id.startswith(prefix):
                return adapter
        return ""


class EngineCollector(Collector):
    """Metric families from a :class:`Recorder` and live engine figures."""

    def __init__(self, recorder: Recorder, live: Callable[[], dict[str, int]]) -> None:
        self.recorder = recorder
        self.live = live  # connected workers, functions, ... read at scrape time

    def collect(self) -> Iterator[Metric]:
        rec = self.recorder
        calls = CounterMetricFamily(
            "pyiii_invocations",
            "Function invocations by function and outcome",
            labels=["function", "outcome"],
        )
        latency = HistogramMetricFamily(
            "pyiii_invocation_duration_seconds", "Invocation latency by function", labels=["function"]
        )
        state_ops = CounterMetricFamily(
            "pyiii_state_operations",
            "State operations by function and adapter",
            labels=["function", "adapter", "outcome"],
        )
        bounds = [*(repr(b) for b in BUCKETS), "+Inf"]
        for function_id, stats in sorted(rec.functions.items()):
            ok, errors = stats[OK], stats[ERRORS]
            calls.add_metric([function_id, "ok"], ok)
            calls.add_metric([function_id, "error"], errors)
            cumulative, running = [], 0
            for bound, count in zip(bounds, stats[FIRST_BUCKET:], strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([function_id], cumulative, stats[TOTAL_S])
            if function_id.startswith("state::"):
                adapter = rec.adapter_of(function_id)
                state_ops.add_metric([function_id, adapter, "ok"], ok)
                state_ops.add_metric([function_id, adapter, "error"], errors)
        yield calls
        yield latency
        yield state_ops

        live = self.live()
        for name, doc in (
            ("workers", "Connected workers"),
            ("functions", "Registered functions (workers' and built-in)"),
            ("pending_invocations", "Invocations routed to workers and not answered yet"),
            ("triggers", "Registered triggers"),
        ):
            gauge = GaugeMetricFamily(f"pyiii_{name}", doc)
            gauge.add_metric([], live.get(name, 0))
            yield gauge

        samples = rec.samples
        keys = GaugeMetricFamily(
            "pyiii_state_keys", "Keys per state scope (sampled; the largest scopes)", labels=["scope"]
        )
        for scope, count in sorted(samples.scope_keys.items()):
            keys.add_metric([scope], count)
        yield keys
        scopes = GaugeMetricFamily("pyiii_state_scopes", "State scopes holding at least one key (sampled)")
        scopes.add_metric([], samples.scopes_total)
        yield scopes
        depth = GaugeMetricFamily(
            "pyiii_queue_depth", "Messages waiting per queue or topic", labels=["queue"]
        )
        dead = GaugeMetricFamily(
            "pyiii_queue_dead_letters", "Dead letters per queue or topic", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "pyiii_queue_consumers", "Consumers per queue or topic", labels=["queue"]
        )
        for name, (waiting, dead_count, consumer_count) in sorted(samples.queues.items()):
            depth.add_metric([name], waiting)
            dead.add_metric([name], dead_count)
            consumers.add_metric([name], consumer_count)
        yield depth
        yield dead
        yield consumers

        http = CounterMetricFamily(
            "pyiii_http_requests",
            "HTTP requests by method, route and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(rec.http.items()):
            http.add_metric([method, route, str(status)], count)
        yield http
        uptime = GaugeMetricFamily("pyiii_uptime_seconds", "Seconds since metrics recording started")
        uptime.add_metric([], time.time() - rec.started)
        yield uptime


def registry_for(recorder: Recorder, live: Callable[[], dict[str, int]]) -> CollectorRegistry:
    """A registry of its own per engine (several engines may run in one test process)."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(recorder, live))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text format body and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


def timer() -> float:
    """The clock invocations are timed with."""
    return time.perf_counter()

