"""Functions served by a real HTTP service on 127.0.0.1, registered and called through the engine."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from pyiii import IIIError
from pyiii.engine.server import Server
from support.engines import sdk_worker, url_of
from support.http_services import DEFAULT_DNS, LOCAL_SECURITY, MakeEngine, RawWorker, Service, StubDNS

pytestmark = pytest.mark.timeout(60)


async def until_registered(server: Server, function_id: str, present: bool = True) -> None:
    async with asyncio.timeout(5):
        while (("default", function_id) in server.engine.functions) != present:
            await asyncio.sleep(0.01)


async def refusal(raw: RawWorker, function_id: str, invocation: dict[str, Any]) -> dict[str, Any]:
    """Register and return the ``error`` frame the engine answers with."""
    await raw.register(function_id, invocation)
    frame = await raw.next()
    assert frame["type"] == "error", frame
    assert frame["error"]["function_id"] == function_id
    return dict(frame["error"])


async def test_sdk_registers_and_calls_an_http_function(make_engine: MakeEngine, service: Service) -> None:
    server = await make_engine()
    url = url_of(server)
    async with sdk_worker(url, "owner") as owner, sdk_worker(url, "caller") as caller:
        owner.register_http_function(
            "orders::quote", service.url("/echo/quote"), timeout_ms=3000, headers={"X-Tenant": "acme"}
        )
        await until_registered(server, "orders::quote")
        result = await caller.trigger("orders::quote", {"sku": "A-1", "qty": 3})
        assert result["method"] == "POST" and result["path"] == "/echo/quote"
        # the payload as sent, plus who called (like a routed call)
        assert result["body"] == {"sku": "A-1", "qty": 3, "_caller_worker_id": caller.worker_id}
        hit = service.hits[-1]
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["X-Tenant"] == "acme"
        assert hit.headers["x-iii-Function-Path"] == "orders::quote"
        assert len(hit.headers["x-iii-Invocation-ID"]) == 36
        assert abs(int(hit.headers["x-iii-Timestamp"]) - time.time()) < 5
        listed = await caller.trigger("engine::functions::list", {})
        assert "orders::quote" in [f["function_id"] for f in listed["functions"]]
        # many calls at once, each answered with its own payload
        results = await asyncio.gather(*(caller.trigger("orders::quote", {"n": n}) for n in range(50)))
        assert [r["body"]["n"] for r in results] == list(range(50))


async def test_a_trigger_calls_an_http_function(make_engine: MakeEngine, service: Service) -> None:
    # a webhook: every message published on a topic is POSTed to the service
    server = await make_engine(LOCAL_SECURITY + "  - name: iii-pubsub\n")
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("hook::orders", service.url("/echo/hook"))
        w.register_trigger(
            {"type": "subscribe", "function_id": "hook::orders", "config": {"topic": "orders"}}
        )
        await until_registered(server, "hook::orders")
        await asyncio.sleep(0.1)  # the trigger registration travels after the function's
        for n in range(3):
            await w.publish_event("orders", {"order": n})
        hits = await service.wait_hits(3)
        assert sorted(h.json()["order"] for h in hits) == [0, 1, 2]
        assert {h.path for h in hits} == {"/echo/hook"}


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_methods(make_engine: MakeEngine, service: Service, method: str) -> None:
    server = await make_engine()
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("m::x", service.url("/echo"), method=method)
        await until_registered(server, "m::x")
        result = await w.trigger("m::x", {"k": 1})
        assert result["method"] == method
        assert service.hits[-1].json()["k"] == 1


async def test_answers_without_a_result(make_engine: MakeEngine, service: Service) -> None:
    server = await make_engine()
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("a::empty", service.url("/raw?status=204"))
        w.register_http_function("a::notjson", service.url("/raw?text=not-json"))
        await until_registered(server, "a::notjson")
        assert await w.trigger("a::empty", {}) is None
        with pytest.raises(IIIError) as info:
            await w.trigger("a::notjson", {})
        assert info.value.code == "invalid_response"
        assert "HTTP 200 with a body that is not JSON: not-json" in info.value.message


async def test_unregister_and_disconnect_remove_the_function(
    make_engine: MakeEngine, service: Service
) -> None:
    server = await make_engine()
    url = url_of(server)
    async with sdk_worker(url, "caller") as caller:
        async with sdk_worker(url, "owner") as owner:
            ref = owner.register_http_function("gone::a", service.url("/echo"))
            owner.register_http_function("gone::b", service.url("/echo"))
            await until_registered(server, "gone::b")
            await caller.trigger("gone::a", {})
            ref.unregister()
            await until_registered(server, "gone::a", present=False)
            hits = len(service.hits)
            with pytest.raises(IIIError) as info:
                await caller.trigger("gone::a", {})
            assert info.value.code == "function_not_found"
            assert len(service.hits) == hits  # nothing reached the service
        await until_registered(server, "gone::b", present=False)  # went with its worker


@pytest.mark.parametrize(
    ("auth", "env", "check"),
    [
        ({"type": "bearer", "token_key": "HF_TEST_TOKEN"}, "s3cret-token", "bearer"),
        ({"type": "api_key", "header": "X-Api-Key", "value_key": "HF_TEST_KEY"}, "k-123", "api_key"),
        ({"type": "hmac", "secret_key": "HF_TEST_HMAC"}, "shared-secret", "hmac"),
    ],
)
async def test_auth_kinds(
    make_engine: MakeEngine,
    service: Service,
    monkeypatch: pytest.MonkeyPatch,
    auth: dict[str, str],
    env: str,
    check: str,
) -> None:
    variable = next(v for k, v in auth.items() if k.endswith("_key"))
    monkeypatch.setenv(variable, env)
    server = await make_engine()
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("auth::x", service.url("/echo"), auth=auth)
        await until_registered(server, "auth::x")
        await w.trigger("auth::x", {"amount": 5})
        hit = service.hits[-1]
        if check == "bearer":
            assert hit.headers["Authorization"] == f"Bearer {env}"
        elif check == "api_key":
            assert hit.headers["X-Api-Key"] == env
        else:  # verify the signature the way a receiving service would
            stamp = hit.headers["x-iii-Timestamp"]
            signed = f"{stamp}:{base64.b64encode(hit.body).decode()}".encode()
            expected = "sha256=" + hmac.new(env.encode(), signed, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(hit.headers["x-iii-Signature"], expected)
            assert "Authorization" not in hit.headers
        assert env not in str(await w.trigger("engine::functions::list", {}))  # secrets stay in the engine


async def test_timeout(make_engine: MakeEngine, service: Service) -> None:
    server = await make_engine()
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("t::slow", service.url("/slow?ms=3000"), timeout_ms=300)
        w.register_http_function("t::fast", service.url("/echo"))
        await until_registered(server, "t::fast")
        start = time.monotonic()
        with pytest.raises(IIIError) as info:
            await w.trigger("t::slow", {})
        assert time.monotonic() - start < 2.0
        assert info.value.code == "http_timeout"
        assert "did not answer within timeout_ms=300" in info.value.message
        assert (await w.trigger("t::fast", {"ok": 1}))["body"]["ok"] == 1  # the engine carries on


async def test_non_2xx_answers(make_engine: MakeEngine, service: Service) -> None:
    server = await make_engine()
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("s::500", service.url("/status/500?size=20000"))
        w.register_http_function("s::404", service.url("/status/404?size=12"))
        w.register_http_function("s::502", service.url("/status/502?shape=error"))
        await until_registered(server, "s::502")
        with pytest.raises(IIIError) as info:
            await w.trigger("s::500", {})
        assert info.value.code == "http_error"
        assert f"POST {service.url('/status/500?size=20000')} answered HTTP 500: xxxx" in info.value.message
        assert info.value.message.endswith("x…") and len(info.value.message) < 700  # a bounded excerpt
        with pytest.raises(IIIError) as info:
            await w.trigger("s::404", {})
        assert info.value.message.endswith("answered HTTP 404: " + "x" * 12)
        with pytest.raises(IIIError) as info:  # a structured error keeps its code
            await w.trigger("s::502", {})
        assert info.value.code == "UPSTREAM_ERROR"
        assert info.value.message.endswith("answered HTTP 502: the ledger is closed")


async def test_redirects_are_checked_at_every_hop(make_engine: MakeEngine, service: Service) -> None:
    dns = StubDNS(dict(DEFAULT_DNS))
    server = await make_engine(dns=dns)
    raw = await RawWorker.connect(url_of(server))
    cases = {
        # to an allowed place: followed (307 keeps the method and body)
        "r::ok": (service.url("/echo/after", "svc.test"), 307),
        # to a name whose DNS answer is private: refused at the lookup, before connecting
        "r::dns": (f"http://internal.test:{service.port}/x", 302),
        # to the cloud metadata address: refused on the URL alone (no entry admits it)
        "r::meta": ("http://169.254.169.254/latest/meta-data/", 302),
        # to a name for it: allow-listed as a name (*.test), refused on its DNS answer
        "r::metaname": ("http://metadata.test/latest/meta-data/", 302),
        # to a host that is not allow-listed
        "r::host": ("http://example.com/", 301),
        # to an http URL... allowed here, but a non-http scheme never is
        "r::scheme": ("file:///etc/passwd", 302),
    }
    for fid, (to, code) in cases.items():
        await raw.register(fid, {"url": service.url(f"/redirect?code={code}&to={to}"), "timeout_ms": 3000})
    for fid in cases:
        await until_registered(server, fid)
    ok = await raw.call("r::ok", {"v": 1})
    assert ok["result"]["path"] == "/echo/after" and ok["result"]["method"] == "POST"
    assert ok["result"]["body"]["v"] == 1
    lookups = len(dns.lookups)
    expected = {
        "r::dns": ("url_validation_failed", "security.block_private_ips: 10.20.30.40"),
        "r::meta": ("url_validation_failed", "security.url_allowlist: host 169.254.169.254"),
        "r::metaname": ("url_validation_failed", "security.block_private_ips: 169.254.169.254"),
        "r::host": ("url_validation_failed", "security.url_allowlist: host example.com"),
        "r::scheme": ("url_validation_failed", "is not an http(s) URL"),
    }
    for fid, (code, text) in expected.items():
        error = (await raw.call(fid, {}, inv_id=fid))["error"]
        assert error["code"] == code, error
        assert "redirected to" in error["message"] and text in error["message"], error
    # only the names were looked up; nothing connected to what they answered
    assert dns.lookups[lookups:] == ["internal.test", "metadata.test"]
    assert [h.path.split("?")[0] for h in service.hits] == ["/redirect", "/echo/after"] + ["/redirect"] * 5
    await raw.close()


async def test_redirect_loops_and_cross_origin_credentials(
    make_engine: MakeEngine, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TEST_TOKEN", "tok")
    server = await make_engine()
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("loop::x", service.url("/redirect?code=307"))  # to itself
        cross = service.url("/echo/there", "other.test")
        w.register_http_function(
            "cross::x",
            service.url(f"/redirect?code=302&to={cross}"),
            auth={"type": "bearer", "token_key": "HF_TEST_TOKEN"},
        )
        await until_registered(server, "cross::x")
        with pytest.raises(IIIError) as info:
            await w.trigger("loop::x", {})
        assert info.value.code == "too_many_redirects"
        result = await w.trigger("cross::x", {"a": 1})
        assert result["method"] == "GET" and result["path"] == "/echo/there"  # 302 after POST becomes GET
        first, second = service.hits[-2:]
        assert first.headers["Authorization"] == "Bearer tok"
        assert "Authorization" not in second.headers  # the token never leaves its origin


async def test_dns_rebinding_after_registration_is_refused(make_engine: MakeEngine, service: Service) -> None:
    # Public at registration (only looked up, never connected to), private on every lookup after.
    dns = StubDNS({"rebind.test": lambda n: ["93.184.216.34"] if n == 1 else ["127.0.0.1", "10.9.9.9"]})
    server = await make_engine(dns=dns)
    raw = await RawWorker.connect(url_of(server))
    await raw.register("rb::x", {"url": f"http://rebind.test:{service.port}/echo"})
    await until_registered(server, "rb::x")
    error = (await raw.call("rb::x", {}))["error"]
    assert error["code"] == "url_validation_failed"
    assert "10.9.9.9" in error["message"] and "security.block_private_ips" in error["message"]
    assert dns.lookups == ["rebind.test", "rebind.test"]
    assert service.hits == []
    await raw.close()


REFUSED = "url_validation_failed"
INVALID = "invalid_invocation"


@pytest.mark.parametrize(
    ("invocation", "code", "text"),
    [
        ({"url": "http://10.1.1.1/x"}, REFUSED, "security.url_allowlist: host 10.1.1.1"),
        ({"url": "http://internal.test/x"}, REFUSED, "(host internal.test resolves to it)"),
        (
            {"url": "http://metadata.test/x"},
            "url_validation_failed",
            "169.254.169.254 is a loopback, private",
        ),
        ({"url": "http://127.0.0.2:9/x"}, REFUSED, "security.url_allowlist: host 127.0.0.2"),
        (
            {"url": "http://example.com/x"},
            "url_validation_failed",
            "security.url_allowlist: host example.com",
        ),
        ({"url": "http://unknown.test/x"}, REFUSED, "DNS lookup of unknown.test failed"),
        ({"url": "ftp://svc.test/x"}, REFUSED, "is not an http(s) URL"),
        (
            {"url": "http://svc.test/x", "method": "TRACE"},
            "invalid_invocation",
            "method 'TRACE' is not one of",
        ),
        ({"url": "http://svc.test/x", "timeout_ms": 0}, INVALID, "timeout_ms must be between"),
        (
            {"url": "http://svc.test/x", "headers": {"Host": "a"}},
            "invalid_invocation",
            "is set by the engine",
        ),
        ({"url": "http://svc.test/x", "headers": {"X-A": "1\r\nX-B: 2"}}, INVALID, "line break"),
        ({"url": "http://svc.test/x", "auth": {"type": "basic"}}, INVALID, "auth.type 'basic'"),
        (
            {"url": "http://svc.test/x", "auth": {"type": "bearer", "token_key": "HF_TEST_UNSET_VAR"}},
            "missing_env_var",
            "environment variable HF_TEST_UNSET_VAR, which is not set",
        ),
        ({"method": "POST"}, INVALID, "missing required field `url`"),
    ],
)
async def test_refused_registrations(
    make_engine: MakeEngine, service: Service, invocation: dict[str, Any], code: str, text: str
) -> None:
    server = await make_engine()
    raw = await RawWorker.connect(url_of(server))
    error = await refusal(raw, "bad::fn", invocation)
    assert error["code"] == code and text in error["message"], error
    assert ("default", "bad::fn") not in server.engine.functions
    assert (await raw.call("bad::fn", {}))["error"]["code"] == "function_not_found"
    # the connection and the engine carry on
    await raw.register("good::fn", {"url": service.url("/echo")})
    await until_registered(server, "good::fn")
    assert (await raw.call("good::fn", {"z": 1}, inv_id="c2"))["result"]["body"]["z"] == 1
    await raw.close()


async def test_require_https_by_default(make_engine: MakeEngine) -> None:
    server = await make_engine("  - name: iii-http-functions\n")
    raw = await RawWorker.connect(url_of(server))
    error = await refusal(raw, "h::x", {"url": "http://api.example.com/x"})
    assert "security.require_https" in error["message"]
    error = await refusal(raw, "h::y", {"url": "https://127.0.0.1/x"})
    assert "security.block_private_ips" in error["message"]
    await raw.close()


async def test_without_the_module(make_engine: MakeEngine) -> None:
    server = await make_engine("  - name: iii-pubsub\n")
    raw = await RawWorker.connect(url_of(server))
    error = await refusal(raw, "n::x", {"url": "https://api.example.com/x"})
    assert error["code"] == "invocation_unsupported"
    assert "add `- name: iii-http-functions`" in error["message"]
    await raw.close()


async def test_unregister_while_the_url_is_being_checked(make_engine: MakeEngine, service: Service) -> None:
    release = asyncio.Event()

    async def slow_dns(host: str, port: int) -> list[str]:
        await release.wait()
        return ["127.0.0.1"]

    server = await make_engine()
    module = server.module("iii-http-functions")
    module.resolve = slow_dns  # type: ignore[attr-defined]
    raw = await RawWorker.connect(url_of(server))
    await raw.register("late::x", {"url": f"http://svc.test:{service.port}/echo"})
    await raw.send({"type": "unregisterfunction", "id": "late::x"})
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.sleep(0.1)
    assert ("default", "late::x") not in server.engine.functions
    assert server.engine._preparing == {}
    await raw.close()


async def test_another_worker_cannot_take_an_http_function(make_engine: MakeEngine, service: Service) -> None:
    server = await make_engine()
    a = await RawWorker.connect(url_of(server))
    b = await RawWorker.connect(url_of(server))
    await a.register("own::x", {"url": service.url("/echo")})
    await until_registered(server, "own::x")
    await b.register("own::x", {"url": service.url("/echo/b")})
    frame = await b.next()
    assert frame["type"] == "registrationrejected" and frame["owner_worker_id"] == a.worker_id
    assert (await b.call("own::x", {}))["result"]["path"] == "/echo"
    await a.close()
    await until_registered(server, "own::x", present=False)
    await b.close()


async def test_a_flood_of_registrations_is_bounded(make_engine: MakeEngine, service: Service) -> None:
    release = asyncio.Event()

    async def stuck_dns(host: str, port: int) -> list[str]:
        await release.wait()
        return ["127.0.0.1"]

    server = await make_engine()
    server.module("iii-http-functions").resolve = stuck_dns  # type: ignore[attr-defined]
    server.engine.max_preparing = 50
    raw = await RawWorker.connect(url_of(server))
    for n in range(60):
        await raw.register(f"flood::{n}", {"url": f"http://svc.test:{service.port}/echo"})
    refused = [await raw.next() for _ in range(10)]
    assert {f["error"]["code"] for f in refused} == {"LIMIT_EXCEEDED"}
    assert [f["error"]["function_id"] for f in refused] == [f"flood::{n}" for n in range(50, 60)]
    release.set()
    await until_registered(server, "flood::49")
    assert sum(1 for ns, fid in server.engine.functions if fid.startswith("flood::")) == 50
    assert server.engine._preparing == {}
    await raw.close()


async def test_calls_waiting_on_services_are_bounded(make_engine: MakeEngine, service: Service) -> None:
    server = await make_engine()
    module = server.module("iii-http-functions")
    module.max_in_flight = 3  # type: ignore[attr-defined]
    async with sdk_worker(url_of(server), "w") as w:
        w.register_http_function("b::slow", service.url("/slow?ms=500"))
        await until_registered(server, "b::slow")
        outcomes = await asyncio.gather(*(w.trigger("b::slow", {}) for _ in range(5)), return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, IIIError)]
        assert [o.code for o in refused] == ["LIMIT_EXCEEDED"] * 2
        assert sum(1 for o in outcomes if o == {"slept": True}) == 3
        assert module.in_flight == 0  # type: ignore[attr-defined]
        assert await w.trigger("b::slow", {}) == {"slept": True}


async def test_two_workers_checking_the_same_id_at_once(make_engine: MakeEngine, service: Service) -> None:
    release = asyncio.Event()

    async def slow_dns(host: str, port: int) -> list[str]:
        await release.wait()
        return ["127.0.0.1"]

    server = await make_engine()
    server.module("iii-http-functions").resolve = slow_dns  # type: ignore[attr-defined]
    a = await RawWorker.connect(url_of(server))
    b = await RawWorker.connect(url_of(server))
    await a.register("race::x", {"url": f"http://svc.test:{service.port}/echo/a"})
    await b.register("race::x", {"url": f"http://svc.test:{service.port}/echo/b"})
    await asyncio.sleep(0.05)
    await a.send({"type": "unregisterfunction", "id": "race::x"})  # cancels a's check only
    await asyncio.sleep(0.05)
    release.set()
    await until_registered(server, "race::x")
    assert server.engine.functions[("default", "race::x")].owner.worker_id == b.worker_id  # type: ignore[union-attr]
    assert (await a.call("race::x", {}))["result"]["path"] == "/echo/b"
    assert server.engine._preparing == {}
    await a.close()
    await b.close()
