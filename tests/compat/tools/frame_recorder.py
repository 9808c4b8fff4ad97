"""Frame recorder: a throw-away stand-in engine used to capture official-SDK traffic.

NOT a reference implementation (docs/protocol.md describes the protocol). It logs every connection
(path + handshake headers) and every frame (text JSON, binary LOGS/OTLP/MTRC telemetry) as JSON
lines, routes invocations between workers, and fakes state::set/get/update (increment/set ops) and
the `state` trigger well enough for tests/compat/{node,python}/worker.* to run against it.

    .compat/py-0.25.0/bin/python tests/compat/tools/frame_recorder.py PORT LOGFILE.jsonl
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

PORT = int(sys.argv[1])
LOG = open(sys.argv[2], "a", buffering=1)  # noqa: SIM115
conns: dict[str, ServerConnection] = {}  # worker_id -> socket
functions: dict[str, str] = {}  # function id -> worker_id
pending: dict[str, str] = {}  # invocation_id -> caller worker_id
state: dict[tuple[Any, Any], Any] = {}  # (scope, key) -> value
triggers: list[tuple[str, dict[str, Any]]] = []  # (worker_id, registertrigger msg)
TELEMETRY = (b"LOGS", b"OTLP", b"MTRC")


def log(**kw: Any) -> None:
    LOG.write(json.dumps({"t": round(time.time(), 3), **kw}) + "\n")


async def send(wid: str, msg: dict[str, Any]) -> None:
    if (ws := conns.get(wid)) is not None:
        await ws.send(json.dumps(msg))


async def fire_state(scope: Any, key: Any, old: Any, new: Any) -> None:
    event = {
        "type": "state",
        "event_type": "state:updated" if old is not None else "state:created",
        "scope": scope,
        "key": key,
        "old_value": old,
        "new_value": new,
    }
    for wid, t in list(triggers):
        cfg = t.get("config") or {}
        if cfg.get("scope") in (None, scope) and cfg.get("key") in (None, key):
            await send(
                wid,
                {
                    "type": "invokefunction",
                    "invocation_id": str(uuid.uuid4()),
                    "function_id": t["function_id"],
                    "data": event,
                },
            )


async def builtin(fid: str, d: dict[str, Any]) -> Any:
    sk = (d.get("scope"), d.get("key"))
    old = state.get(sk)
    if fid == "state::get":
        return old
    if fid == "state::set":
        new = d.get("value")
    elif fid == "state::update":
        new = dict(old or {})
        for op in d.get("ops", []):
            if op["type"] == "increment":
                new[op["path"]] = new.get(op["path"], 0) + op.get("by", 1)
            elif op["type"] == "set":
                new[op["path"]] = op["value"]
    else:
        return None  # engine::* and anything else: no result
    state[sk] = new
    await fire_state(*sk, old, new)
    return {"old_value": old, "new_value": new}


async def on_invoke(wid: str, msg: dict[str, Any]) -> None:
    fid, iid, data = msg["function_id"], msg.get("invocation_id"), msg.get("data")
    reply: dict[str, Any] = {"type": "invocationresult", "invocation_id": iid, "function_id": fid}
    if fid.startswith(("state::", "engine::")):
        result = await builtin(fid, data or {})
        if iid:
            await send(wid, reply if result is None else {**reply, "result": result})
        return
    owner = functions.get(fid)
    if owner is None:
        if iid:
            err = {"code": "function_not_found", "message": f"Function {fid} not found in namespace default."}
            await send(wid, {**reply, "error": err})
        return
    if iid:
        pending[iid] = wid
    if isinstance(data, dict):
        data = {**data, "_caller_worker_id": wid}
    await send(
        owner,
        {
            "type": "invokefunction",
            "invocation_id": iid or str(uuid.uuid4()),
            "function_id": fid,
            "data": data,
        },
    )


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path
    log(ev="connect", path=path, headers=dict(ws.request.headers.raw_items()))
    if path == "/otel":
        try:
            async for m in ws:
                if isinstance(m, bytes):
                    log(ev="otel-bin", prefix=m[:4].decode(), body=json.loads(m[4:]))
                else:
                    log(ev="otel-text", body=m)
        except ConnectionClosed as e:  # Python SDKs close /otel with 1011 on shutdown
            log(ev="otel-closed", code=e.rcvd.code if e.rcvd else None)
        return
    wid = str(uuid.uuid4())
    conns[wid] = ws
    await ws.send(
        json.dumps({"type": "workerregistered", "worker_id": wid, "reattach_token": str(uuid.uuid4())})
    )
    try:
        async for m in ws:
            if isinstance(m, bytes) and m[:4] in TELEMETRY:  # old SDKs send telemetry on "/"
                log(ev="bin-on-root", wid=wid, prefix=m[:4].decode(), body=json.loads(m[4:]))
                continue
            msg = json.loads(m)
            log(ev="recv", wid=wid, msg=msg)
            t = msg.get("type")
            if t == "registerfunction":
                functions[msg["id"]] = wid
            elif t == "registertrigger" and msg.get("trigger_type") == "state":
                triggers.append((wid, msg))
            elif t == "invokefunction":
                await on_invoke(wid, msg)
            elif t == "invocationresult" and (caller := pending.pop(msg.get("invocation_id"), None)):
                out = {k: v for k, v in msg.items() if v is not None}
                if isinstance(out.get("error"), dict):
                    out["error"] = {k: v for k, v in out["error"].items() if v is not None}
                await send(caller, out)
    finally:
        log(ev="disconnect", wid=wid)
        conns.pop(wid, None)
        for fid in [f for f, owner in functions.items() if owner == wid]:
            del functions[fid]
        triggers[:] = [x for x in triggers if x[0] != wid]


async def main() -> None:
    async with serve(handler, "127.0.0.1", PORT, max_size=None):
        await asyncio.Future()


asyncio.run(main())
