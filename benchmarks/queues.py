"""The queue: publish -> subscribed handler done, per store, against arq on the same Redis.

Rows (run.py, section ``queue``): one call = ``publish`` of a small message to a topic
plus the wait until the subscribed handler (a pyiii SDK worker in the load-generator
process, subscription ``concurrency`` 64) has run for it; engines with the ``in_memory``,
``file_based`` and ``redis`` stores, 1 and 64 in flight, measured in alternating windows.
Baseline: arq 0.28 (``arq_baseline.py``, its own venv ``.compat/bench-arq``) running the
same no-op jobs on the same redis-server, right after, in the same run.

    python benchmarks/queues.py       # = run.py --only queue (not queue.py: that would shadow the stdlib)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Row, Target, engine, free_port, measure_interleaved, progress, run, with_ratio

STORES = ("in_memory", "file_based", "redis")
INFLIGHTS = (1, 64)
_ADAPTER = {
    "in_memory": "{name: builtin, config: {store_method: in_memory}}",
    "file_based": "{name: builtin, config: {store_method: file_based, file_path: ./data/queue}}",
    "redis": "{{name: redis, config: {{redis_url: '{url}'}}}}",
}
CONFIG = "workers:\n  - name: iii-queue\n    config:\n      adapter: {adapter}\n"
MESSAGE = {"id": 0, "kind": "order.created", "total": 42.5}


def queue_name(store: str, n: int) -> str:
    return f"queue publish -> handler done, {store}, {n} in flight"


def arq_name(n: int) -> str:
    return f"arq enqueue_job -> no-op job done (same redis-server), {n} in flight"


def arq_python() -> Path:
    import os

    compat = Path(os.environ.get("III_COMPAT_DIR") or ROOT / ".compat")
    return compat / "bench-arq" / "bin" / "python"


async def _measure(
    servers: dict[str, tuple[str, int]], redis_pid: int | None, seconds: float
) -> dict[str, Row]:
    from pyiii import connect

    waiting: dict[int, asyncio.Future[None]] = {}
    workers = []
    targets: dict[int, list[Target]] = {n: [] for n in INFLIGHTS}
    try:
        for store, (url, pid) in servers.items():
            w = await connect(url, name=f"bench-queue-{store}", invocation_timeout_ms=60_000)
            workers.append(w)
            topic = f"bench.{store}"

            async def handle(data: Any) -> None:
                fut = waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

            w.subscriber(topic, id=f"bench::{store}", queue_config={"concurrency": 64})(handle)
            await w.trigger("engine::functions::list", {})

            async def call(i: int, w: Any = w, topic: str = topic) -> None:
                fut = asyncio.get_running_loop().create_future()
                waiting[i] = fut
                await w.publish(topic, {**MESSAGE, "id": i})
                await fut

            pids = [pid] + ([redis_pid] if store == "redis" and redis_pid else [])
            for n in INFLIGHTS:
                targets[n].append(Target(queue_name(store, n), call, pids))
        rows: dict[str, Row] = {}
        for n in INFLIGHTS:
            progress(f"queue, {n} in flight: {len(targets[n])} rows in alternating windows")
            m = await measure_interleaved(targets[n], inflight=n, seconds=seconds)
            for label, measured in m.items():
                rows[label] = measured.row(label, "queue")
                progress(f"{label}: {measured.ops_per_s:.0f} ops/s, p50 {measured.p50_us:.0f} µs")
        return rows
    finally:
        for w in workers:
            await w.shutdown()


def _arq_rows(port: int, seconds: float) -> dict[str, Row]:
    python = arq_python()
    if not python.exists():
        progress(f"warning: {python} is missing (scripts/install-compat.sh bench-arq); arq rows skipped")
        return {}
    progress("arq baseline on the same redis-server")
    done = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / "arq_baseline.py"), str(port), str(seconds)]
        + [str(n) for n in INFLIGHTS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        progress(f"warning: the arq baseline failed:\n{done.stderr[-2000:]}")
        return {}
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {}
    for n in INFLIGHTS:
        m = measured[str(n)]
        rows[arq_name(n)] = Row(
            arq_name(n), m["ops_per_s"], m["p50_us"], m["p99_us"], section="queue", client_cpu=m["cpu"],
            note="arq Worker(max_jobs=64, poll_delay=1 ms, keep_result=0) in the load process",
        )
        progress(f"{arq_name(n)}: {m['ops_per_s']:.0f} ops/s, p50 {m['p50_us']:.0f} µs")
    return rows


def queue_rows(seconds: float) -> list[Row]:
    from redis_baseline import redis_server

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        redis = stack.enter_context(redis_server())
        assert redis.proc is not None
        servers: dict[str, tuple[str, int]] = {}
        for store in STORES:
            port = free_port()
            (tmp / store).mkdir()
            adapter = _ADAPTER[store].format(url=redis.url) if store == "redis" else _ADAPTER[store]
            proc = stack.enter_context(engine(port, tmp / store, CONFIG.format(adapter=adapter)))
            servers[store] = (f"ws://127.0.0.1:{port}", proc.pid)
        measured = run(_measure(servers, redis.proc.pid, seconds))
        assert isinstance(measured, dict)
        measured.update(_arq_rows(redis.port, seconds))
    rows: list[Row] = []
    for n in INFLIGHTS:
        rows.append(measured[queue_name("in_memory", n)])
        rows.append(with_ratio(measured[queue_name("file_based", n)], measured[queue_name("in_memory", n)]))
        arq = measured.get(arq_name(n))
        if arq is not None:
            rows.append(arq)
            rows.append(with_ratio(measured[queue_name("redis", n)], arq))
        else:
            rows.append(measured[queue_name("redis", n)])
    return rows


def main() -> None:
    import argparse

    from common import print_rows

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print_rows("queue", queue_rows(args.seconds))


if __name__ == "__main__":
    main()
