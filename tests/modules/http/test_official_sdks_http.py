"""The official SDKs serving HTTP routes through pyiii: Node iii-sdk 0.22 and Python iii-sdk 0.25.

Each runs a worker program (programs/) that registers plain routes, a failing handler,
per-route middleware, a condition, and two ``http()``-helper handlers that stream their
response and read the raw request body through the request's channels. A real HTTP
client (httpx) drives them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compat.compat_kit import COMPAT, WorkerProc, require_compat
from support.http_engines import HttpEngine

PROGRAMS = Path(__file__).parent / "programs"
SDKS = {
    "node-0.22": (
        "node",
        lambda: ["node", str(PROGRAMS / "node_routes.mjs")],
        {"III_NODE_SDK": str(COMPAT / "node-0.22")},
    ),
    "py-0.25.0": (
        "py",
        lambda: [str(COMPAT / "py-0.25.0" / "bin" / "python"), str(PROGRAMS / "py_routes.py")],
        {},
    ),
}


@pytest.mark.parametrize("sdk", list(SDKS))
async def test_official_sdk_serves_http_routes(sdk: str, http_engine: HttpEngine) -> None:
    require_compat(sdk)
    prefix, argv, env = SDKS[sdk]
    proc = await WorkerProc.start(sdk, argv(), {"III_URL": http_engine.url, **env})
    try:
        await proc.ready()
        await http_engine.wait_route("POST", f"/{prefix}/raw")
        async with http_engine.client() as c:
            hello = await c.get(f"/{prefix}/hello")
            created = await c.post(f"/{prefix}/items/i-9?page=2", json={"name": "test item"})
            failed = await c.get(f"/{prefix}/fails")
            denied = await c.get(f"/{prefix}/secure")
            allowed = await c.get(f"/{prefix}/secure", headers={"x-token": "secret"})
            cond_no = await c.get(f"/{prefix}/cond?allow=no")
            cond_yes = await c.get(f"/{prefix}/cond?allow=yes")
            streamed = await c.get(f"/{prefix}/stream")
            raw_json = '{"z":2, "a":1}'
            raw = await c.post(
                f"/{prefix}/raw", content=raw_json, headers={"content-type": "application/json"}
            )
            # 3 MiB of non-JSON bytes: past the channel's 1 MiB buffer and the 1 MiB frame cap of
            # Python's websockets (the official Python SDK's reader).
            blob = bytes(range(256)) * 12_288
            raw_bin = await c.post(
                f"/{prefix}/raw", content=blob, headers={"content-type": "application/octet-stream"}
            )
    finally:
        await proc.stop()
    context = proc.describe()
    assert hello.status_code == 200, context
    assert hello.json() == {"message": "hello", "from": "python" if prefix == "py" else "node"}
    assert created.status_code == 201
    assert created.headers["x-item"] == "i-9"
    assert created.json() == {"id": "i-9", "got": {"name": "test item"}, "q": {"page": "2"}}
    assert failed.status_code == 500
    assert "handler broke" in failed.json()["error"]["message"]
    assert len(failed.json()["error"]["error_id"]) == 12
    assert (denied.status_code, denied.json()) == (401, {"error": "token required"})
    assert (allowed.status_code, allowed.json()) == (200, {"secret": 42})
    assert cond_no.status_code == 422 and cond_no.json()["skipped"] is True
    assert (cond_yes.status_code, cond_yes.json()) == (200, {"allowed": True})
    assert streamed.status_code == 206, (streamed.text, context)
    assert streamed.headers["content-type"] == "text/plain"
    assert streamed.headers["x-streamed"] == "yes"
    assert streamed.text == "alpha beta gamma"
    assert raw.status_code == 200, (raw.text, context)
    assert json.loads(raw.text) == {
        "parsed": {"z": 2, "a": 1},
        "raw": raw_json,
        "size": len(raw_json),
        "sum": sum(raw_json.encode()),
    }
    assert raw_bin.json() == {"parsed": None, "raw": None, "size": len(blob), "sum": sum(blob)}
    engine = http_engine.server.engine
    assert engine.stats()["pending"] == 0
