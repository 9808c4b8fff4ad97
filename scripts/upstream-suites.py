#!/usr/bin/env python3
"""Run the official iii SDKs' own integration suites against pyiii engines.

    .venv/bin/python scripts/upstream-suites.py --snapshot PATH-TO-III-GIT-DIR
    .venv/bin/python scripts/upstream-suites.py --snapshot ... --strip-unsupported
    .venv/bin/python scripts/upstream-suites.py --snapshot ... --node state.test.ts \\
        --python test_state.py -k 'set or get' --checkout ../my-worktree

Developer tool, not part of `make test`: it needs a snapshot of the upstream
iii repository (a git directory, bare or not) that the developer fetched; the
project never vendors upstream code. What it does, the way upstream CI does it:

1. Copies `sdk/`, `package.json` and `pnpm-lock.yaml` of the snapshot's commit
   into a work directory outside the project (default
   /tmp/iii-upstream/<commit12>; reused on later runs).
2. Node suite (`sdk/packages/node/iii/tests`, vitest): installs pnpm (npm
   registry) into the work directory, `pnpm install`s the Node SDK workspace
   packages (iii-sdk and @iii-dev/helpers only) from the upstream lockfile,
   builds @iii-dev/helpers and iii-sdk. The tests import the SDK from its
   TypeScript source, as upstream CI runs them.
   Python suite (`sdk/packages/python/iii/tests`, pytest): a venv with the
   SDK and helpers from the snapshot's source (editable) plus their `dev`
   extras and pytest-timeout (PyPI).
3. Starts three pyiii engines (`<checkout>/.venv/bin/pyiii serve`) with the
   upstream fixtures `sdk/fixtures/config-test.yaml`, `config-bridge-backend.yaml`
   and `config-bridge.yaml`, each in its own fresh directory. Every listener
   port in them is rewritten to a free loopback port and every host to
   127.0.0.1 (so several developers can run this at once); the suites get the
   matching III_URL, III_HTTP_URL, III_BRIDGE_WS_URL and III_RBAC_WORKER_URL.
   If pyiii refuses a fixture, its error is printed and the run stops, unless
   --strip-unsupported is given: then the `workers[N]` entry the error names
   is removed and the engine started again, until it starts; every stripped
   entry is listed in the summary and the JSON report. --config-override
   replaces a fixture with your own file (its ports are rewritten too).
4. Runs each selected test file in its own process with per-test timeouts
   (vitest --testTimeout/--hookTimeout, pytest-timeout) and a wall-clock
   limit per file (the process group is killed past it).
5. Prints a table (file, passed, failed, skipped, time) and writes a JSON
   report with every test's outcome and first failure line; engine and test
   logs are kept in the run directory. Stops every process it started.

Exit status: 0 if every selected test passed, 1 if any failed or errored,
2 if setup failed (snapshot, install, or an engine that would not start).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # the pyiii venv has PyYAML
    sys.exit("upstream-suites: PyYAML is missing; run this with the pyiii venv (.venv/bin/python)")

HERE = Path(__file__).resolve().parent.parent
NODE_PKG = Path("sdk/packages/node/iii")
PY_PKG = Path("sdk/packages/python/iii")
PY_HELPERS = Path("sdk/packages/python/helpers")
# Added to the SDK's dev extras: per-test timeouts, and results written as tests finish.
PY_TOOLS = ("pytest-timeout", "pytest-reportlog")
# Upstream runs pytest without a timeout, and some SDK tests sit out the SDK's
# 30 s connect wait on purpose (test_init_api.py), so the default is above it.
PY_TEST_TIMEOUT = 60.0
# Node SDK workspace members its tests need (the upstream workspace also lists
# the console, docs and website, which would pull in hundreds of packages).
NODE_WORKSPACE = ("sdk/packages/node/iii", "sdk/packages/node/helpers")
PNPM_VERSION_FALLBACK = "10.19.0"
SNAPSHOT_PATHS = ("sdk", "package.json", "pnpm-lock.yaml")
# name -> fixture file; started in this order (the bridge engine forwards to the backend).
FIXTURES = {
    "backend": "config-bridge-backend.yaml",
    "bridge": "config-bridge.yaml",
    "test": "config-test.yaml",
}
WORKERS_INDEX = re.compile(r"workers\[(\d+)\]")
# A test process still running this long after writing its results is killed.
EXIT_GRACE = 10.0


# ---------------------------------------------------------------- utilities


def log(msg: str) -> None:
    print(f"[upstream] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(cmd: list[str], cwd: Path, logfile: Path, env: dict[str, str] | None = None) -> None:
    """Run a setup command; on failure show the tail of its output and stop."""
    log(f"$ {' '.join(cmd)}  (in {cwd})")
    with logfile.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-30:]
        raise SetupError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


def kill_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the process group we created for ``proc``, SIGKILL past ``grace``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class SetupError(Exception):
    pass


# ---------------------------------------------------------------- snapshot


def snapshot_commit(git_dir: Path, rev: str) -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SetupError(f"{git_dir}: not a git directory with {rev!r}: {out.stderr.strip()}")
    return out.stdout.strip()


def extract(git_dir: Path, commit: str, dest: Path) -> None:
    """Write the snapshot's SNAPSHOT_PATHS at ``commit`` into ``dest``.

    Reads blobs one by one (ls-tree + cat-file) instead of `git archive`,
    which gives up on the first object a partial mirror lacks; a missing blob
    outside what the suites use is skipped with a note.
    """
    stamp = dest / ".extracted"
    if stamp.exists():
        return
    listing = subprocess.run(
        ["git", "--git-dir", str(git_dir), "ls-tree", "-r", "-z", commit, "--", *SNAPSHOT_PATHS],
        capture_output=True,
        check=True,
    ).stdout
    entries: list[tuple[str, str, str]] = []
    for item in listing.split(b"\0"):
        if not item:
            continue
        meta, raw_path = item.split(b"\t", 1)
        raw_mode, kind, raw_sha = meta.split()
        if kind == b"blob":
            entries.append((raw_mode.decode(), raw_sha.decode(), raw_path.decode()))
    cat = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert cat.stdin is not None and cat.stdout is not None
    missing: list[str] = []
    try:
        for mode, sha, path in entries:
            cat.stdin.write(f"{sha}\n".encode())
            cat.stdin.flush()
            header = cat.stdout.readline().split()
            if len(header) < 3 or header[1] == b"missing":
                missing.append(path)
                continue
            body = cat.stdout.read(int(header[2]))
            cat.stdout.read(1)  # the newline after each object
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if mode == "120000":
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                target.symlink_to(body.decode())
            else:
                target.write_bytes(body)
                if mode == "100755":
                    target.chmod(0o755)
    finally:
        cat.stdin.close()
        cat.wait()
    if missing:
        log(f"snapshot lacks {len(missing)} blob(s), skipped: {', '.join(missing[:5])}")
    for path in missing:
        if path in STAND_INS:
            # The suites' upload/download/multipart tests need some large binary file, not this
            # one: give them bytes of the same kind rather than failing on ENOENT (or skipping).
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(STAND_INS[path]())
            log(f"{path}: absent from the snapshot; wrote a {target.stat().st_size}-byte stand-in")
    stamp.write_text(commit + "\n")


def _stand_in_pdf() -> bytes:
    """3 MiB of deterministic pseudo-random bytes between a PDF header and trailer."""
    import random

    rng = random.Random(12)
    return b"%PDF-1.4\n" + rng.randbytes(3 * 1024 * 1024) + b"\n%%EOF\n"


# Large test assets a partial mirror may lack, and what to write in their place.
STAND_INS = {"sdk/test-assets/handbook.pdf": _stand_in_pdf}


# ---------------------------------------------------------------- installs


def prepare_node(src: Path, logs: Path) -> Path:
    """Install and build the Node SDK workspace; return the package directory."""
    pkg = src / NODE_PKG
    stamp = src / ".node-ready"
    if stamp.exists():
        return pkg
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SetupError("node and npm are needed for the Node suite (Debian: apt-get install nodejs npm)")
    manager = json.loads((src / "package.json").read_text()).get("packageManager", "")
    version = manager.split("@", 1)[1] if manager.startswith("pnpm@") else PNPM_VERSION_FALLBACK
    tools = src / ".tools"
    pnpm = tools / "node_modules" / ".bin" / "pnpm"
    if not pnpm.exists():
        run(
            ["npm", "install", "--prefix", str(tools), "--no-audit", "--no-fund", f"pnpm@{version}"],
            src,
            logs / "setup-node.log",
        )
    (src / "pnpm-workspace.yaml").write_text("packages:\n" + "".join(f"  - {p}\n" for p in NODE_WORKSPACE))
    # The lockfile also covers workspace members left out above, so it cannot
    # be used frozen; pnpm still takes every version it pins.
    run(
        [
            str(pnpm),
            "install",
            "--frozen-lockfile=false",
            "--filter",
            "iii-sdk...",
            "--filter",
            "@iii-dev/helpers",
        ],
        src,
        logs / "setup-node.log",
    )
    run([str(pnpm), "--filter", "@iii-dev/helpers", "build"], src, logs / "setup-node.log")
    run([str(pnpm), "--filter", "iii-sdk", "build"], src, logs / "setup-node.log")
    stamp.write_text("ok\n")
    return pkg


def prepare_python(src: Path, logs: Path, python: str) -> tuple[Path, Path]:
    """A venv with the Python SDK from source; return (package directory, interpreter)."""
    pkg = src / PY_PKG
    venv = src / ".venv-py"
    interp = venv / "bin" / "python"
    stamp = src / ".python-ready"
    pip = [str(interp), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    args = [*pip, *PY_TOOLS]
    if (src / PY_HELPERS).is_dir():
        args += ["-e", str(src / PY_HELPERS)]
    args += ["-e", f"{pkg}[dev]"]
    # The stamp holds the install command, so a changed tool list reinstalls.
    if stamp.exists() and stamp.read_text() == " ".join(args):
        return pkg, interp
    if not interp.exists():
        run([python, "-m", "venv", str(venv)], src, logs / "setup-python.log")
    run(args, src, logs / "setup-python.log")
    stamp.write_text(" ".join(args))
    return pkg, interp


# ---------------------------------------------------------------- engines


@dataclass
class EngineInfo:
    name: str
    fixture: str
    config: str
    port: int  # first iii-worker-manager's port
    ports: dict[str, int] = field(default_factory=dict)  # role -> port
    stripped: list[dict[str, str]] = field(default_factory=list)  # entries removed, with the error
    warnings: list[str] = field(default_factory=list)
    log: str = ""


def rewrite(doc: dict[str, Any], remap: dict[int, int]) -> dict[str, int]:
    """Point every listener at 127.0.0.1 and a free port (filled into ``remap``).

    Returns role -> new port for the listeners the suites reach by URL:
    ``ws`` (first worker manager), ``ws#N`` (the others), ``http``, ``stream``.
    URLs naming a remapped port (bridge_url) are rewritten by ``fix_urls``.
    """
    roles: dict[str, int] = {}
    for entry in doc.get("workers") or doc.get("modules") or []:
        cfg = entry.get("config")
        if not isinstance(cfg, dict):
            continue
        if "host" in cfg:
            cfg["host"] = "127.0.0.1"
        if "port" not in cfg:
            continue
        old = cfg["port"]
        match = re.search(r"(\d+)\}?$", str(old))  # 3112 or ${STREAMS_PORT:3112}
        new = free_port()
        if match:
            remap[int(match.group(1))] = new
        cfg["port"] = new
        name = str(entry.get("name", entry.get("class", "")))
        base = {"iii-worker-manager": "ws", "iii-http": "http", "iii-stream": "stream"}.get(name, name)
        role, n = base, 1
        while role in roles:
            n += 1
            role = f"{base}#{n}"
        roles[role] = new
    return roles


def fix_urls(node: Any, remap: dict[int, int]) -> Any:
    if isinstance(node, dict):
        return {k: fix_urls(v, remap) for k, v in node.items()}
    if isinstance(node, list):
        return [fix_urls(v, remap) for v in node]
    if isinstance(node, str) and "://" in node:

        def sub(m: re.Match[str]) -> str:
            port = int(m.group(2))
            return f"127.0.0.1:{remap.get(port, port)}"

        return re.sub(r"(localhost|127\.0\.0\.1|0\.0\.0\.0):(\d+)", sub, node)
    return node


class Engines:
    """The three pyiii engines of a run, started in order, stopped together."""

    def __init__(self, pyiii: Path, rundir: Path, log_level: str) -> None:
        self.pyiii = pyiii
        self.rundir = rundir
        self.log_level = log_level
        self.procs: list[subprocess.Popen[bytes]] = []
        self.remap: dict[int, int] = {}

    def start(self, name: str, source: Path, strip: bool, timeout: float) -> EngineInfo:
        doc = yaml.safe_load(source.read_text())
        roles = rewrite(doc, self.remap)
        if "ws" not in roles:
            raise SetupError(f"{source}: no iii-worker-manager port to wait for")
        info = EngineInfo(name=name, fixture=str(source), config="", port=roles["ws"], ports=roles)
        home = self.rundir / f"engine-{name}"
        home.mkdir(parents=True, exist_ok=True)
        attempt = 0
        while True:
            attempt += 1
            cfg = home / "config.yaml"
            cfg.write_text(yaml.safe_dump(fix_urls(doc, self.remap), sort_keys=False))
            info.config = str(cfg)
            logfile = home / f"engine-{attempt}.log"
            info.log = str(logfile)
            with logfile.open("wb") as out:
                proc = subprocess.Popen(
                    [str(self.pyiii), "serve", "--config", str(cfg), "--log-level", self.log_level],
                    cwd=home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not port_open(info.port) and time.monotonic() < deadline:
                time.sleep(0.1)
            text = logfile.read_text(errors="replace")
            if proc.poll() is None and port_open(info.port):
                self.procs.append(proc)
                info.warnings = [ln for ln in text.splitlines() if " WARNING " in ln or "warning:" in ln]
                listeners = ", ".join(f"{k}={v}" for k, v in roles.items())
                stripped = f", stripped {len(info.stripped)} entries" if info.stripped else ""
                log(f"engine {name}: ws://127.0.0.1:{info.port} ({listeners}){stripped}")
                return info
            kill_group(proc)
            error = text.strip().splitlines()[-1] if text.strip() else f"exit {proc.returncode}"
            match = WORKERS_INDEX.search(error)
            workers = doc.get("workers") or []
            if not strip or match is None or int(match.group(1)) >= len(workers):
                hint = (
                    ""
                    if strip
                    else "\n  (rerun with --strip-unsupported to drop the refused entry, "
                    "or give --config-override)"
                )
                raise SetupError(f"engine {name} ({source.name}) did not start:\n  {error}{hint}")
            index = int(match.group(1))
            removed = workers.pop(index)
            gone = (removed.get("config") or {}).get("port") if isinstance(removed, dict) else None
            for role in [r for r, p in roles.items() if p == gone]:
                del roles[role]  # the suites then get a closed port for it
            info.stripped.append({"entry": json.dumps(removed, default=str)[:300], "error": error})
            log(f"engine {name}: stripped workers[{index}] ({removed.get('name')}): {error}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            kill_group(proc, grace=10.0)
        self.procs.clear()


# ---------------------------------------------------------------- suites


@dataclass
class TestResult:
    name: str
    status: str  # passed | failed | skipped
    seconds: float = 0.0
    message: str = ""


@dataclass
class FileResult:
    suite: str
    file: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error: str = ""  # the file did not finish (timeout, crash, collection error)
    tests: list[TestResult] = field(default_factory=list)
    log: str = ""

    def tally(self) -> None:
        self.passed = sum(t.status == "passed" for t in self.tests)
        self.failed = sum(t.status == "failed" for t in self.tests)
        self.skipped = sum(t.status == "skipped" for t in self.tests)


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def run_file(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    logfile: Path,
    limit: float,
    finished: Callable[[], bool],
) -> tuple[int | None, float, bool]:
    """Run one test file's process.

    Returns (exit code or None when killed, seconds, whether it was killed only
    because it kept running EXIT_GRACE seconds after ``finished()`` said the
    runner had written its results, e.g. on a non-daemon SDK thread).
    """
    start = time.monotonic()
    hung_at_exit = False
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        done_at: float | None = None
        code: int | None = None
        try:
            while True:
                try:
                    code = proc.wait(0.5)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if done_at is None and finished():
                        done_at = now
                    if done_at is not None and now - done_at > EXIT_GRACE:
                        hung_at_exit = True
                        break
                    if now - start > limit:
                        break
        finally:
            kill_group(proc)  # also reaps children a finished runner left behind
    return code, time.monotonic() - start, hung_at_exit


def kill_note(code: int | None, hung_at_exit: bool, limit: float) -> str:
    if hung_at_exit:
        return f"results complete, but the process did not exit; killed {EXIT_GRACE:.0f}s after"
    return f"killed after {limit:.0f}s (--file-timeout)" if code is None else ""


def node_file(
    pkg: Path, file: str, env: dict[str, str], rundir: Path, args: argparse.Namespace
) -> FileResult:
    res = FileResult("node", file)
    report = rundir / "node" / f"{file}.json"
    logfile = rundir / "node" / f"{file}.log"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    cmd = [
        str(pkg / "node_modules" / ".bin" / "vitest"),
        "run",
        f"tests/{file}",
        "--reporter=json",
        f"--outputFile={report}",
        "--reporter=default",
        "--coverage.enabled=false",
    ]
    if args.test_timeout is not None:  # else the suite's vitest.config values
        ms = int(args.test_timeout * 1000)
        cmd += [f"--testTimeout={ms}", f"--hookTimeout={ms}", f"--teardownTimeout={ms}"]
    if args.k:
        cmd += ["-t", args.k]
    code, res.seconds, hung = run_file(cmd, pkg, env, logfile, args.file_timeout, report.exists)
    res.log = str(logfile)
    if report.exists():
        data = json.loads(report.read_text())
        for suite in data.get("testResults", []):
            for t in suite.get("assertionResults", []):
                status = {"passed": "passed", "failed": "failed"}.get(t.get("status"), "skipped")
                name = " > ".join([*t.get("ancestorTitles", []), t.get("title", "")])
                msg = first_line("\n".join(t.get("failureMessages") or []))
                res.tests.append(TestResult(name, status, (t.get("duration") or 0) / 1000, msg))
            if suite.get("status") == "failed" and not suite.get("assertionResults"):
                res.error = first_line(suite.get("message", "")) or "file failed before any test ran"
    if code is None:
        res.error = kill_note(code, hung, args.file_timeout)
    elif not report.exists():
        res.error = f"vitest exited {code} without a report; see {logfile}"
    res.tally()
    if code not in (None, 0) and not res.failed and not res.error:
        res.error = f"vitest exited {code}; see {logfile}"
    return res


def read_report_log(path: Path) -> tuple[list[TestResult], bool]:
    """Tests from a pytest-reportlog file (written as tests finish, so a killed
    run still reports what ran) and whether the session finished."""
    phases: dict[str, list[dict[str, Any]]] = {}
    finished = False
    if not path.exists():
        return [], False
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if rec.get("$report_type") == "SessionFinish":
            finished = True
        elif rec.get("$report_type") == "TestReport":
            phases.setdefault(rec["nodeid"], []).append(rec)
    tests = []
    for nodeid, recs in phases.items():
        status, msg = "passed", ""
        for rec in recs:
            if rec["outcome"] == "failed":
                status, msg = "failed", longrepr_line(rec.get("longrepr"), rec.get("when", ""))
                break
            if rec["outcome"] == "skipped":
                status, msg = "skipped", longrepr_line(rec.get("longrepr"), "")
        seconds = sum(float(r.get("duration") or 0) for r in recs)
        tests.append(TestResult(nodeid.split("::", 1)[-1], status, seconds, msg))
    return tests, finished


def longrepr_line(longrepr: Any, when: str) -> str:
    prefix = f"[{when}] " if when and when != "call" else ""
    if isinstance(longrepr, list) and len(longrepr) == 3:  # skip: (path, line, reason)
        return first_line(str(longrepr[2]))
    if isinstance(longrepr, dict):
        crash = (longrepr.get("reprcrash") or {}).get("message")
        if crash:
            return prefix + first_line(crash)
        return prefix + first_line(json.dumps(longrepr)[:300])
    return prefix + first_line(str(longrepr or ""))


def python_file(
    pkg: Path, interp: Path, file: str, env: dict[str, str], rundir: Path, args: argparse.Namespace
) -> FileResult:
    res = FileResult("python", file)
    report = rundir / "python" / f"{file}.jsonl"
    logfile = rundir / "python" / f"{file}.log"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    cmd = [
        str(interp),
        "-m",
        "pytest",
        f"tests/{file}",
        "-q",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        f"--report-log={report}",
        f"--timeout={PY_TEST_TIMEOUT if args.test_timeout is None else args.test_timeout:.0f}",
    ]
    if args.k:
        cmd += ["-k", args.k]
    code, res.seconds, hung = run_file(
        cmd, pkg, env, logfile, args.file_timeout, lambda: read_report_log(report)[1]
    )
    res.log = str(logfile)
    res.tests, _ = read_report_log(report)
    if code is None:
        res.error = kill_note(code, hung, args.file_timeout)
    elif code not in (0, 1, 5):  # 5: nothing collected (e.g. -k matched nothing)
        res.error = f"pytest exited {code}; see {logfile}"
    res.tally()
    return res


def list_files(directory: Path, pattern: str, wanted: list[str] | None) -> list[str]:
    found = sorted(p.name for p in directory.glob(pattern))
    if not wanted:
        return found
    picked = []
    for w in wanted:
        name = Path(w).name
        if name not in found:
            raise SetupError(f"no test file {name!r} in {directory} (have: {', '.join(found)})")
        picked.append(name)
    return picked


# ---------------------------------------------------------------- report


def print_table(results: list[FileResult], engines: list[EngineInfo]) -> None:
    width = max([len(f"{r.suite}/{r.file}") for r in results] + [10])
    print(f"\n{'file':<{width}}  {'passed':>6}  {'failed':>6}  {'skipped':>7}  {'secs':>6}  note")
    for r in results:
        note = r.error or ""
        print(
            f"{r.suite + '/' + r.file:<{width}}  {r.passed:>6}  {r.failed:>6}  {r.skipped:>7}  "
            f"{r.seconds:>6.1f}  {note}"
        )
    tp, tf, ts = (sum(getattr(r, k) for r in results) for k in ("passed", "failed", "skipped"))
    errored = sum(bool(r.error) for r in results)
    print(f"{'TOTAL':<{width}}  {tp:>6}  {tf:>6}  {ts:>7}          {errored} file(s) did not finish cleanly")
    for e in engines:
        for s in e.stripped:
            print(f"stripped from {Path(e.fixture).name}: {s['error']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="upstream-suites.py",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--snapshot",
        type=Path,
        default=Path(os.environ.get("III_UPSTREAM_GIT", "")),
        help="git directory of an upstream iii snapshot (or $III_UPSTREAM_GIT)",
    )
    parser.add_argument("--rev", default="HEAD", help="commit of the snapshot to use (default HEAD)")
    parser.add_argument(
        "--checkout",
        type=Path,
        default=HERE,
        help="pyiii checkout whose .venv/bin/pyiii runs the engines (default: this repo)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the snapshot is copied and installed (default /tmp/iii-upstream/<commit12>)",
    )
    parser.add_argument("--suites", default="node,python", help="comma list of node,python (default both)")
    parser.add_argument(
        "--node", nargs="+", metavar="FILE", help="only these Node test files (e.g. state.test.ts)"
    )
    parser.add_argument("--python", nargs="+", metavar="FILE", help="only these Python test files")
    parser.add_argument("-k", default=None, help="test name filter (pytest -k expression; vitest -t pattern)")
    parser.add_argument(
        "--strip-unsupported",
        action="store_true",
        help="drop fixture entries pyiii refuses (named as workers[N] in its error) and retry",
    )
    parser.add_argument(
        "--config-override",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=f"use PATH instead of a fixture; NAME is one of {', '.join(FIXTURES)}",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=None,
        help="seconds per test and hook (default: vitest.config's own, 30 s per test and 60 s per "
        f"hook; pytest {PY_TEST_TIMEOUT:.0f} s, above the SDK's 30 s connect wait)",
    )
    parser.add_argument(
        "--file-timeout",
        type=float,
        default=300.0,
        help="seconds per test file before its process group is killed (default 300)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="Node files run at once (default 2; Python files always run one at a time "
        "because the upstream conftest reuses one worker name)",
    )
    parser.add_argument("--engine-timeout", type=float, default=30.0, help="seconds for an engine to listen")
    parser.add_argument("--engine-log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--python-interpreter",
        default=sys.executable,
        help="interpreter for the Python SDK's venv (default: this one)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="JSON report path (default <workdir>/runs/<time>/report.json)",
    )
    parser.add_argument("--prepare-only", action="store_true", help="copy and install, start nothing")
    args = parser.parse_args(argv)

    suites = {s.strip() for s in args.suites.split(",") if s.strip()}
    if args.node:
        suites.add("node")
    if args.python:
        suites.add("python")
    if (args.node or args.python) and not (args.node and args.python):
        suites = {"node"} if args.node else {"python"}
    unknown = suites - {"node", "python"}
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    overrides: dict[str, Path] = {}
    for item in args.config_override:
        name, _, path = item.partition("=")
        if name not in FIXTURES or not path:
            parser.error(f"--config-override {item!r}: want NAME=PATH with NAME in {', '.join(FIXTURES)}")
        if not Path(path).is_file():
            parser.error(f"--config-override {item!r}: no such file")
        overrides[name] = Path(path).resolve()
    if not str(args.snapshot) or str(args.snapshot) == ".":
        parser.error("--snapshot is required (a git directory of the upstream iii repository)")
    pyiii = args.checkout.resolve() / ".venv" / "bin" / "pyiii"
    if not pyiii.exists() and not args.prepare_only:
        parser.error(f"{pyiii} not found: run `make install` in {args.checkout}")

    engines: Engines | None = None
    try:
        git_dir = args.snapshot.resolve()
        commit = snapshot_commit(git_dir, args.rev)
        src = (args.workdir or Path("/tmp/iii-upstream") / commit[:12]).resolve()
        src.mkdir(parents=True, exist_ok=True)
        (src / "runs").mkdir(exist_ok=True)
        rundir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=src / "runs"))
        log(f"snapshot {commit} -> {src}; this run's logs: {rundir}")
        extract(git_dir, commit, src)
        node_pkg = prepare_node(src, rundir) if "node" in suites else None
        py_pkg, py_interp = (
            prepare_python(src, rundir, args.python_interpreter) if "python" in suites else (None, None)
        )
        if args.prepare_only:
            return 0
        node_files = list_files(node_pkg / "tests", "*.test.ts", args.node) if node_pkg else []
        py_files = list_files(py_pkg / "tests", "test_*.py", args.python) if py_pkg else []

        engines = Engines(pyiii, rundir, args.engine_log_level)
        infos = [
            engines.start(
                name,
                overrides.get(name, src / "sdk" / "fixtures" / fixture),
                args.strip_unsupported,
                args.engine_timeout,
            )
            for name, fixture in FIXTURES.items()
        ]
        by_name = {i.name: i for i in infos}
        test_ports = by_name["test"].ports
        env = dict(os.environ)
        env.update(
            {
                "III_URL": f"ws://127.0.0.1:{test_ports['ws']}",
                "III_HTTP_URL": f"http://127.0.0.1:{test_ports.get('http', free_port())}",
                "III_BRIDGE_WS_URL": f"ws://127.0.0.1:{by_name['bridge'].port}",
                # the second worker manager of config-test.yaml (RBAC); a closed port if stripped
                "III_RBAC_WORKER_URL": f"ws://127.0.0.1:{test_ports.get('ws#2', free_port())}",
                "III_TELEMETRY_ENABLED": "false",
                "NO_COLOR": "1",
                "CI": "true",
            }
        )
        for key in ("III_NAMESPACE", "III_WORKER_NAME", "III_ISOLATION", "III_TOKEN"):
            env.pop(key, None)

        results: list[FileResult] = []
        if node_pkg:
            with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
                futures = [pool.submit(node_file, node_pkg, f, env, rundir, args) for f in node_files]
                for fut in futures:
                    r = fut.result()
                    log(
                        f"node/{r.file}: {r.passed} passed, {r.failed} failed, {r.skipped} skipped"
                        + (f" — {r.error}" if r.error else "")
                    )
                    results.append(r)
        if py_pkg and py_interp:
            for f in py_files:
                r = python_file(py_pkg, py_interp, f, env, rundir, args)
                log(
                    f"python/{r.file}: {r.passed} passed, {r.failed} failed, {r.skipped} skipped"
                    + (f" — {r.error}" if r.error else "")
                )
                results.append(r)
        engines.stop()

        print_table(results, infos)
        report = args.report or rundir / "report.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            json.dumps(
                {
                    "snapshot_commit": commit,
                    "checkout": str(args.checkout.resolve()),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "strip_unsupported": args.strip_unsupported,
                    "engines": [asdict(i) for i in infos],
                    "env": {
                        k: env[k]
                        for k in ("III_URL", "III_HTTP_URL", "III_BRIDGE_WS_URL", "III_RBAC_WORKER_URL")
                    },
                    "files": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
        print(f"report: {report}")
        return 0 if all(not r.failed and not r.error for r in results) else 1
    except SetupError as exc:
        print(f"upstream-suites: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if engines is not None:
            engines.stop()


if __name__ == "__main__":
    sys.exit(main())
