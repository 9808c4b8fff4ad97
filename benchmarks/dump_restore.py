"""``pyiii state dump`` and ``pyiii state restore`` of 1M values: values/s and the CLI's peak RSS.

* Engine A (in_memory) is loaded with N distinct 100-byte JSON values in one
  scope with ``state::set_many`` (``bulk_load._load``; its values/s is the
  baseline of the restore row), plus a small scope of 1,000 values.
* ``pyiii state dump FILE`` runs as a subprocess (the installed entry point,
  no progress bar); its values/s is compared with reading the same pages
  (``state::keys``, 1000 per call, ``with_values``) from this process and
  throwing them away: what the engine and the transport alone allow.
* The CLI's peak RSS (``VmHWM`` of that very child, read while it runs) is
  compared with the peak RSS of dumping the 1,000-value scope alone: the
  ratio is ~1.0 when memory does not grow with the store.
* Engine B (in_memory, empty) gets ``pyiii state restore FILE``; then B is
  dumped again and the two files must be byte-identical.

    python benchmarks/dump_restore.py [--values N]     # = run.py --only dump --dump-values N
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, cpu_seconds, engine, free_port, progress, run

PYIII = str(Path(sys.executable).with_name("pyiii"))
SMALL = 1_000
PAGE = 1000
CONFIG = (
    "workers:\n  - name: iii-state\n    config:\n"
    "      adapter: {name: kv, config: {store_method: in_memory}}\n"
)


def cli(args: list[str]) -> tuple[float, float, float]:
    """Run ``pyiii ARGS``; (seconds, peak RSS in MiB, CPU seconds) of that process."""
    started = time.perf_counter()
    proc = subprocess.Popen([PYIII, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The child's own high-water mark, read from /proc while it runs: ru_maxrss from wait4
    # also counts the memory of this (large) benchmark process the child was forked from.
    peak_kib = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kib = max(peak_kib, _hwm_kib(proc.pid))
        time.sleep(0.01)
    took = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"pyiii {' '.join(args)} exited {proc.returncode}: {err}")
    return took, peak_kib / 1024, usage.ru_utime + usage.ru_stime


def _hwm_kib(pid: int) -> int:
    """VmHWM (peak RSS) of a running process in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _load(url: str, n: int) -> tuple[float, str]:
    from bulk_load import SCOPE
    from bulk_load import _load as load_values
    from pyiii import connect

    worker = await connect(url, name="bench-dump-load")
    try:
        method, _, took = await load_values(worker, n)
        items = [{"key": f"s{i:05d}", "value": {"i": i}} for i in range(SMALL)]
        await worker.trigger("state::set_many", {"scope": "small", "items": items})
        assert (await worker.trigger("state::count", {"scope": SCOPE}))["count"] == n
    finally:
        await worker.shutdown()
    return took, method


async def _read_pages(url: str, scope: str) -> tuple[int, float]:
    """Read every page of ``scope`` with values and drop it: (values, seconds)."""
    import asyncio

    from pyiii import connect

    worker = await connect(url, name="bench-dump-pages")
    try:
        # The first listing of a scope builds its sorted key index (once per
        # scope): not part of what a dump costs afterwards.
        await worker.trigger("state::keys", {"scope": scope, "limit": 1})
        started = time.perf_counter()
        seen = 0
        cursor = None
        pending = asyncio.ensure_future(
            worker.trigger("state::keys", {"scope": scope, "limit": PAGE, "with_values": True})
        )
        while True:
            page = await pending
            cursor = page["cursor"]
            if cursor is not None:
                payload = {"scope": scope, "limit": PAGE, "cursor": cursor, "with_values": True}
                pending = asyncio.ensure_future(worker.trigger("state::keys", payload))
            seen += len(page["items"])
            if cursor is None:
                break
        return seen, time.perf_counter() - started
    finally:
        await worker.shutdown()


def dump_restore_rows(n: int = 1_000_000) -> list[Row]:
    from bulk_load import SCOPE

    section = f"pyiii state dump / restore, {n:,} x 100 B values"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first, second, small = work / "first.jsonl", work / "second.jsonl", work / "small.jsonl"
        (work / "a").mkdir()
        (work / "b").mkdir()
        port = free_port()
        url = f"ws://127.0.0.1:{port}"
        with engine(port, work / "a", CONFIG) as eng_a:
            progress(f"load {n:,} values into engine A (state::set_many)")
            cpu0, client0 = cpu_seconds(eng_a.pid), time.process_time()
            load_s, method = run(_load(url, n))  # type: ignore[misc]
            load_srv, load_cli = cpu_seconds(eng_a.pid) - cpu0, time.process_time() - client0
            load = Row(
                f"baseline: state::set_many load of the same {n:,} values (values/s)",
                n / load_s,
                None,
                None,
                section=section,
                server_cpu=load_srv / load_s,
                client_cpu=load_cli / load_s,
                note=f"{load_s:.1f} s; {method}",
                extra={"seconds": load_s},
            )
            progress(f"{load.name}: {load_s:.1f} s")
            progress("state::keys pages read in-process (the engine + transport bound)")
            cpu0, client0 = cpu_seconds(eng_a.pid), time.process_time()
            seen, pages_s = run(_read_pages(url, SCOPE))  # type: ignore[misc]
            pages_srv, pages_cli = cpu_seconds(eng_a.pid) - cpu0, time.process_time() - client0
            pages = Row(
                f"baseline: state::keys pages of {PAGE} read by the SDK, nothing written (values/s)",
                seen / pages_s,
                None,
                None,
                section=section,
                server_cpu=pages_srv / pages_s,
                client_cpu=pages_cli / pages_s,
                note=f"{pages_s:.1f} s",
                extra={"seconds": pages_s},
            )
            progress(f"{pages.name}: {pages_s:.1f} s")
            progress("pyiii state dump of the small scope alone (RSS baseline)")
            _, small_rss, _ = cli(["state", "dump", str(small), "--scope", "small", "-q", "--url", url])
            progress(f"pyiii state dump of {n + SMALL:,} values")
            cpu0 = cpu_seconds(eng_a.pid)
            dump_s, dump_rss, dump_cpu = cli(["state", "dump", str(first), "-q", "--url", url])
            dump_srv = cpu_seconds(eng_a.pid) - cpu0
        values = n + SMALL
        size_mb = first.stat().st_size / (1 << 20)
        dump = Row(
            f"pyiii state dump, {values:,} values to a file (values/s)",
            values / dump_s,
            None,
            None,
            section=section,
            baseline=pages.name,
            ratio=(values / dump_s) / pages.ops_per_s if pages.ops_per_s else None,
            server_cpu=dump_srv / dump_s,
            client_cpu=dump_cpu / dump_s,
            note=f"{dump_s:.1f} s, {size_mb:.0f} MB of JSON Lines; CLI peak RSS {dump_rss:.0f} MB",
            extra={"seconds": dump_s, "peak_rss_mb": dump_rss, "file_mb": size_mb},
        )
        dump_mem = Row(
            f"pyiii state dump peak RSS at {values:,} values",
            None,
            None,
            None,
            section=section,
            baseline=f"pyiii state dump peak RSS at {SMALL:,} values",
            ratio=dump_rss / small_rss,
            ratio_of="RSS",
            note=f"{dump_rss:.0f} MB vs {small_rss:.0f} MB",
            extra={"peak_rss_mb": dump_rss, "small_peak_rss_mb": small_rss},
        )
        progress(f"{dump.name}: {dump.note}")

        port = free_port()
        url = f"ws://127.0.0.1:{port}"
        with engine(port, work / "b", CONFIG) as eng_b:
            progress(f"pyiii state restore of {values:,} values into empty engine B")
            cpu0 = cpu_seconds(eng_b.pid)
            restore_s, restore_rss, restore_cpu = cli(["state", "restore", str(first), "-q", "--url", url])
            restore_srv = cpu_seconds(eng_b.pid) - cpu0
            progress("dump of engine B, compared byte for byte")
            cli(["state", "dump", str(second), "-q", "--url", url])
        identical = _same(first, second)
        restore = Row(
            f"pyiii state restore, {values:,} values into an empty engine (values/s)",
            values / restore_s,
            None,
            None,
            section=section,
            baseline=load.name,
            ratio=(values / restore_s) / load.ops_per_s if load.ops_per_s else None,
            server_cpu=restore_srv / restore_s,
            client_cpu=restore_cpu / restore_s,
            note=f"{restore_s:.1f} s; CLI peak RSS {restore_rss:.0f} MB; "
            f"dump of the restored engine {'byte-identical' if identical else 'DIFFERS'}",
            extra={"seconds": restore_s, "peak_rss_mb": restore_rss, "identical": str(identical)},
        )
        progress(f"{restore.name}: {restore.note}")
        if not identical:
            raise RuntimeError("the dump of the restored engine differs from the original dump")
    rows += [dump, pages, dump_mem, restore, load]
    return rows


def _same(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--values", type=int, default=1_000_000)
    args = parser.parse_args()
    import run as runner

    runner.main(["--only", "dump", "--dump-values", str(args.values)])


if __name__ == "__main__":
    main()
