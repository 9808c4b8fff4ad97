"""RBAC with the official SDKs, unchanged: Node iii-sdk 0.22.1 and Python iii-sdk 0.25.0.

One engine with an internal listener and an RBAC listener (the shape of the
official SDKs' own test config: middleware, auth function, the three
registration hooks, `match(...)` and `metadata:` filters). The programs
tests/compat/node/rbac.mjs and tests/compat/python/rbac.py run the same
steps with each SDK and print what they saw; every AuthResult field and hook
is checked here.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from compat_kit import COMPAT, ROOT, require_compat

from support.engine_process import EngineProcess
from support.engines import free_port

pytestmark = pytest.mark.timeout(180)

CONFIG = """\
workers:
  - name: iii-worker-manager
  - name: iii-worker-manager
    config:
      port: {public}
      middleware_function_id: rb::mw
      rbac:
        auth_function_id: rb::auth
        on_function_registration_function_id: rb::on-fn
        on_trigger_registration_function_id: rb::on-trig
        on_trigger_type_registration_function_id: rb::on-tt
        expose_functions:
          - match("ex::public::*")
          - match("engine::functions::list")
          - metadata:
              public: true
  - name: iii-state
"""


def _argv(version: str) -> tuple[list[str], dict[str, str]]:
    if version == "node-0.22":
        return ["node", str(ROOT / "tests/compat/node/rbac.mjs")], {"III_NODE_SDK": str(COMPAT / version)}
    return [str(COMPAT / version / "bin/python"), str(ROOT / "tests/compat/python/rbac.py")], {}


async def _run(version: str, tmp_path: Path) -> tuple[dict[str, Any], EngineProcess]:
    public = free_port()
    engine = EngineProcess(tmp_path, CONFIG.format(public=public)).start()
    argv, env = _argv(version)
    env = {**os.environ, **env, "III_URL": engine.url, "III_RBAC_URL": f"ws://127.0.0.1:{public}"}
    env.pop("III_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 150)
    finally:
        if proc.returncode is None:
            proc.kill()
        engine.stop()
    if proc.returncode != 0 or not out.strip():
        sys.stderr.write(err.decode()[-4000:])
        pytest.fail(
            f"{version} RBAC program failed (exit {proc.returncode}); engine:\n{engine.output[-3000:]}"
        )
    return json.loads(out.decode().strip().splitlines()[-1]), engine


def _message(step: dict[str, Any]) -> str:
    assert "error" in step, step
    return str(step["error"]["message"])


@pytest.mark.parametrize("version", ["node-0.22", "py-0.25.0"])
async def test_rbac_listener_with_official_sdk(version: str, tmp_path: Path) -> None:
    require_compat(version)
    got, engine = await _run(version, tmp_path)

    # auth: AuthInput shape; middleware saw every non-engine call with the session's context
    auth = got["auth_input"]
    assert set(auth) == {"headers", "query_params", "ip_address"}
    assert auth["headers"]["x-token"] == "admin" and auth["ip_address"] == "127.0.0.1"
    assert auth["query_params"] == {}
    assert got["admin_echo"] == {"result": {"echo": {"msg": "hi", "via_mw": "u-admin"}}}
    mw = {m["function_id"]: m["context"] for m in got["middleware"]}
    assert mw["ex::public::echo"] == {"user": "u-admin"}
    assert "engine::functions::list" not in mw and "engine::log::info" not in mw  # built-ins skip it

    # allowed_functions, metadata filter, infrastructure carve-out, hidden and missing functions
    assert got["admin_granted"] == {"result": {"granted": True}}
    assert got["admin_meta"] == {"result": {"meta": True}}
    assert "error" not in got["admin_log"]
    for step, fid in (("admin_private", "ex::private"), ("admin_missing", "ex::does-not-exist")):
        assert got[step]["error"]["code"] == "FORBIDDEN"
        assert f"function '{fid}' not allowed (not in this listener's rbac.expose_functions)" in _message(
            got[step]
        )
    # discovery lists only what the session may call
    assert got["admin_list"] == ["ex::granted", "ex::meta", "ex::public::echo"]

    # forbidden_functions beats expose_functions; context differs per session
    assert got["restricted_echo"]["error"]["code"] == "FORBIDDEN"
    assert "in this connection's forbidden_functions" in _message(got["restricted_echo"])
    assert got["restricted_meta"] == {"result": {"meta": True}}
    assert got["restricted_list"] == ["ex::meta"]

    # on_function_registration: deny, rewrite (description + metadata), allow
    assert got["blocked_from_internal"]["error"]["code"] == "function_not_found"
    assert got["rw_from_internal"] == {"result": {"rw": True}}
    assert got["rw_listed"]["description"] == "rewritten by the hook"
    assert got["rw_listed"]["metadata"] == {"hooked": True}
    fn_hooks = got["hooks"]["fn"]
    assert [f for f, _ in fn_hooks] == ["denied::blocked", "rw::fn", "own::target", "mine"]
    assert fn_hooks[0][1] == {"user": "u-admin"} and fn_hooks[3][1] == {"user": "u-prefixed"}

    # allow_trigger_type_registration + on_trigger_type_registration
    assert "adm-type" in got["trigger_types"] and "denied-tt::x" not in got["trigger_types"]
    assert [t[0] for t in got["hooks"]["tt"]] == ["denied-tt::x", "adm-type"]
    assert got["hooks"]["tt"][0][1:] == ["should be denied", {"user": "u-admin"}]
    assert got["restricted_tt_hook_calls"] == 0 and got["restricted_type_registered"] is False

    # allowed_trigger_types, on_trigger_registration, and the target check
    assert got["bound"] == ["ex-type>own::target"]
    trig_hooks = got["hooks"]["trig"]
    assert [(f, t) for f, t, _ in trig_hooks] == [
        ("denied::fn", "ex-type"),
        ("ex::private", "ex-type"),
        ("own::target", "ex-type"),
    ]  # "not-allowed-type" was refused before the hook
    assert all(c == {"user": "u-admin"} for _, _, c in trig_hooks)

    # function_registration_prefix: registered as tenant::mine, invoked back as "mine", unregistered
    assert got["prefixed_call"] == {"result": {"from": "tenant"}}
    assert got["prefixed_after_unregister"]["error"]["code"] == "function_not_found"

    log = engine.output
    assert "refused ex::private for worker" in log and "denied by rb::on-fn" in log
