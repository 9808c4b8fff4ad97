"""RBAC scenarios with the official Python iii-sdk 0.25 (tests/compat/test_rbac_official.py).

    III_URL=ws://127.0.0.1:INTERNAL III_RBAC_URL=ws://127.0.0.1:PUBLIC python rbac.py

A trusted worker on the internal listener serves the auth function, the
middleware, the three registration hooks and the functions; clients on the
RBAC listener (the header x-token picks their AuthResult) try calls and
registrations. Prints ONE JSON object with what every step saw.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

from iii import InitOptions, register_worker
from iii.trigger import TriggerConfig, TriggerHandler

INTERNAL = os.environ["III_URL"]
PUBLIC = os.environ["III_RBAC_URL"]
seen: dict[str, list[Any]] = {"auth": [], "mw": [], "fn": [], "trig": [], "tt": []}

GRANTS: dict[str, dict[str, Any]] = {
    "admin": {
        "allowed_functions": ["ex::granted"],
        "allow_trigger_type_registration": True,
        "allowed_trigger_types": ["ex-type", "adm-type"],
        "context": {"user": "u-admin"},
    },
    "restricted": {"forbidden_functions": ["ex::public::echo"], "context": {"user": "u-restricted"}},
    "prefixed": {"function_registration_prefix": "tenant", "context": {"user": "u-prefixed"}},
}


def err(e: BaseException) -> dict[str, Any]:
    return {"code": getattr(e, "code", None), "message": str(getattr(e, "message", e))}


def attempt(client: Any, function_id: str, payload: Any = None) -> dict[str, Any]:
    try:
        return {
            "result": client.trigger(
                {"function_id": function_id, "payload": payload or {}, "timeout_ms": 5000}
            )
        }
    except Exception as e:
        return {"error": err(e)}


class Noop(TriggerHandler):
    async def register_trigger(self, config: TriggerConfig) -> None:
        pass

    async def unregister_trigger(self, config: TriggerConfig) -> None:
        pass


server = register_worker(INTERNAL, InitOptions(worker_name="rbac-server", otel={"enabled": False}))


def auth(data: dict[str, Any]) -> Any:
    seen["auth"].append(data)
    token = data["headers"].get("x-token")
    if token in GRANTS:
        return GRANTS[token]
    raise Exception("invalid token")


def middleware(data: dict[str, Any]) -> Any:
    seen["mw"].append({"function_id": data["function_id"], "context": data["context"]})
    payload = {**(data.get("payload") or {}), "via_mw": data["context"].get("user")}
    return server.trigger({"function_id": data["function_id"], "payload": payload})


def on_fn(data: dict[str, Any]) -> Any:
    seen["fn"].append(data)
    if data["function_id"].startswith("denied::"):
        raise Exception("no such registrations")
    if data["function_id"] == "rw::fn":
        return {"description": "rewritten by the hook", "metadata": {"hooked": True}}
    return {}


def on_trig(data: dict[str, Any]) -> Any:
    seen["trig"].append(data)
    if data["function_id"].startswith("denied::"):
        raise Exception("no such triggers")
    return {}


def on_tt(data: dict[str, Any]) -> Any:
    seen["tt"].append(data)
    if data["trigger_type_id"].startswith("denied-tt"):
        raise Exception("no such trigger types")
    return {}


for fid, handler in (
    ("rb::auth", auth),
    ("rb::mw", middleware),
    ("rb::on-fn", on_fn),
    ("rb::on-trig", on_trig),
    ("rb::on-tt", on_tt),
    ("ex::public::echo", lambda d: {"echo": {k: v for k, v in d.items() if not k.startswith("_")}}),
    ("ex::granted", lambda d: {"granted": True}),
    ("ex::private", lambda d: {"private": True}),
):
    server.register_function(fid, handler)
server.register_function("ex::meta", lambda d: {"meta": True}, metadata={"public": True})
server.register_trigger_type({"id": "ex-type", "description": "RBAC test type"}, Noop())
time.sleep(0.5)

out: dict[str, Any] = {}


def client(token: str) -> Any:
    return register_worker(
        PUBLIC,
        InitOptions(
            worker_name=f"c-{token}-{uuid.uuid4().hex[:6]}",
            headers={"x-token": token},
            otel={"enabled": False},
        ),
    )


def listed(worker: Any) -> list[str]:
    res = worker.trigger({"function_id": "engine::functions::list", "payload": {}})
    return sorted(f["function_id"] for f in res["functions"])


admin = client("admin")
out["admin_echo"] = attempt(admin, "ex::public::echo", {"msg": "hi"})
out["admin_granted"] = attempt(admin, "ex::granted")
out["admin_meta"] = attempt(admin, "ex::meta")
out["admin_private"] = attempt(admin, "ex::private")
out["admin_missing"] = attempt(admin, "ex::does-not-exist")
out["admin_log"] = attempt(admin, "engine::log::info", {"message": "infrastructure call"})
out["admin_list"] = listed(admin)
out["auth_input"] = seen["auth"][-1]

# registrations through the RBAC listener
admin.register_function("denied::blocked", lambda d: {"reached": True})
admin.register_function("rw::fn", lambda d: {"rw": True})
admin.register_function("own::target", lambda d: {"own": True})
admin.register_trigger_type({"id": "denied-tt::x", "description": "should be denied"}, Noop())
admin.register_trigger_type({"id": "adm-type", "description": "allowed"}, Noop())
admin.register_trigger({"type": "not-allowed-type", "function_id": "own::target", "config": {}})
admin.register_trigger({"type": "ex-type", "function_id": "denied::fn", "config": {"k": 1}})
admin.register_trigger({"type": "ex-type", "function_id": "ex::private", "config": {}})
admin.register_trigger({"type": "ex-type", "function_id": "own::target", "config": {"k": 2}})
time.sleep(1.0)
out["blocked_from_internal"] = attempt(server, "denied::blocked")
out["rw_from_internal"] = attempt(server, "rw::fn")
internal_list = server.trigger({"function_id": "engine::functions::list", "payload": {}})["functions"]
out["rw_listed"] = next((f for f in internal_list if f["function_id"] == "rw::fn"), None)
types = server.trigger({"function_id": "engine::triggers::list", "payload": {"include_internal": True}})
out["trigger_types"] = sorted(t["id"] for t in types["triggers"])
bound = server.trigger({"function_id": "engine::registered-triggers::list", "payload": {}})
out["bound"] = sorted(f"{t['trigger_type']}>{t['function_id']}" for t in bound["registered_triggers"])

restricted = client("restricted")
out["restricted_echo"] = attempt(restricted, "ex::public::echo")
out["restricted_meta"] = attempt(restricted, "ex::meta")
out["restricted_list"] = listed(restricted)
tt_before = len(seen["tt"])
restricted.register_trigger_type({"id": "restricted-type", "description": "not granted"}, Noop())
time.sleep(0.5)
out["restricted_tt_hook_calls"] = len(seen["tt"]) - tt_before
types = server.trigger({"function_id": "engine::triggers::list", "payload": {"include_internal": True}})
out["restricted_type_registered"] = any(t["id"] == "restricted-type" for t in types["triggers"])

prefixed = client("prefixed")
handle = prefixed.register_function("mine", lambda d: {"from": "tenant"})
time.sleep(0.5)
out["prefixed_call"] = attempt(server, "tenant::mine")
handle.unregister()
time.sleep(0.5)
out["prefixed_after_unregister"] = attempt(server, "tenant::mine")

out["hooks"] = {
    "fn": [(d["function_id"], d["context"]) for d in seen["fn"]],
    "trig": [(d["function_id"], d["trigger_type"], d["context"]) for d in seen["trig"]],
    "tt": [(d["trigger_type_id"], d["description"], d["context"]) for d in seen["tt"]],
}
out["middleware"] = seen["mw"]

for w in (prefixed, restricted, admin, server):
    w.shutdown()
sys.stdout.write(json.dumps(out) + "\n")
sys.stdout.flush()
