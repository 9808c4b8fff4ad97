"""Several iii-worker-manager entries: one listener each; bad entries stop the engine."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyiii.config import parse_config
from pyiii.errors import ConfigError

TWO = """\
workers:
  - name: iii-worker-manager
    config: {port: 41001}
  - name: iii-worker-manager
    config:
      host: 0.0.0.0
      port: 41002
      auth_token: tok
      middleware_function_id: mw::fn
      limits: {max_connections: 5, max_frame_bytes: 2048}
      rbac:
        auth_function_id: auth::fn
        on_function_registration_function_id: hook::fn
        on_trigger_registration_function_id: hook::trig
        on_trigger_type_registration_function_id: hook::tt
        auth_timeout_ms: 250
        expose_functions:
          - match("api::*")
          - {match: "x::*", namespace: other}
          - metadata: {public: true, name: match("*pub*")}
"""


def test_first_entry_is_main_and_others_are_extra_listeners() -> None:
    cfg = parse_config(TWO)
    assert cfg.port == 41001 and cfg.rbac is None
    (extra,) = cfg.extra_listeners
    assert (extra.host, extra.port, extra.auth_token) == ("0.0.0.0", 41002, "tok")
    assert extra.middleware_function_id == "mw::fn"
    assert (extra.max_connections, extra.max_frame_bytes) == (5, 2048)
    policy = extra.rbac
    assert policy is not None
    assert policy.auth_function_id == "auth::fn" and policy.auth_timeout_ms == 250
    assert policy.on_trigger_type_registration_function_id == "hook::tt"
    assert [f.namespace for f in policy.expose_functions] == ["default", "other", "default"]
    assert policy.exposes("api::users::list", "default", None)
    assert not policy.exposes("x::y", "default", None) and policy.exposes("x::y", "other", None)
    assert policy.exposes("z", "default", {"public": True, "name": "my-public-fn"})
    assert [x.port for x in cfg.listeners] == [41001, 41002]
    assert cfg.modules_seen.count("iii-worker-manager") == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("port: 41002", "port: 41001"), "port 41001 is already used by workers[0]"),
        (
            ("auth_token: tok", "auth_tokn: tok"),
            "config.auth_tokn: unknown key 'auth_tokn'; did you mean 'auth_token'?",
        ),
        (("auth_timeout_ms: 250", "auth_timeout: 250"), "rbac.auth_timeout: unknown key"),
        (('- match("api::*")', '- mach("api::*")'), 'expose_functions[0]: expected match("pattern")'),
        (('{match: "x::*", namespace: other}', '{match: "x::*", namespce: other}'), "unknown key 'namespce'"),
        (
            ('- metadata: {public: true, name: match("*pub*")}', '- {metadata: {public: true}, match: "a"}'),
            "exactly one of",
        ),
        (
            ("limits: {max_connections: 5", "limits: {max_pending_per_worker: 5"),
            "applies to the whole engine",
        ),
        (("      port: 41002\n", ""), "every iii-worker-manager entry after the first needs its own port"),
    ],
)
def test_bad_listener_entries(change: tuple[str, str], expected: str) -> None:
    text = TWO.replace(*change)
    assert text != TWO
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_port_clash_with_wildcard_host() -> None:
    text = TWO.replace("config: {port: 41001}", "config: {port: 41002, host: 127.0.0.1}")
    with pytest.raises(ConfigError, match="port 41002 is already used"):
        parse_config(text)


def test_bad_entry_stops_the_engine_with_the_config_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "iii-config.yaml"
    path.write_text(TWO.replace("port: 41002", "port: 41001"))
    proc = subprocess.run(
        [sys.executable, "-m", "pyiii", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("pyiii: cannot start: ") and "port 41001 is already used" in lines[-1]


def test_second_listener_port_in_use_names_that_listener(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "iii-config.yaml"
        path.write_text(
            "workers:\n  - name: iii-worker-manager\n"
            f"  - name: iii-worker-manager\n    config: {{port: {port}}}\n"
        )
        main = socket.socket()
        main.bind(("127.0.0.1", 0))
        free = main.getsockname()[1]
        main.close()
        proc = subprocess.run(
            [sys.executable, "-m", "pyiii", "serve", "--config", str(path), "--port", str(free)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("pyiii: cannot start: ") and f"127.0.0.1:{port} is already in use" in last
