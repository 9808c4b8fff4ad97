"""The 10 s twin of `make soak` (scripts/soak.py --seconds 60 --workers 500).

100 pyiii SDK workers on one loop do mixed state operations, cross-worker
calls (some calling state from inside the handler) and shared-counter
increments while five of them hold `state` triggers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_10s_100_workers(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--seconds",
            "10",
            "--workers",
            "100",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    print("\n" + run.stdout)
    assert out.exists(), run.stdout + run.stderr
    summary = json.loads(out.read_text())
    # Zero errors: every operation answered as expected, no connection lost, no engine warning.
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["engine_warnings"] == [], summary["engine_warnings"]
    assert (
        summary["operations"] > 1000 and summary["trigger_events"] > 0 and summary["nested_state_calls"] > 0
    )
    # No lost update: the shared counter is exactly the acknowledged increments.
    assert summary["counter"]["stored"] == summary["counter"]["acknowledged_increments"]
    # No leak: once everyone left, the engine's tables are empty.
    after = summary["stats_after"]
    assert after["connections"] == 1  # the script's own probe
    assert after["functions"] == after["pending"] == after["triggers"] == after["tasks"] == 0, after
    # Memory is flat after warm-up.
    rss = summary["rss_kib"]
    assert rss["end"] <= rss["after_warmup"] + rss["allowed_growth"], rss
    assert summary["engine_exit_code"] == 0
    assert summary["failed"] == [] and run.returncode == 0, summary["failed"]
