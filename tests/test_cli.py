"""The ``pyiii`` command as a user runs it: ``python -m pyiii ...`` subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.engines import free_port

PYIII = [sys.executable, "-m", "pyiii"]


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("III_URL", "III_TOKEN")}
    return subprocess.run(
        [*PYIII, *args], cwd=cwd, capture_output=True, text=True, timeout=30, env={**environ, **(env or {})}
    )


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- config errors: exit 2, one message naming the file and the entry ----------------

BAD_CONFIGS: dict[str, tuple[str | bytes, list[str]]] = {
    "unknown-module-class": (
        "modules:\n  - class: modules::state::StateModul\n",
        ["modules[0].class", "modules::state::StateModul", "did you mean 'modules::state::StateModule'"],
    ),
    "unknown-worker-near-miss": (
        "workers:\n  - name: iii-stat\n",
        ["workers[0].name", "iii-stat", "did you mean 'iii-state'"],
    ),
    "port-not-a-number": ("port: abc\n", ["port", "'abc'", "integer"]),
    "manager-port-not-a-number": (
        "workers:\n  - name: iii-worker-manager\n    config: { port: abc }\n",
        ["workers[0]", "iii-worker-manager", "port", "'abc'"],
    ),
    "invalid-yaml": ("workers: [\n  - name: iii-state\n", ["invalid YAML", "line 2"]),
    "unknown-adapter": (
        "workers:\n  - name: iii-state\n    config:\n      adapter: { name: nosuch, config: {} }\n",
        ["workers[0]", "adapter", "nosuch"],
    ),
    "not-utf8": (b"workers:\n  - name: \xff\xfe\n", ["cannot read", "UTF-8"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_2_naming_file_and_entry(tmp_path: Path, case: str) -> None:
    content, expected = BAD_CONFIGS[case]
    path = tmp_path / f"{case}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    proc = run("serve", "--config", str(path), "--port", str(free_port()), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "engine ready" not in proc.stdout


def test_missing_explicit_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "iii-config.yaml"
    proc = run("serve", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert str(path) in proc.stderr
    assert "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "iii-config.yaml"
    path.mkdir()  # exists but cannot be read as a file (works even as root)
    proc = run("serve", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert str(path) in proc.stderr
    assert "cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- starting and stopping -----------------------------------------------------------


def test_no_config_file_starts_with_in_memory_state(make_engine_proc: Any, tmp_path: Path) -> None:
    assert not list(tmp_path.glob("*.yaml"))
    eng = make_engine_proc().start()
    assert f"engine ready on ws://127.0.0.1:{eng.port}" in eng.output
    assert "no config file" in eng.output
    assert "in-memory" in eng.output
    assert port_open(eng.port)
    assert eng.stop(signal.SIGTERM) == 0
    assert not port_open(eng.port)
    assert not list(tmp_path.glob("*.db")), "in-memory state must not write files"


def test_sigterm_right_after_ready_line_exits_cleanly(tmp_path: Path) -> None:
    # The ready line tells scripts the engine is up; a SIGTERM sent as soon as
    # it appears must take the clean-stop path (exit 0), not kill the process.
    for _ in range(8):
        proc = subprocess.Popen(
            [*PYIII, "serve", "--port", str(free_port())],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "engine ready on" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_port_flag_overrides_config(make_engine_proc: Any) -> None:
    config_port = free_port()
    eng = make_engine_proc(f"port: {config_port}\nmodules: []\n").start()
    assert eng.port != config_port
    assert f"engine ready on ws://127.0.0.1:{eng.port}" in eng.output
    assert port_open(eng.port)
    assert not port_open(config_port)


def test_port_in_use_exits_2_with_a_hint_and_creates_no_store(tmp_path: Path) -> None:
    config = tmp_path / "iii-config.yaml"
    config.write_text(
        "workers:\n  - name: iii-state\n    config:\n"
        "      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state_store.db}}\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run("serve", "--config", str(config), "--port", str(port), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (
        f"pyiii: cannot start: 127.0.0.1:{port} is already in use (another pyiii or iii engine?): stop it, "
        "or choose another port with --port N (or iii-worker-manager.config.port)"
    )
    assert "Errno" not in proc.stderr and "engine ready" not in proc.stdout
    # the listener is bound before the State module opens its store
    assert not (tmp_path / "data").exists()


def test_host_that_is_not_local_exits_2(tmp_path: Path) -> None:
    proc = run("serve", "--host", "192.0.2.1", "--port", str(free_port()), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "is '192.0.2.1' an address of this machine" in proc.stderr and "Fix --host" in proc.stderr
    assert "Traceback" not in proc.stderr


FILE_CONFIG = (
    "workers:\n  - name: iii-state\n    config:\n"
    "      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state_store.db}}\n"
)


def test_startup_summary_names_config_store_contents_builtins_and_address(
    make_engine_proc: Any, tmp_path: Path
) -> None:
    eng = make_engine_proc(FILE_CONFIG).start()
    for scope, key in (("users", "u1"), ("users", "u2"), ("orders", "o1")):
        payload = json.dumps({"scope": scope, "key": key, "value": 1})
        assert run("trigger", "state::set", payload, "--url", eng.url).returncode == 0
    assert eng.stop() == 0
    seen = len(eng.output.splitlines())
    eng.start()
    lines = [line.split("pyiii.engine: ", 1)[-1] for line in eng.output.splitlines()[seen:]]
    store = tmp_path / "data" / "state_store.db"
    assert lines[:4] == [
        f"pyiii {__import__('pyiii').__version__}: config {tmp_path / 'iii-config.yaml'}",
        f"module iii-state: kv file_based at {store}: 2 scopes and 3 keys found "
        "(every write committed before it is acknowledged)",
        lines[2],
        f"listening on ws://127.0.0.1:{eng.port} (workers on /, telemetry on /otel; no auth token)",
    ], "\n".join(lines)
    assert re.fullmatch(
        r"\d+ built-in functions \(engine::\*, state::\*\); trigger types: engine::functions-available, "
        r"engine::workers-available, log, state",
        lines[2],
    ), lines[2]


# --- trigger --------------------------------------------------------------------------


def test_trigger_prints_function_list(engine_proc: Any) -> None:
    proc = run("trigger", "engine::functions::list", "--url", engine_proc.url)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    ids = {f["function_id"] for f in out["functions"]}
    assert {"state::get", "state::set"} <= ids


def test_trigger_with_payload_round_trips_state(engine_proc: Any) -> None:
    payload = json.dumps({"scope": "cli", "key": "k", "value": {"n": 1}})
    assert run("trigger", "state::set", payload, "--url", engine_proc.url).returncode == 0
    proc = run("trigger", "state::get", '{"scope": "cli", "key": "k"}', "--url", engine_proc.url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"n": 1}


def test_trigger_unknown_function_fails(engine_proc: Any) -> None:
    proc = run("trigger", "nope::x", "--url", engine_proc.url)
    assert proc.returncode != 0
    assert "function_not_found" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_trigger_without_engine_fails_cleanly(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    proc = run("trigger", "engine::functions::list", "--url", url, "--timeout-ms", "2000", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


def test_trigger_rejects_invalid_json_payload(tmp_path: Path) -> None:
    proc = run("trigger", "state::get", "{not json", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not valid JSON" in proc.stderr


TOKEN_CONFIG = "workers:\n  - name: iii-worker-manager\n    config: { auth_token: tok-123 }\n"


def test_trigger_sends_the_token_from_the_flag_or_the_environment(make_engine_proc: Any) -> None:
    eng = make_engine_proc(TOKEN_CONFIG).start()
    refused = run("trigger", "engine::functions::list", "--url", eng.url)
    assert refused.returncode == 3 and "Traceback" not in refused.stderr
    assert "--token or $III_TOKEN" in refused.stderr, refused.stderr
    wrong = run("trigger", "engine::functions::list", "--url", eng.url, "--token", "nope")
    assert wrong.returncode == 3 and "--token or $III_TOKEN" in wrong.stderr
    by_flag = run("trigger", "engine::functions::list", "--url", eng.url, "--token", "tok-123")
    assert by_flag.returncode == 0, by_flag.stderr
    assert "functions" in json.loads(by_flag.stdout)
    by_env = run("trigger", "engine::functions::list", env={"III_URL": eng.url, "III_TOKEN": "tok-123"})
    assert by_env.returncode == 0, by_env.stderr
    # the flag wins over the environment
    env = {"III_URL": eng.url, "III_TOKEN": "tok-123"}
    both = run("trigger", "engine::functions::list", "--token", "nope", env=env)
    assert both.returncode == 3


def test_trigger_help_names_its_flags_and_environment() -> None:
    out = run("trigger", "--help").stdout
    for word in ("--url", "--token", "--timeout-ms", "III_URL", "III_TOKEN"):
        assert word in out, word


# --- help ------------------------------------------------------------------------------


def test_help() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: pyiii")
    for word in ("serve", "trigger", "--config", "--port"):
        assert word in proc.stdout
    assert re.search(r"pyiii \S+", run("--version").stdout)
