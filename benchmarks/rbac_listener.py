"""state::get through an RBAC listener vs the same call through the internal one.

One engine (in_memory state) with two listeners: the internal one, and an
RBAC one with an auth function (served by a worker on the internal
listener) and expose_functions filters (a match() glob and a metadata
filter). Two clients in the same process, one per listener, measured in
alternating windows at 64 in flight. The ratio is what the per-call access
check costs. Target: >= 0.9x.

    python benchmarks/rbac_listener.py      # = run.py --only rbac
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Row,
    Target,
    engine,
    free_port,
    measure_interleaved,
    progress,
    run,
    section_main,
    with_ratio,
)
from state import seed, state_calls

SECTION = "rbac listener"
INFLIGHT = 64
CONFIG = """\
workers:
  - name: iii-worker-manager
  - name: iii-worker-manager
    config:
      port: {public}
      rbac:
        auth_function_id: bench::auth
        expose_functions:
          - match("api::*")
          - match("state::*")
          - metadata: {{public: true}}
  - name: iii-state
    config:
      adapter: {{name: kv, config: {{store_method: in_memory}}}}
"""


def internal_name(n: int) -> str:
    return f"state::get in_memory, internal listener, {n} in flight"


def rbac_name(n: int) -> str:
    return f"state::get in_memory, RBAC listener (auth fn + filters), {n} in flight"


async def _rows(url: str, public_url: str, pid: int, seconds: float) -> list[Row]:
    from pyiii import connect

    trusted = await connect(url, name="bench-trusted")

    def auth(data: dict[str, Any]) -> Any:
        if data["headers"].get("x-token") != "bench":
            raise PermissionError("bad token")
        return {"allowed_functions": ["api::extra"], "context": {"user": "bench"}}

    trusted.register_function("bench::auth", auth, inline=True)
    await trusted.trigger("engine::functions::list", {})
    internal = await connect(url, name="bench-internal")
    public = await connect(public_url, name="bench-rbac", headers={"x-token": "bench"})
    try:
        await seed(internal)
        names = (internal_name(INFLIGHT), rbac_name(INFLIGHT))
        progress(f"{names[0]} / {names[1]}")
        m = await measure_interleaved(
            [
                Target(names[0], state_calls(internal)["state::get"], [pid]),
                Target(names[1], state_calls(public)["state::get"], [pid]),
            ],
            inflight=INFLIGHT,
            seconds=seconds,
        )
    finally:
        for w in (public, internal, trusted):
            await w.shutdown()
    base = m[names[0]].row(names[0], SECTION)
    rows = [base, with_ratio(m[names[1]].row(names[1], SECTION), base)]
    for r in rows:
        progress(f"{r.name}: {r.ops_per_s:.0f} ops/s, p50 {r.p50_us:.0f} µs")
    return rows


def rbac_rows(seconds: float) -> list[Row]:
    port, public = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, engine(port, Path(tmp), CONFIG.format(public=public)) as eng:
        rows = run(_rows(f"ws://127.0.0.1:{port}", f"ws://127.0.0.1:{public}", eng.pid, seconds))
    assert isinstance(rows, list)
    return rows


def main() -> None:
    section_main("rbac", __doc__)


if __name__ == "__main__":
    main()
