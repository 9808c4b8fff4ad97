"""The client commands (``pyiii state|functions|workers|queue``) as a user runs them.

Every command runs through the installed ``pyiii`` entry point in a
subprocess, against real engine subprocesses; workers that the commands
should see are real SDK workers on a background thread.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyiii.sdk import Worker, register_worker
from support.engines import free_port

PYIII = str(Path(sys.executable).with_name("pyiii"))  # the console script pip installed


def pyiii(
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("III_URL", "III_TOKEN")}
    flags = ["--url", url] if url is not None else []
    return subprocess.run(
        [PYIII, *args, *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={**environ, **(env or {})},
    )


def ok(*args: str, url: str) -> str:
    done = pyiii(*args, url=url)
    assert done.returncode == 0, f"pyiii {' '.join(args)}: {done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def ok_json(*args: str, url: str) -> Any:
    return json.loads(ok(*args, "--json", url=url))


@pytest.fixture
def sdk_worker() -> Iterator[Callable[[str], Worker]]:
    """Connect SDK workers (each on its own thread); shut down afterwards."""
    made: list[Worker] = []

    def make(url: str) -> Worker:
        w = register_worker(url, name="test-worker", reconnect=False)
        made.append(w)
        return w

    yield make
    for w in made:
        w.shutdown_sync()


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


# --- state ------------------------------------------------------------------------------


def test_state_set_get_ls_scopes_delete(engine_proc: Any) -> None:
    url = engine_proc.url
    assert ok("state", "set", "users", "u1", '{"name": "Ada"}', url=url).startswith(
        "created users / u1: version"
    )
    assert "updated" in ok("state", "set", "users", "u1", '{"name": "Ada L."}', url=url)
    ok("state", "set", "users", "u2", '"plain text"', "--ttl-ms", "60000", url=url)
    assert pyiii("state", "set", "orders", "o1", "-", url=url, stdin="[1, 2, 3]").returncode == 0

    got = ok_json("state", "get", "users", "u1", url=url)
    assert got["value"] == {"name": "Ada L."} and got["version"] >= 2 and got["expires_at_ms"] is None
    u2 = ok_json("state", "get", "users", "u2", url=url)
    assert u2["value"] == "plain text" and u2["expires_at_ms"] > time.time() * 1000
    human = ok("state", "get", "orders", "o1", url=url)
    assert (
        "orders / o1" in human
        and "expires never" in human
        and json.loads(human.split("\n", 1)[1]) == [1, 2, 3]
    )

    assert ok_json("state", "scopes", url=url) == [
        {"scope": "orders", "keys": 1},
        {"scope": "users", "keys": 2},
    ]
    table = ok("state", "scopes", url=url).splitlines()
    assert table[0].split() == ["SCOPE", "KEYS"] and table[2].split() == ["users", "2"]

    lines = [json.loads(x) for x in ok("state", "ls", "users", "--json", "--values", url=url).splitlines()]
    assert [(x["key"], x["value"]) for x in lines] == [("u1", {"name": "Ada L."}), ("u2", "plain text")]
    assert lines[0]["version"] == got["version"] and lines[1]["expires_at_ms"] == u2["expires_at_ms"]
    ls = ok("state", "ls", "users", url=url).splitlines()
    assert ls[0].split() == ["KEY", "VERSION", "EXPIRES"] and ls[1].split()[:3] == [
        "u1",
        str(got["version"]),
        "never",
    ]
    assert ok("state", "ls", "users", "--prefix", "u2", url=url).count("\n") == 2

    # Compare-and-set: a stale version is refused, nothing is overwritten.
    stale = pyiii("state", "set", "users", "u1", "1", "--if-version", str(got["version"] - 1), url=url)
    assert stale.returncode == 1 and "VERSION_MISMATCH" in stale.stderr, stale.stderr
    assert ok_json("state", "get", "users", "u1", url=url)["value"] == {"name": "Ada L."}
    absent = pyiii("state", "set", "users", "u1", "1", "--if-absent", url=url)
    assert absent.returncode == 1 and "VERSION_MISMATCH" in absent.stderr

    out = ok_json("state", "set", "users", "u3", "3", url=url)
    assert (out["scope"], out["key"], out["old_value"], out["new_value"]) == ("users", "u3", None, 3)
    stale_delete = pyiii("state", "delete", "users", "u3", "--if-version", str(out["version"] + 1), url=url)
    assert stale_delete.returncode == 1 and "VERSION_MISMATCH" in stale_delete.stderr
    gone = ok_json("state", "delete", "users", "u3", "--if-version", str(out["version"]), url=url)
    assert gone == {"scope": "users", "key": "u3", "deleted": True, "old_value": 3}
    assert ok("state", "delete", "users", "u1", url=url).strip() == "deleted users / u1"
    again = pyiii("state", "delete", "users", "u1", url=url)
    assert again.returncode == 1 and "has no key 'u1'" in again.stderr and "Traceback" not in again.stderr
    missing = pyiii("state", "get", "users", "u1", url=url)
    assert missing.returncode == 1 and "scope 'users' has no key 'u1'" in missing.stderr


def test_state_errors_name_what_to_fix(engine_proc: Any, tmp_path: Path) -> None:
    url = engine_proc.url
    ok("state", "set", "users", "u1", "1", url=url)
    for args in (("state", "ls", "usres"), ("state", "get", "usres", "u1")):
        unknown = pyiii(*args, url=url)
        assert unknown.returncode == 1, unknown.stderr
        assert "no scope 'usres'" in unknown.stderr and "did you mean 'users'" in unknown.stderr
    empty_prefix = pyiii("state", "ls", "users", "--prefix", "zz", url=url)
    assert empty_prefix.returncode == 0 and "no keys of 'users' start with 'zz'" in empty_prefix.stderr

    # Bad JSON is refused before anything is sent: no engine needed.
    for value in ("{name: 1}", "text", "[1,"):
        bad = pyiii("state", "set", "users", "u1", value, url=f"ws://127.0.0.1:{free_port()}")
        assert bad.returncode == 2, bad.stderr
        assert "the value is not valid JSON" in bad.stderr and "'\"text\"'" in bad.stderr
    assert ok_json("state", "get", "users", "u1", url=url)["value"] == 1
    assert pyiii("state", "restore", str(tmp_path / "nope.jsonl"), url=url).returncode == 2
    typo = pyiii("state", "dump", str(tmp_path / "d.jsonl"), "--scope", "usres", url=url)
    assert typo.returncode == 1 and "did you mean 'users'" in typo.stderr
    assert not (tmp_path / "d.jsonl").exists()


def test_engine_down_is_one_clear_line_and_exit_3(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    dump = tmp_path / "d.jsonl"
    dump.write_text('{"scope":"s","key":"k","value":1,"version":1,"expires_at_ms":null}\n')
    for args in (
        ("state", "scopes"),
        ("state", "ls", "s"),
        ("state", "get", "s", "k"),
        ("state", "set", "s", "k", "1"),
        ("state", "delete", "s", "k"),
        ("state", "dump", str(tmp_path / "out.jsonl")),
        ("state", "restore", str(dump)),
        ("functions",),
        ("workers",),
        ("queue", "stats"),
        ("trigger", "engine::functions::list"),
    ):
        done = pyiii(*args, url=url)
        assert done.returncode == 3, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot reach the engine at {url}" in lines[0], (args, done.stderr)
        assert "is it running?" in lines[0]
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.partial").exists()


def test_url_and_token_from_environment(make_engine_proc: Any) -> None:
    eng = make_engine_proc(
        "workers:\n  - name: iii-worker-manager\n    config: { auth_token: tok-9 }\n  - name: iii-state\n"
    ).start()
    refused = pyiii("state", "scopes", env={"III_URL": eng.url})
    assert refused.returncode == 3 and "--token or $III_TOKEN" in refused.stderr
    done = pyiii("state", "set", "s", "k", "1", env={"III_URL": eng.url, "III_TOKEN": "tok-9"})
    assert done.returncode == 0, done.stderr
    flag = pyiii("state", "scopes", "--json", "--token", "tok-9", env={"III_URL": eng.url})
    assert json.loads(flag.stdout) == [{"scope": "s", "keys": 1}]


# --- dump and restore -------------------------------------------------------------------

ODD_KEYS = ["", "with space", "new\nline", "ünïcødé", "😀", 'quote"s', "a" * 300]


def fill(url: str, sdk_worker: Callable[[str], Worker], n: int) -> dict[tuple[str, str], bool]:
    """n keys over a few scopes: nested values, some with an expiry, odd keys and scope names.

    Returns what the store then holds: (scope, key) -> whether it expires.
    """
    w = sdk_worker(url)
    items: list[tuple[str, dict[str, Any]]] = []
    for i in range(n - len(ODD_KEYS)):
        scope = ("users", "orders", "café ☕", "")[i % 4]
        value: Any = {"i": i, "tags": ["a", "b"], "nested": {"x": i / 7}} if i % 3 else f"v{i}"
        item: dict[str, Any] = {"key": f"k{i:06d}", "value": value}
        if i % 10 == 0:
            item["ttl_ms"] = 3_600_000
        items.append((scope, item))
    items += [("odd", {"key": k, "value": None if k == "" else [k]}) for k in ODD_KEYS]
    by_scope: dict[str, list[dict[str, Any]]] = {}
    for scope, item in items:
        by_scope.setdefault(scope, []).append(item)
    for scope, rows in by_scope.items():
        for start in range(0, len(rows), 1000):
            w.trigger_sync("state::set_many", {"scope": scope, "items": rows[start : start + 1000]})
    # Overwrites and deletes, so versions are not simply 1..n.
    for i in range(0, 2000, 28):  # keys of "users" (i % 4 == 0)
        w.trigger_sync("state::set", {"scope": "users", "key": f"k{i:06d}", "value": {"again": i}})
    w.trigger_sync("state::delete", {"scope": "orders", "key": "k000001"})
    held = {(scope, item["key"]): "ttl_ms" in item for scope, item in items}
    for i in range(0, 2000, 28):
        held[("users", f"k{i:06d}")] = False  # a set without ttl_ms clears the expiry
    del held[("orders", "k000001")]
    return held


STATE_FILE = (
    "workers:\n  - name: iii-state\n    config:\n"
    "      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state.db}}\n"
)


def test_dump_restore_10k_keys_into_an_empty_engine_is_identical(
    make_engine_proc: Any, sdk_worker: Callable[[str], Worker], tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    source = make_engine_proc(workdir=tmp_path / "a").start()
    held = fill(source.url, sdk_worker, 10_000)
    first = tmp_path / "first.jsonl"
    done = pyiii("state", "dump", str(first), url=source.url)
    assert done.returncode == 0, done.stderr
    assert "dumped 9999 values of 5 scopes" in done.stderr  # one key was deleted
    assert "\r" not in done.stderr  # no progress bar when stderr is not a terminal
    lines = first.read_bytes().splitlines()
    assert len(lines) == 9999
    rows = [json.loads(x) for x in lines]
    assert list(rows[0]) == ["scope", "key", "value", "version", "expires_at_ms"]
    assert [(r["scope"], r["key"]) for r in rows] == sorted((r["scope"], r["key"]) for r in rows)
    assert {(r["scope"], r["key"]): r["expires_at_ms"] is not None for r in rows} == held
    assert len({r["version"] for r in rows}) == len(rows)  # the memory store's versions are store-wide

    # Into an empty engine with another adapter (file_based), then a restart of it.
    (tmp_path / "b").mkdir()
    target = make_engine_proc(STATE_FILE, workdir=tmp_path / "b").start()
    restored = pyiii("state", "restore", str(first), "--batch", "700", url=target.url)
    assert restored.returncode == 0, restored.stderr
    assert "restored 9999 values" in restored.stderr and "skipped 0" in restored.stderr
    second = tmp_path / "second.jsonl"
    assert pyiii("state", "dump", str(second), url=target.url).returncode == 0
    assert second.read_bytes() == first.read_bytes()
    assert target.stop() == 0
    target.start()
    third = tmp_path / "third.jsonl"
    assert pyiii("state", "dump", "-", url=target.url).stdout.encode() == first.read_bytes()
    assert pyiii("state", "dump", str(third), "--scope", "odd", url=target.url).returncode == 0
    assert third.read_bytes().splitlines() == [x for x in lines if json.loads(x)["scope"] == "odd"]

    # ls pages through a scope bigger than a page (1000 keys), as JSON Lines and as one table.
    users = sorted(k for (scope, k) in held if scope == "users")
    listed = pyiii("state", "ls", "users", "--json", url=target.url).stdout.splitlines()
    assert [json.loads(x)["key"] for x in listed] == users and len(users) > 2000
    table = pyiii("state", "ls", "users", url=target.url).stdout.splitlines()
    assert len(table) == len(users) + 1 and [line.split()[0] for line in table[1:]] == users
    assert (
        len(pyiii("state", "ls", "users", "--limit", "1500", "--json", url=target.url).stdout.splitlines())
        == 1500
    )

    odd = pyiii("state", "ls", "odd", url=target.url).stdout.splitlines()
    assert len(odd) == len(ODD_KEYS) + 1  # one line per key, whatever the key holds
    cells = {line.split("  ")[0].rstrip() for line in odd[1:]}
    assert {'""', '"with space"', '"new\\nline"', "ünïcødé", "😀", "a" * 300} <= cells, cells
    scopes = pyiii("state", "scopes", url=target.url).stdout.splitlines()
    assert any(line.startswith('""  ') for line in scopes) and any(
        line.startswith('"café ☕"') for line in scopes
    )

    # A second restore writes nothing: every key is there, each one reported.
    again = pyiii("state", "restore", str(first), "--json", url=target.url)
    assert again.returncode == 1
    report = json.loads(again.stdout)
    assert report["imported"] == 0 and report["skipped"] == {"exists": 9999}
    assert report["examples"][0] == {
        "line": 1,
        "reason": "exists",
        "scope": rows[0]["scope"],
        "key": rows[0]["key"],
        "current_version": rows[0]["version"],
    }
    human = pyiii("state", "restore", str(first), url=target.url)
    assert "skipped 9999: 9999 exists" in human.stderr and "line 1: " in human.stderr
    assert "and 9979 more" in human.stderr


def test_restore_reports_bad_lines_and_expired_entries(engine_proc: Any, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    dump = tmp_path / "mixed.jsonl"
    dump.write_text(
        '{"scope":"s","key":"a","value":{"x":1},"version":40,"expires_at_ms":null}\n'
        "not json at all\n"
        "\n"
        f'{{"scope":"s","key":"old","value":1,"version":41,"expires_at_ms":{now - 1000}}}\n'
        '{"scope":"s","key":"b","value":[1],"version":"seven","expires_at_ms":null}\n'
        '{"scope":"s","key":"z","value":[1],"version":0,"expires_at_ms":null}\n'
        f'{{"scope":"s","key":"c","value":"t","version":42,"expires_at_ms":{now + 600_000}}}\n'
    )
    done = pyiii("state", "restore", str(dump), url=engine_proc.url)
    assert done.returncode == 1, done.stderr  # bad lines need a look
    assert "restored 2 values" in done.stderr and "skipped 4: 3 bad line, 1 expired" in done.stderr
    assert "line 2: not a dump line" in done.stderr and "line 5: not a dump line" in done.stderr
    assert "line 6: not a dump line: Expected `int` >= 1 - at `$.version`" in done.stderr
    assert "line 4: s / old: its expiry has passed" in done.stderr
    c = ok_json("state", "get", "s", "c", url=engine_proc.url)
    assert (c["version"], c["expires_at_ms"]) == (42, now + 600_000)
    assert ok_json("state", "get", "s", "a", url=engine_proc.url)["version"] == 40
    # From stdin; only expired entries skipped: exit 0.
    fresh = '{"scope":"t","key":"k","value":1,"version":3,"expires_at_ms":null}\n'
    stale = f'{{"scope":"t","key":"o","value":1,"version":4,"expires_at_ms":{now - 5}}}\n'
    piped = pyiii("state", "restore", "-", url=engine_proc.url, stdin=fresh + stale)
    assert piped.returncode == 0, piped.stderr
    assert "restored 1 values" in piped.stderr and "1 expired" in piped.stderr


def test_dump_draws_a_progress_bar_on_a_terminal(engine_proc: Any, tmp_path: Path) -> None:
    lines = "".join(
        f'{{"scope":"p","key":"k{i:05d}","value":{i},"version":{i + 1},"expires_at_ms":null}}\n'
        for i in range(3000)
    )
    assert pyiii("state", "restore", "-", url=engine_proc.url, stdin=lines).returncode == 0
    leader, follower = pty.openpty()
    try:
        out = tmp_path / "p.jsonl"
        proc = subprocess.run(
            [PYIII, "state", "dump", str(out), "--page-size", "100", "--url", engine_proc.url],
            stderr=follower,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    text = seen.decode()
    assert "\rdump [" in text and "100.0% 3000/3000 values" in text, text
    assert out.read_text() == lines


# --- functions, workers --------------------------------------------------------------------


def test_functions_and_workers(engine_proc: Any, sdk_worker: Callable[[str], Worker]) -> None:
    w = sdk_worker(engine_proc.url)
    w.register_function("demo::hello", lambda data: {"hi": data}, description="Say hello")
    until(lambda: "demo::hello" in ok("functions", url=engine_proc.url))
    functions = ok_json("functions", "--prefix", "demo::", url=engine_proc.url)
    assert functions == [
        {
            "function_id": "demo::hello",
            "namespace": "default",
            "worker_name": "test-worker",
            "description": "Say hello",
        }
    ]
    table = ok("functions", url=engine_proc.url).splitlines()
    assert table[0].split() == ["FUNCTION", "WORKER", "DESCRIPTION"]
    assert any(line.split()[:2] == ["demo::hello", "test-worker"] for line in table)
    assert not any(line.startswith("engine::") for line in table)
    assert any(
        line.startswith("engine::functions::list")
        for line in ok("functions", "--all", url=engine_proc.url).splitlines()
    )

    workers = ok_json("workers", url=engine_proc.url)
    assert [x["name"] for x in workers] == ["test-worker"]  # not the CLI's own connection
    assert workers[0]["functions"] == ["demo::hello"] and workers[0]["id"] == w.worker_id
    assert len(ok_json("workers", "--all", url=engine_proc.url)) == 2
    table = ok("workers", url=engine_proc.url).splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "RUNTIME", "STATUS"]
    assert w.worker_id in table[1] and "demo::hello" in table[1] and " ago)" in table[1]


# --- queue -----------------------------------------------------------------------------------

QUEUE_CONFIG = (
    "workers:\n  - name: iii-state\n  - name: iii-queue\n    config:\n"
    "      adapter: {name: builtin, config: {store_method: in_memory}}\n"
    "      queue_configs:\n        jobs: {max_retries: 1, backoff_ms: 0, concurrency: 1}\n"
)


def test_queue_stats_dlq_redrive_discard(make_engine_proc: Any, sdk_worker: Callable[[str], Worker]) -> None:
    eng = make_engine_proc(QUEUE_CONFIG).start()
    url = eng.url
    healthy = {"on": False}
    done: list[Any] = []

    def job(data: Any) -> Any:
        if not healthy["on"]:
            raise RuntimeError(f"boom {data['n']}")
        done.append(data)
        return None

    w = sdk_worker(url)
    w.register_function("job::run", job)
    until(lambda: "job::run" in ok("functions", url=url))
    for n in range(3):
        w.trigger_sync(
            {"function_id": "job::run", "payload": {"n": n}, "action": {"type": "enqueue", "queue": "jobs"}}
        )
    until(lambda: len(ok_json("queue", "dlq", "jobs", url=url)) == 3)

    stats = ok_json("queue", "stats", "jobs", url=url)
    assert (stats["depth"], stats["dlq_depth"], stats["consumer_count"]) == (0, 3, 1)
    rows = ok("queue", "stats", url=url).splitlines()
    assert rows[0].split() == ["NAME", "TYPE", "DEPTH", "CONSUMERS", "DEAD", "LETTERS"]
    assert ["jobs", "function_queue", "0", "1", "3"] in [r.split() for r in rows]
    counts = ok_json("queue", "dlq", url=url)
    assert {"topic": "jobs", "broker_type": "function_queue", "message_count": 3} in counts
    letters = ok_json("queue", "dlq", "jobs", url=url)
    by_n = {m["payload"]["n"]: m["id"] for m in letters}
    table = ok("queue", "dlq", "jobs", url=url)
    assert all(i in table for i in by_n.values()) and "boom 1" in table

    assert ok("queue", "discard", "jobs", by_n[0], url=url).startswith("discarded dead letter")
    gone = pyiii("queue", "discard", "jobs", by_n[0], url=url)
    assert gone.returncode == 1 and "nothing discarded" in gone.stdout
    healthy["on"] = True
    assert "moved 1 dead letter of 'jobs'" in ok("queue", "redrive", "jobs", "--message", by_n[1], url=url)
    until(lambda: [d["n"] for d in done] == [1])
    assert "moved 1 dead letter of 'jobs'" in ok("queue", "redrive", "jobs", url=url)
    until(lambda: sorted(d["n"] for d in done) == [1, 2])
    assert ok_json("queue", "redrive", "jobs", url=url) == {"queue": "jobs", "redriven": 0}
    assert ok_json("queue", "stats", "jobs", url=url)["dlq_depth"] == 0


def test_queue_commands_without_a_queue_module(engine_proc: Any) -> None:
    for args in (("queue", "stats"), ("queue", "dlq"), ("queue", "redrive", "jobs")):
        done = pyiii(*args, url=engine_proc.url)
        assert done.returncode == 1, done.stderr
        assert "the engine runs no queue module" in done.stderr and "iii-queue" in done.stderr


# --- the README's CLI section -------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_cli_examples_run_as_written(make_engine_proc: Any, tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## CLI") :]
    section = section[: section.index("\n## ", 1)]
    config = re.search(r"```yaml\n(.*?)```", section, flags=re.S)
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert config is not None and block is not None
    eng = make_engine_proc(config.group(1)).start()
    env = {**os.environ, "III_URL": eng.url, "PATH": f"{Path(PYIII).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("III_TOKEN", None)
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) >= 15
    for line in commands:
        assert line.startswith("pyiii "), line
        expected = re.search(r"# exit (\d+)", line)
        done = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == (int(expected.group(1)) if expected else 0), (
            line,
            done.stdout,
            done.stderr,
        )
        assert "Traceback" not in done.stderr, line
    restored = json.loads(
        subprocess.run(
            ["bash", "-c", "pyiii state get users u1 --json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert restored["value"] == {"name": "Ada L."} and restored["version"] == 3


def test_state_commands_on_an_engine_without_state(make_engine_proc: Any) -> None:
    eng = make_engine_proc("modules: []\n").start()
    for args in (("state", "scopes"), ("state", "ls", "s"), ("state", "get", "s", "k"), ("state", "dump")):
        done = pyiii(*args, url=eng.url)
        assert done.returncode == 1, (args, done.stderr)
        assert "the engine runs no State module" in done.stderr and "Traceback" not in done.stderr
