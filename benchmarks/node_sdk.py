"""The official Node iii-sdk as the client: state::get at 64 in flight.

Baseline: the same SDK client against a bare Node ``ws`` echo server
(node/echo_server.mjs), i.e. the Node client's own ceiling. The load
generator is node/client.mjs, one Node process measuring both targets in
alternating windows; it needs ``scripts/install-compat.sh node-0.22``.

    python benchmarks/node_sdk.py      # = run.py --only node
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Row, cpu_seconds, engine, free_port, process, progress, run, section_main, with_ratio
from state import CONFIGS, SCOPE, seed

NODE_DIR = Path(__file__).resolve().parent / "node"
SDK_DIR = ROOT / ".compat" / "node-0.22"
SECTION = "official Node iii-sdk client"
INSTALL = "scripts/install-compat.sh node-0.22"


def missing() -> str | None:
    """Why the Node rows cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (SDK_DIR / "node_modules" / "iii-sdk").is_dir() or not (SDK_DIR / "sdk.mjs").exists():
        return f"iii-sdk 0.22 is not installed: run {INSTALL}"
    return None


def _drive(spec: dict[str, object], pids: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """Run node/client.mjs; per label: its result plus the servers' CPU during its windows."""
    env = {**os.environ, "III_NODE_SDK": str(SDK_DIR)}
    proc = subprocess.Popen(
        ["node", str(NODE_DIR / "client.mjs"), json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    server_cpu = dict.fromkeys(pids, 0.0)
    started: dict[str, list[float]] = {}
    results: dict[str, dict[str, float]] = {}
    fatal = None
    for line in proc.stdout:
        msg = json.loads(line)
        if "start" in msg:
            started[msg["start"]] = [cpu_seconds(p) for p in pids[msg["start"]]]
        elif "end" in msg:
            label = msg["end"]
            server_cpu[label] += sum(
                cpu_seconds(p) - c for p, c in zip(pids[label], started[label], strict=True)
            )
        elif "result" in msg:
            results[msg["result"]] = msg
        elif "fatal" in msg:
            fatal = msg["fatal"]
    _, err = proc.communicate(timeout=30)
    if fatal or len(results) != len(pids):
        raise RuntimeError(f"node client failed: {fatal or ''}\n{err[-2000:]}")
    for label, res in results.items():
        # The Node client reports time per label; windows add up to spec["seconds"].
        res["server_cpu"] = server_cpu[label] / float(spec["seconds"])  # type: ignore[arg-type]
    return results


def node_rows(seconds: float, inflight: int = 64) -> list[Row]:
    why = missing()
    if why is not None:
        progress(f"Node rows skipped: {why}")
        return [Row(f"Node iii-sdk state::get in_memory, {inflight} in flight", None, None, None,
                    section=SECTION, note=f"skipped: {why}")]
    echo_port, engine_port = free_port(), free_port()
    echo_args = ["node", str(NODE_DIR / "echo_server.mjs"), str(echo_port)]
    base = f"Node iii-sdk client <-> bare Node ws echo, {inflight} in flight"
    name = f"Node iii-sdk state::get in_memory, {inflight} in flight"
    progress(f"{base} / {name}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        engine(engine_port, Path(tmp), CONFIGS["in_memory"]) as eng,
        process(echo_args, "node echo ready", cwd=ROOT, env={"III_NODE_SDK": str(SDK_DIR)}) as echo,
    ):
        url = f"ws://127.0.0.1:{engine_port}"
        run(_seed(url))
        spec = {
            "targets": [
                {"label": "echo", "url": f"ws://127.0.0.1:{echo_port}"},
                {"label": "engine", "url": url},
            ],
            "function_id": "state::get",
            "payload": {"scope": SCOPE, "key": "k1"},
            "inflight": inflight,
            "seconds": seconds,
            "rounds": 4,
            "warmup": 0.5,
        }
        res = _drive(spec, {"echo": [echo.pid], "engine": [eng.pid]})
    rows = []
    for label, row_name in (("echo", base), ("engine", name)):
        r = res[label]
        rows.append(
            Row(row_name, r["ops_per_s"], r["p50_us"], r["p99_us"], section=SECTION,
                server_cpu=r["server_cpu"], client_cpu=r["client_cpu"])
        )
    with_ratio(rows[1], rows[0])
    for r in rows:
        progress(f"{r.name}: {r.ops_per_s:.0f} ops/s, p50 {r.p50_us:.0f} µs")
    return rows


async def _seed(url: str) -> None:
    from pyiii import connect

    worker = await connect(url, name="bench-seed")
    try:
        await seed(worker)
    finally:
        await worker.shutdown()


def main() -> None:
    section_main("node", __doc__)


if __name__ == "__main__":
    main()
