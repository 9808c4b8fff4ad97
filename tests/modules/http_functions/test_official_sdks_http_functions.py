"""HTTP-invoked functions through the official SDKs (npm iii-sdk 0.22.1, PyPI iii-sdk 0.25.0).

Each SDK registers functions served by a real HTTP service on 127.0.0.1
(role ``serve-http`` of tests/compat/{node/worker.mjs,python/worker.py}), and
each SDK, and pyiii's, calls them (role ``call``) through an in-process engine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from compat.compat_kit import Spawner, prefix_of, require_compat
from support.engines import sdk_worker, url_of
from support.http_services import MakeEngine, Service

pytestmark = pytest.mark.timeout(120)

OFFICIAL = ("node-0.22", "py-0.25.0")


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    require_compat(*OFFICIAL)


async def serve(
    spawn: Spawner, version: str, url: str, function_id: str, invocation: dict[str, Any], wait_ms: int = 3000
) -> bool:
    """Start a ``serve-http`` worker; whether the function got listed within ``wait_ms``."""
    proc = await spawn.official(
        version, "serve-http", function_id, json.dumps(invocation), str(wait_ms), url=url
    )
    return bool((await proc.ready())["listed"])


async def call(spawn: Spawner, version: str, url: str, function_id: str, payload: Any) -> dict[str, Any]:
    proc = await spawn.official(version, "call", function_id, json.dumps(payload), url=url)
    return await proc.result()


async def test_official_sdks_register_and_call_http_functions(
    spawn: Spawner, make_engine: MakeEngine, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_SDK_TOKEN", "tok-42")
    server = await make_engine()
    url = url_of(server)
    for version in OFFICIAL:
        invocation = {
            "url": service.url(f"/echo/{prefix_of(version)}"),
            "method": "PUT",
            "timeout_ms": 3000,
            "headers": {"X-Custom-Header": "test-value"},
            "auth": {"type": "bearer", "token_key": "HF_SDK_TOKEN"},
        }
        assert await serve(spawn, version, url, f"{prefix_of(version)}::hf", invocation)
    async with sdk_worker(url, "pyiii-caller") as ours:
        for owner in OFFICIAL:
            fid = f"{prefix_of(owner)}::hf"
            for caller in OFFICIAL:
                out = await call(spawn, caller, url, fid, {"from": caller, "n": 1})
                result = out["result"]
                assert result["method"] == "PUT" and result["path"] == f"/echo/{prefix_of(owner)}", out
                assert result["body"]["from"] == caller and result["body"]["n"] == 1
                hit = service.hits[-1]
                assert hit.headers["X-Custom-Header"] == "test-value"
                assert hit.headers["Authorization"] == "Bearer tok-42"
                assert hit.headers["x-iii-Function-Path"] == fid
            result = await ours.trigger(fid, {"from": "pyiii"})
            assert result["body"] == {"from": "pyiii", "_caller_worker_id": ours.worker_id}
    assert len(service.hits) == len(OFFICIAL) * (len(OFFICIAL) + 1)


@pytest.mark.parametrize("version", OFFICIAL)
async def test_official_sdks_see_http_errors_and_refusals(
    spawn: Spawner, make_engine: MakeEngine, service: Service, version: str
) -> None:
    server = await make_engine()
    url = url_of(server)
    p = prefix_of(version)
    # (the engine checks a URL within milliseconds here: the DNS stub answers at once)
    listed = await asyncio.gather(
        serve(spawn, version, url, f"{p}::slow", {"url": service.url("/slow?ms=3000"), "timeout_ms": 300}),
        serve(spawn, version, url, f"{p}::down", {"url": service.url("/status/503?size=9")}),
        # refused by the guard: never listed, and calling it finds nothing
        serve(spawn, version, url, f"{p}::meta", {"url": "http://metadata.test/meta-data/"}, wait_ms=800),
        serve(spawn, version, url, f"{p}::ext", {"url": "http://example.com/hook"}, wait_ms=800),
    )
    assert listed == [True, True, False, False]
    slow, down, meta, ext = await asyncio.gather(
        *(call(spawn, version, url, f"{p}::{name}", {}) for name in ("slow", "down", "meta", "ext"))
    )
    assert slow["error"]["code"] == "http_timeout", slow
    assert "did not answer within timeout_ms=300" in slow["error"]["message"]
    assert down["error"]["code"] == "http_error", down
    assert "answered HTTP 503: xxxxxxxxx" in down["error"]["message"]
    for out in (meta, ext):
        assert out["error"]["code"] == "function_not_found", out
    assert sorted(h.path for h in service.hits) == ["/slow?ms=3000", "/status/503?size=9"]


@pytest.mark.parametrize("version", OFFICIAL)
async def test_official_sdk_unregister(
    spawn: Spawner, make_engine: MakeEngine, service: Service, version: str
) -> None:
    server = await make_engine()
    url = url_of(server)
    fid = f"{prefix_of(version)}::bye"
    proc = await spawn.official(
        version, "serve-http", fid, json.dumps({"url": service.url("/echo")}), url=url
    )
    assert (await proc.ready())["listed"]
    assert ("default", fid) in server.engine.functions
    await proc.stop()
    assert {"unregistered": fid} in proc.messages, proc.describe()
    assert ("default", fid) not in server.engine.functions
