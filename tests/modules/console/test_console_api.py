"""The console's HTTP side against a real engine: API, security rules, /health, /metrics, live events."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyiii import IIIError
from pyiii.engine.server import Server
from pyiii.errors import ConfigError
from pyiii.modules.console.module import ConsoleModule
from support.engines import running_server, sdk_worker, url_of

BASE = """\
workers:
  - name: iii-state
  - name: iii-console
    config: {port: 0, sample_interval_ms: 0}
"""
TOKEN = "s3cret-console-token"


def console_of(server: Server) -> ConsoleModule:
    module = server.module("iii-console")
    assert isinstance(module, ConsoleModule)
    return module


@asynccontextmanager
async def console(config: str = BASE) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    async with running_server(config) as server:
        base = f"http://127.0.0.1:{console_of(server).port}"
        async with httpx.AsyncClient(base_url=base, timeout=20, trust_env=False) as client:
            yield server, client


async def call(client: httpx.AsyncClient, function_id: str, data: Any, **kw: Any) -> dict[str, Any]:
    resp = await client.post("/api/call", json={"function_id": function_id, "data": data}, **kw)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_health_endpoint_and_function() -> None:
    async with console() as (server, client):
        resp = await client.get("/health")
        assert resp.status_code == 200
        body = resp.json()
        assert body["status"] == "ok" and body["workers"] == 0 and body["functions"] > 10
        async with sdk_worker(url_of(server), "health-w") as w:
            checked = await w.trigger("engine::health::check", {})
            assert checked["status"] == "ok" and checked["workers"] == 1
            assert (await client.get("/health")).json()["workers"] == 1


async def test_invoke_returns_result_or_error_code() -> None:
    async with console() as (server, client), sdk_worker(url_of(server), "calc") as w:
        w.register_function("calc::double", lambda data: {"twice": data["n"] * 2})

        def fail(data: Any) -> Any:
            raise IIIError("bad_n", "n must be positive")

        w.register_function("calc::fail", fail)
        await asyncio.sleep(0.2)
        assert await call(client, "calc::double", {"n": 21}) == {"result": {"twice": 42}}
        failed = await call(client, "calc::fail", {"n": -1})
        assert failed["error"]["code"] == "bad_n" and "positive" in failed["error"]["message"]
        missing = await call(client, "calc::nope", {})
        assert missing["error"]["code"] == "function_not_found"
        listed = await call(client, "engine::functions::list", {})
        assert {"calc::double", "calc::fail"} <= {f["function_id"] for f in listed["result"]["functions"]}


async def test_scopes_and_version_conflict() -> None:
    async with console() as (_, client):
        items = [{"key": f"k{i:03d}", "value": i} for i in range(120)]
        await call(client, "state::set_many", {"scope": "big", "items": items})
        await call(client, "state::set", {"scope": "small", "key": "a", "value": {"v": 1}})
        scopes = (await client.get("/api/scopes")).json()
        assert scopes["scopes"] == [{"scope": "big", "keys": 120}, {"scope": "small", "keys": 1}]
        got = (await call(client, "state::get", {"scope": "small", "key": "a", "with_meta": True}))["result"]
        version = got["version"]
        # Someone else writes first; the console's write with the version it read is refused.
        await call(client, "state::set", {"scope": "small", "key": "a", "value": {"v": 2}})
        stale = await call(
            client, "state::set", {"scope": "small", "key": "a", "value": {"v": 3}, "expect_version": version}
        )
        assert stale["error"]["code"] == "VERSION_MISMATCH"
        assert stale["error"]["current_version"] == version + 1
        now = (await call(client, "state::get", {"scope": "small", "key": "a"}))["result"]
        assert now == {"v": 2}


async def test_no_change_on_get_and_no_cross_site_post() -> None:
    async with console() as (_, client):
        body = {"function_id": "state::set", "data": {"scope": "s", "key": "k", "value": 1}}
        resp = await client.get("/api/call", params={"function_id": "state::set"})
        assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"
        for path in ("/api/http-test", "/api/cron/run"):
            assert (await client.get(path)).status_code == 405
        # What an HTML form on another site can send: not JSON, so refused before anything runs.
        form = await client.post(
            "/api/call", content=json.dumps(body), headers={"content-type": "text/plain"}
        )
        assert form.status_code == 415
        cross = await client.post("/api/call", json=body, headers={"origin": "http://evil.example"})
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_origin"
        rebound = await client.get("/api/overview", headers={"host": "evil.example:3113"})
        assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "host_not_allowed"
        assert (await client.get("/api/scopes")).json()["scopes"] == []  # nothing was written
        # A read-only path refuses POST too.
        assert (await client.post("/api/scopes", json={})).status_code == 405


async def test_auth_token_is_required() -> None:
    config = f"auth_token: {TOKEN}\n" + BASE
    async with console(config) as (_, client):
        for path in ("/api/overview", "/api/scopes", "/api/logs", "/metrics"):
            resp = await client.get(path)
            assert resp.status_code == 401, path
            assert "Authorization: Bearer" in resp.json()["error"]["message"]
        wrong = await client.get("/api/overview", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "does not match" in wrong.json()["error"]["message"]
        denied = await client.post(
            "/api/call", json={"function_id": "state::set", "data": {"scope": "s", "key": "k", "value": 1}}
        )
        assert denied.status_code == 401
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/api/overview", headers=auth)).json()["auth"] is True
        assert (await client.get("/api/scopes", headers=auth)).json()[
            "scopes"
        ] == []  # the denied set did nothing
        assert (await client.get("/metrics", headers=auth)).status_code == 200
        # Liveness stays open, without the counts.
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert "workers" in (await client.get("/health", headers=auth)).json()
        # The page itself holds no data: it loads and asks for the token.
        page = await client.get("/")
        assert page.status_code == 200 and "token-form" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_static_files_and_unknown_paths() -> None:
    async with console() as (_, client):
        js = await client.get("/static/app.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/static/nope.js")).status_code == 404
        assert (await client.get("/static/../module.py")).status_code == 404
        assert (await client.get("/elsewhere")).status_code == 404


async def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = f"workers:\n  - name: iii-console\n    config: {{port: {port}}}\n"
        with pytest.raises(ConfigError, match=r"iii-console: .*choose another port"):
            async with running_server(config):
                pass


async def test_live_events_carry_log_lines_and_worker_changes() -> None:
    async with console() as (server, client):
        seen: list[tuple[str, Any]] = []
        got_log, got_workers = asyncio.Event(), asyncio.Event()

        async def listen() -> None:
            async with client.stream("GET", "/api/events") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                event = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        seen.append((event, data))
                        if event == "log" and "console-live-marker" in data["message"]:
                            got_log.set()
                        if event == "workers":
                            got_workers.set()

        task = asyncio.ensure_future(listen())
        try:
            await asyncio.sleep(0.3)
            await call(client, "engine::log::warn", {"message": "console-live-marker"})
            await asyncio.wait_for(got_log.wait(), 5)
            async with sdk_worker(url_of(server), "live-w"):
                await asyncio.wait_for(got_workers.wait(), 5)
        finally:
            task.cancel()
        line = next(d for e, d in seen if e == "log" and "console-live-marker" in d["message"])
        assert line["level"] == "WARNING" and line["worker"] == "worker"
        history = (await client.get("/api/logs", params={"level": "WARNING"})).json()["lines"]
        assert any("console-live-marker" in h["message"] for h in history)
        assert all(h["levelno"] >= 30 for h in history)


async def test_metrics_exposition() -> None:
    config = (
        "workers:\n  - name: iii-state\n  - name: iii-http\n    config: {port: 0}\n"
        "  - name: iii-queue\n    config:\n      queue_configs:\n"
        "        jobs: {max_retries: 1, concurrency: 1, backoff_ms: 10}\n"
        "  - name: iii-console\n    config: {port: 0, sample_interval_ms: 0}\n"
    )
    async with console(config) as (server, client), sdk_worker(url_of(server), "metrics-w") as w:
        for i in range(5):
            await w.trigger("state::set", {"scope": "orders", "key": f"o{i}", "value": i})
        for i in range(7):
            await w.trigger("state::get", {"scope": "orders", "key": f"o{i % 5}"})
        with pytest.raises(IIIError):
            await w.trigger("state::set", {"scope": "orders"})  # no key: an error outcome

        def boom(data: Any) -> Any:
            raise IIIError("boom", "always fails")

        w.register_function("jobs::boom", boom)
        w.register_function("web::hello", lambda req: {"status_code": 201, "body": {"hi": True}})
        w.register_trigger(
            {
                "type": "http",
                "function_id": "web::hello",
                "config": {"api_path": "/hello/:who", "http_method": "GET"},
            }
        )
        await asyncio.sleep(0.3)
        http_port = server.module("iii-http").port  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", trust_env=False) as web:
            for who in ("a", "b", "c"):
                assert (await web.get(f"/hello/{who}")).status_code == 201
            assert (await web.get("/nowhere")).status_code == 404
        await w.trigger("jobs::boom", {"x": 1}, action={"type": "enqueue", "queue": "jobs"})
        for _ in range(100):  # the job fails once (max_retries 1), then rests in the dead-letter queue
            stats = await w.trigger("engine::queue::topic_stats", {"queue": "jobs"})
            if stats["dlq_depth"] == 1:
                break
            await asyncio.sleep(0.05)

        resp = await client.get("/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        m = metric_samples(resp.text)

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert value("pyiii_invocations_total", function="state::set", outcome="ok") == 5
    assert value("pyiii_invocations_total", function="state::set", outcome="error") == 1
    assert value("pyiii_invocations_total", function="state::get", outcome="ok") == 7
    assert value("pyiii_invocation_duration_seconds_count", function="state::get") == 7
    assert value("pyiii_invocation_duration_seconds_bucket", function="state::get", le="+Inf") == 7
    assert value("pyiii_invocation_duration_seconds_sum", function="state::get") > 0
    assert (
        value("pyiii_state_operations_total", function="state::get", adapter="kv_in_memory", outcome="ok")
        == 7
    )
    assert value("pyiii_invocations_total", function="web::hello", outcome="ok") == 3  # a worker's function
    assert value("pyiii_invocations_total", function="jobs::boom", outcome="error") == 1  # max_retries 1
    assert value("pyiii_workers") == 1
    assert value("pyiii_state_keys", scope="orders") == 5
    assert value("pyiii_state_scopes") == 1
    assert value("pyiii_queue_dead_letters", queue="jobs") == 1
    assert value("pyiii_queue_depth", queue="jobs") == 0
    assert value("pyiii_http_requests_total", method="GET", route="/hello/:who", status="201") == 3
    assert value("pyiii_http_requests_total", method="GET", route="(no route)", status="404") == 1
    assert ("process_resident_memory_bytes", ()) in m


async def test_metrics_off_records_nothing() -> None:
    config = "workers:\n  - name: iii-state\n  - name: iii-console\n    config: {port: 0, metrics: false}\n"
    async with console(config) as (server, client):
        assert server.engine.metrics is None
        async with sdk_worker(url_of(server), "off-w") as w:
            await w.trigger("state::set", {"scope": "s", "key": "k", "value": 1})
        m = metric_samples((await client.get("/metrics")).text)
        assert not any(name == "pyiii_invocations_total" for name, _ in m)
    assert server.engine.metrics is None


async def test_cron_run_now_and_http_tester() -> None:
    config = (
        "workers:\n  - name: iii-cron\n  - name: iii-http\n    config: {port: 0}\n"
        "  - name: iii-console\n    config: {port: 0}\n"
    )
    async with console(config) as (server, client), sdk_worker(url_of(server), "cron-w") as w:
        runs: list[dict[str, Any]] = []

        def nightly(event: dict[str, Any]) -> dict[str, Any]:
            runs.append(event)
            return {"ran": len(runs)}

        w.register_function("jobs::nightly", nightly)
        w.register_function("web::echo", lambda req: {"status_code": 200, "body": {"got": req.get("body")}})
        cron = w.register_trigger(
            {"type": "cron", "function_id": "jobs::nightly", "config": {"expression": "0 0 3 1 1 * *"}}
        )
        w.register_trigger(
            {
                "type": "http",
                "function_id": "web::echo",
                "config": {"api_path": "/echo", "http_method": "POST"},
            }
        )
        await asyncio.sleep(0.3)
        ran = (await client.post("/api/cron/run", json={"trigger_id": cron.id})).json()
        assert ran == {"result": {"ran": 1}}
        assert runs[0]["trigger"] == "cron" and runs[0]["manual"] is True
        missing = await client.post("/api/cron/run", json={"trigger_id": "nope"})
        assert missing.status_code == 404
        tested = await client.post(
            "/api/http-test",
            json={
                "method": "POST",
                "path": "/echo",
                "body": '{"a": 1}',
                "headers": {"content-type": "application/json"},
            },
        )
        out = tested.json()
        assert out["status"] == 200 and json.loads(out["body"]) == {"got": {"a": 1}}
        bad = await client.post("/api/http-test", json={"method": "GET"})
        assert bad.status_code == 400 and "not what /api/http-test takes" in bad.json()["error"]["message"]
