"""The HTTP module end to end: real HTTP clients, a real engine, pyiii SDK workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from typing import Any

import pytest

from pyiii import HttpRequest, HttpResponse
from support.engines import sdk_worker
from support.http_engines import HttpEngine, MakeEngine


def route(w: Any, fid: str, path: str, method: str = "GET", handler: Any = None, **config: Any) -> None:
    w.register_function(fid, handler or (lambda req: {"status_code": 200, "body": {"ok": True}}))
    w.register_trigger(
        {"type": "http", "function_id": fid, "config": {"api_path": path, "http_method": method, **config}}
    )


async def test_request_object_and_returned_response(http_engine: HttpEngine) -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        return {"status_code": 201, "headers": ["X-Made: yes"], "body": {"id": req["path_params"]["id"]}}

    async with sdk_worker(http_engine.url, "api") as w:
        route(w, "todos::update", "todos/:id", "PUT", handler)
        await http_engine.wait_route("PUT", "/todos/7")
        async with http_engine.client() as c:
            r = await c.put("/todos/7?tag=a&tag=b&q=x%20y", json={"title": "milk"}, headers={"X-Trace": "t1"})
    assert r.status_code == 201
    assert r.json() == {"id": "7"}
    assert r.headers["x-made"] == "yes"
    assert r.headers["content-type"] == "application/json"
    req = seen[0]
    assert req["method"] == "PUT"
    assert req["path"] == "todos/:id"
    assert req["path_params"] == {"id": "7"}
    assert req["query_params"] == {"tag": ["a", "b"], "q": "x y"}
    assert req["headers"]["x-trace"] == "t1"
    assert req["headers"]["content-type"] == "application/json"
    assert req["body"] == {"title": "milk"}
    assert req["trigger"] == {"type": "http", "path": "todos/:id", "method": "PUT"}
    assert req["context"] == {}


async def test_response_bodies_follow_the_content_type(http_engine: HttpEngine) -> None:
    answers = {
        "xml": {"headers": {"Content-Type": "text/xml"}, "body": "<a/>"},
        "json": {"body": [1, 2]},
        "empty": {"status_code": 204, "headers": {"content-type": "text/plain"}, "body": None},
        "nobody": {"status_code": 202},
        "text-of-json": {"headers": {"content-type": "text/plain"}, "body": {"a": 1}},
    }
    async with sdk_worker(http_engine.url, "api") as w:
        for name, answer in answers.items():
            route(w, f"r::{name}", f"/r/{name}", handler=lambda req, *, a=answer: a)
        await http_engine.wait_route("GET", "/r/text-of-json")
        async with http_engine.client() as c:
            got = {name: await c.get(f"/r/{name}") for name in answers}
    assert (got["xml"].headers["content-type"], got["xml"].text) == ("text/xml", "<a/>")
    assert (got["json"].headers["content-type"], got["json"].json()) == ("application/json", [1, 2])
    assert (got["empty"].status_code, got["empty"].content) == (204, b"")
    assert (got["nobody"].status_code, got["nobody"].json()) == (202, {})
    assert got["text-of-json"].text == '{"a":1}'


async def test_malformed_json_gives_null_body(http_engine: HttpEngine) -> None:
    seen: list[Any] = []
    async with sdk_worker(http_engine.url, "api") as w:
        route(w, "echo", "/echo", "POST", lambda req: seen.append(req["body"]) or {"body": "ok"})
        await http_engine.wait_route("POST", "/echo")
        async with http_engine.client() as c:
            r = await c.post("/echo", content=b'{"a": 1,', headers={"content-type": "application/json"})
            r2 = await c.post("/echo", content=b'{"a": 1}', headers={"content-type": "text/plain"})
            r3 = await c.post(
                "/echo", content=b'{"a": 1}', headers={"content-type": "application/vnd.x+json"}
            )
    assert (r.status_code, r2.status_code, r3.status_code) == (200, 200, 200)
    assert seen == [None, None, {"a": 1}]


async def test_unknown_route_is_a_404_envelope(http_engine: HttpEngine) -> None:
    async with http_engine.client() as c:
        r = await c.get("/nowhere/at/all")
        r2 = await c.delete("/")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "NOT_FOUND", "message": "no route for GET /nowhere/at/all"}}
    assert r2.status_code == 404 and r2.json()["error"]["code"] == "NOT_FOUND"


async def test_body_over_the_limit_is_413_and_not_read(make_http_engine: MakeEngine) -> None:
    eng = await make_http_engine("max_body_bytes: 1000")
    calls: list[int] = []
    async with sdk_worker(eng.url, "api") as w:
        route(w, "up", "/up", "POST", lambda req: calls.append(1) or {"body": "ok"})
        await eng.wait_route("POST", "/up")
        async with eng.client() as c:
            ok = await c.post("/up", content=b"x" * 1000)
            big = await c.post("/up", content=b"x" * 1001)

            async def chunks() -> Any:
                for _ in range(50):
                    yield b"y" * 100

            chunked = await c.post("/up", content=chunks())
        # A declared 1 GB body is refused before any of it is sent.
        reader, writer = await asyncio.open_connection("127.0.0.1", eng.http.port)
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.read(1000), 5)
        writer.close()
    assert ok.status_code == 200
    for r in (big, chunked):
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert "max_body_bytes" in r.json()["error"]["message"]
    assert head.startswith(b"HTTP/1.1 413")
    assert b"1000000000 bytes declared" in head
    assert calls == [1]


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out  # the server closed the connection


async def test_malformed_and_oversized_requests_are_refused_and_closed(http_engine: HttpEngine) -> None:
    port = http_engine.http.port
    cases = {
        b"\x00\x01garbage\r\n\r\n": 400,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n": 400,
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n": 431,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600_000 + b"\r\n\r\n": 431,
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n": 414,
    }
    for request, status in cases.items():
        out = await asyncio.to_thread(_raw, port, request)
        assert out.startswith(b"HTTP/1.1 %d" % status), (request[:40], out[:80])
        assert b"connection: close" in out.lower()
    # the engine still serves
    async with http_engine.client() as c:
        assert (await c.get("/")).status_code == 404


async def test_handler_error_is_500_with_an_error_id_in_the_log(
    http_engine: HttpEngine, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(req: Any) -> Any:
        raise ValueError("the database is on fire")

    caplog.set_level(logging.ERROR, logger="pyiii.http")
    async with sdk_worker(http_engine.url, "api") as w:
        route(w, "boom", "/boom", handler=boom)
        await http_engine.wait_route("GET", "/boom")
        async with http_engine.client() as c:
            r = await c.get("/boom")
            other = await c.get("/boom")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "invocation_failed"
    assert error["message"].endswith("the database is on fire")
    assert re.fullmatch(r"[0-9a-f]{12}", error["error_id"])
    assert other.json()["error"]["error_id"] != error["error_id"]
    logged = [rec.getMessage() for rec in caplog.records if error["error_id"] in rec.getMessage()]
    assert len(logged) == 1 and "GET /boom" in logged[0] and "the database is on fire" in logged[0]


async def test_handler_that_never_answers_is_504(make_http_engine: MakeEngine) -> None:
    eng = await make_http_engine("default_timeout: 300")

    async def sleepy(req: Any) -> Any:
        await asyncio.sleep(5)

    async with sdk_worker(eng.url, "api") as w:
        route(w, "sleepy", "/sleepy", handler=sleepy)
        await eng.wait_route("GET", "/sleepy")
        async with eng.client() as c:
            started = asyncio.get_running_loop().time()
            r = await c.get("/sleepy")
            took = asyncio.get_running_loop().time() - started
        assert eng.server.engine.stats()["pending"] == 0  # the timed-out call is not kept
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "TIMEOUT"
    assert "default_timeout" in r.json()["error"]["message"]
    assert 0.25 < took < 2


async def test_worker_leaving_mid_request_is_503_invocation_stopped(http_engine: HttpEngine) -> None:
    entered = asyncio.Event()

    async def hang(req: Any) -> Any:
        entered.set()
        await asyncio.sleep(30)

    async with http_engine.client() as c:
        async with sdk_worker(http_engine.url, "leaver") as w:
            route(w, "hang", "/hang", handler=hang)
            await http_engine.wait_route("GET", "/hang")
            pending = asyncio.ensure_future(c.get("/hang"))
            await asyncio.wait_for(entered.wait(), 5)
        r = await asyncio.wait_for(pending, 5)  # the worker shut down under it
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "invocation_stopped"
        await http_engine.wait_route("GET", "/hang", present=False)
        assert (await c.get("/hang")).status_code == 404


async def test_requests_over_the_concurrency_limit_wait(make_http_engine: MakeEngine) -> None:
    eng = await make_http_engine("concurrency_request_limit: 2")
    running = {"now": 0, "max": 0}

    async def slow(req: Any) -> Any:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.15)
        running["now"] -= 1
        return {"body": {"n": req["path_params"]["n"]}}

    async with sdk_worker(eng.url, "api") as w:
        route(w, "slow", "/slow/:n", handler=slow)
        await eng.wait_route("GET", "/slow/1")
        async with eng.client() as c:
            replies = await asyncio.gather(*(c.get(f"/slow/{i}") for i in range(8)))
    assert [r.json()["n"] for r in replies] == [str(i) for i in range(8)]
    assert running["max"] == 2


async def test_client_leaving_early_leaks_nothing(http_engine: HttpEngine) -> None:
    entered = asyncio.Event()

    async def hang(req: Any) -> Any:
        entered.set()
        await asyncio.sleep(3)
        return {"body": "late"}

    engine = http_engine.server.engine
    async with sdk_worker(http_engine.url, "api") as w:
        route(w, "hang", "/hang", handler=hang)
        await http_engine.wait_route("GET", "/hang")
        for _ in range(3):
            entered.clear()
            _reader, writer = await asyncio.open_connection("127.0.0.1", http_engine.http.port)
            writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(entered.wait(), 5)
            assert engine.stats()["pending"] == 1
            writer.close()
            # Cancelled once noticed (the module watches a request's client after
            # WATCH_AFTER_S), long before the handler's 3 s are up.
            for _ in range(50):
                if engine.stats()["pending"] == 0:
                    break
                await asyncio.sleep(0.02)
            assert engine.stats()["pending"] == 0, "the invocation outlived its client by 1 s"
        for _ in range(100):
            if engine.stats()["pending"] == 0 and http_engine.http.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert engine.stats()["pending"] == 0
        assert http_engine.http.in_flight == 0
        channels = getattr(engine, "channels", None)
        if channels is not None:
            assert len(channels) == 0
        async with http_engine.client() as c:  # still serving
            assert (await c.get("/nope")).status_code == 404


async def test_cors_permissive_by_default(http_engine: HttpEngine) -> None:
    calls: list[str] = []
    async with sdk_worker(http_engine.url, "api") as w:
        route(w, "c", "/c", "POST", lambda req: calls.append(req["method"]) or {"body": "ok"})
        await http_engine.wait_route("POST", "/c")
        async with http_engine.client() as c:
            pre = await c.options(
                "/c",
                headers={
                    "Origin": "http://app.test",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type, x-token",
                },
            )
            r = await c.post("/c", headers={"Origin": "http://app.test"})
            missing = await c.get("/missing", headers={"Origin": "http://app.test"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == "content-type, x-token"
    assert calls == ["POST"]  # the preflight reached no function
    assert r.headers["access-control-allow-origin"] == "*"
    assert missing.headers["access-control-allow-origin"] == "*"


async def test_cors_as_configured(make_http_engine: MakeEngine) -> None:
    eng = await make_http_engine(
        "cors:\n  allowed_origins: ['http://good.test']\n  allowed_methods: [GET, POST]"
    )
    async with sdk_worker(eng.url, "api") as w:
        route(w, "c", "/c")
        await eng.wait_route("GET", "/c")
        async with eng.client() as c:
            pre_good = await c.options(
                "/c", headers={"Origin": "http://good.test", "Access-Control-Request-Method": "GET"}
            )
            pre_bad = await c.options(
                "/c", headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "GET"}
            )
            good = await c.get("/c", headers={"Origin": "http://good.test"})
            bad = await c.get("/c", headers={"Origin": "http://evil.test"})
    assert pre_good.headers["access-control-allow-origin"] == "http://good.test"
    assert pre_good.headers["access-control-allow-methods"] == "GET, POST"
    assert "access-control-allow-origin" not in pre_bad.headers
    assert good.headers["access-control-allow-origin"] == "http://good.test"
    assert "access-control-allow-origin" not in bad.headers
    assert bad.status_code == 200  # the browser, not the server, refuses it


async def test_global_and_route_middleware_conditions_and_context(make_http_engine: MakeEngine) -> None:
    eng = await make_http_engine(
        "middleware:\n"
        "  - {function_id: mw::second, priority: 20}\n"
        "  - {function_id: mw::first, priority: 5}\n"
    )
    order: list[str] = []

    def mw(name: str, answer: dict[str, Any]) -> Any:
        def run(req: dict[str, Any]) -> Any:
            order.append(name)
            assert req["phase"] == "preHandler" and "body" not in req["request"]
            return answer

        return run

    def handler(req: dict[str, Any]) -> Any:
        order.append("handler")
        return {"body": {"context": req["context"]}}

    async with sdk_worker(eng.url, "api") as w:
        w.register_function("mw::first", mw("first", {"action": "continue", "context": {"user": "ada"}}))
        w.register_function("mw::second", mw("second", {"action": "continue"}))
        w.register_function("mw::route", mw("route", {"action": "continue"}))
        w.register_function(
            "mw::deny",
            mw("deny", {"action": "respond", "response": {"status_code": 403, "body": {"error": "no"}}}),
        )
        w.register_function("cond::only-vip", lambda req: req["query_params"].get("vip") == "1")
        route(w, "h::open", "/open", handler=handler, middleware_function_ids=["mw::route"])
        route(w, "h::shut", "/shut", handler=handler, middleware_function_ids=["mw::deny", "mw::route"])
        route(w, "h::vip", "/vip", handler=handler, condition_function_id="cond::only-vip")
        await eng.wait_route("GET", "/vip")
        async with eng.client() as c:
            opened = await c.get("/open")
            open_order, order[:] = order[:], []
            shut = await c.get("/shut")
            shut_order, order[:] = order[:], []
            vip = await c.get("/vip?vip=1")
            not_vip = await c.get("/vip")
    assert opened.json() == {"context": {"user": "ada"}}
    assert open_order == ["first", "second", "route", "handler"]
    assert (shut.status_code, shut.json()) == (403, {"error": "no"})
    assert shut_order == ["first", "second", "deny"]
    assert vip.status_code == 200
    assert not_vip.status_code == 422
    assert not_vip.json()["skipped"] is True
    assert not_vip.json()["error"]["code"] == "CONDITION_NOT_MET"


async def test_routes_appear_and_disappear_with_workers(http_engine: HttpEngine) -> None:
    async with http_engine.client() as c:
        assert (await c.get("/live")).status_code == 404
        async with sdk_worker(http_engine.url, "a") as w:
            route(w, "live", "/live")
            await http_engine.wait_route("GET", "/live")
            assert (await c.get("/live")).json() == {"ok": True}
        await http_engine.wait_route("GET", "/live", present=False)
        assert (await c.get("/live")).status_code == 404
        async with sdk_worker(http_engine.url, "b") as w2:  # the path is free again
            route(w2, "live2", "/live", handler=lambda req: {"body": "b"})
            await http_engine.wait_route("GET", "/live")
            assert (await c.get("/live")).json() == "b"
        assert len(http_engine.http.routes) == 0


async def test_duplicate_route_registration_fails_naming_both(http_engine: HttpEngine) -> None:
    async with sdk_worker(http_engine.url, "a") as a, sdk_worker(http_engine.url, "b") as b:
        route(a, "first::fn", "/dup/:id")
        await http_engine.wait_route("GET", "/dup/1")
        route(b, "second::fn", "dup/:other")  # refused: same shape as /dup/:id
        await asyncio.sleep(0.2)
        assert http_engine.http.routes.match("GET", "/dup/1")[0].spec.function_id == "first::fn"  # type: ignore[index]
        async with http_engine.client() as c:
            assert (await c.get("/dup/1")).json() == {"ok": True}


async def test_duplicate_route_error_reaches_the_worker(
    http_engine: HttpEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with sdk_worker(http_engine.url, "a") as a, sdk_worker(http_engine.url, "b") as b:
        route(a, "first::fn", "/dup")
        await http_engine.wait_route("GET", "/dup")
        route(b, "second::fn", "/dup")
        for _ in range(100):
            if any("registration failed" in r.getMessage() for r in caplog.records if r.name == "pyiii.sdk"):
                break
            await asyncio.sleep(0.02)
    sdk_lines = [r.getMessage() for r in caplog.records if r.name == "pyiii.sdk"]
    refused = [line for line in sdk_lines if "registration failed" in line]
    assert refused, sdk_lines
    assert "conflicts with" in refused[0]
    assert "second::fn" in refused[0] and "first::fn" in refused[0]


async def test_sdk_http_decorator(http_engine: HttpEngine) -> None:
    async with sdk_worker(http_engine.url, "todos") as w:
        todos: dict[str, dict[str, Any]] = {}

        @w.http("POST", "/todos")
        async def create(req: HttpRequest) -> HttpResponse:
            todo = {"id": str(len(todos) + 1), "title": req.body["title"]}
            todos[todo["id"]] = todo
            return HttpResponse(201, todo, {"location": f"/todos/{todo['id']}"})

        @w.http("GET", "/todos/:id")
        def read(req: HttpRequest) -> Any:
            todo = todos.get(req.path_params["id"])
            return todo if todo is not None else ({"error": "no such todo"}, 404)

        @w.http("DELETE", "/todos/:id", id="todos::delete")
        def delete(req: HttpRequest) -> None:
            todos.pop(req.path_params["id"], None)

        @w.http("GET", "/hello")
        def hello(req: HttpRequest) -> str:
            return f"hello {req.query.get('name', 'world')} from {req.header('User-Agent')}"

        await http_engine.wait_route("GET", "/hello")
        async with http_engine.client(headers={"user-agent": "tester"}) as c:
            made = await c.post("/todos", json={"title": "milk"})
            got = await c.get("/todos/1")
            deleted = await c.delete("/todos/1")
            gone = await c.get("/todos/1")
            hi = await c.get("/hello?name=ada")
    assert (made.status_code, made.json(), made.headers["location"]) == (
        201,
        {"id": "1", "title": "milk"},
        "/todos/1",
    )
    assert got.json() == {"id": "1", "title": "milk"}
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (gone.status_code, gone.json()) == (404, {"error": "no such todo"})
    assert hi.headers["content-type"].startswith("text/plain")
    assert hi.text == "hello ada from tester"


async def test_invalid_status_code_is_a_500_naming_it(http_engine: HttpEngine) -> None:
    async with sdk_worker(http_engine.url, "api") as w:
        route(w, "bad", "/bad", handler=lambda req: {"status_code": 1000})
        await http_engine.wait_route("GET", "/bad")
        async with http_engine.client() as c:
            r = await c.get("/bad")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "invalid_response"
    assert "100..599" in r.json()["error"]["message"]


def test_http_block_validation(tmp_path: Any) -> None:
    from pyiii.config import parse_config
    from pyiii.errors import ConfigError

    cfg = parse_config("workers:\n  - name: http\n", source="t")
    http = cfg.modules[0].config
    assert (http.port, http.host, http.default_timeout) == (3111, "127.0.0.1", 30000)
    assert (http.concurrency_request_limit, http.max_body_bytes, http.cors) == (1024, 10 * 1024 * 1024, None)
    old = parse_config(
        "modules:\n  - class: modules::api::RestApiModule\n    config: {port: 3000, host: 0.0.0.0}\n",
        source="t",
    )
    assert (old.modules[0].config.port, old.modules[0].config.host) == (3000, "0.0.0.0")
    for text, needle in [
        ("{prot: 1}", "did you mean 'port'"),
        ("{concurrency_request_limit: 0}", "concurrency_request_limit"),
        ("{cors: {allowed_methods: [FETCH]}}", "unknown HTTP method 'FETCH'"),
        ("{cors: {allowed_origins: [example.com]}}", "scheme://host"),
        ("{middleware: [{priority: 1}]}", "has no 'function_id'"),
        ("{middleware: [{function_id: a, priorty: 1}]}", "did you mean 'priority'"),
        ("{middleware: [{function_id: a, phase: post}]}", "preHandler"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            parse_config(f"workers:\n  - name: iii-http\n    config: {text}\n", source="t")


async def test_port_in_use_is_a_clear_error(make_http_engine: MakeEngine) -> None:
    from pyiii.errors import ConfigError

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await make_http_engine(f"port: {port}")


def test_json_payload_roundtrip_is_exact() -> None:
    # the envelope is valid JSON with exactly the documented keys
    from pyiii.modules.http.response import envelope

    assert json.loads(envelope("X", "m", "abc", skipped=True)) == {
        "error": {"code": "X", "message": "m", "error_id": "abc"},
        "skipped": True,
    }


async def test_engine_serves_other_workers_while_http_fails(http_engine: HttpEngine) -> None:
    async with sdk_worker(http_engine.url, "api") as w, sdk_worker(http_engine.url, "caller") as caller:
        w.register_function("math::add", lambda d: d["a"] + d["b"])
        route(w, "boom", "/boom", handler=lambda req: 1 / 0)
        await http_engine.wait_route("GET", "/boom")
        async with http_engine.client() as c:
            results = await asyncio.gather(
                *(c.get("/boom") for _ in range(5)), caller.trigger("math::add", {"a": 1, "b": 2})
            )
    assert [r.status_code for r in results[:5]] == [500] * 5
    assert results[5] == 3


async def test_a_second_worker_for_the_same_function_is_refused_and_the_first_serves(
    http_engine: HttpEngine,
) -> None:
    # The protocol gives a function one serving worker (FUNCTION_NAMESPACE_CONFLICT for another).
    async with (
        http_engine.client() as c,
        sdk_worker(http_engine.url, "a") as a,
        sdk_worker(http_engine.url, "b") as b,
    ):
        route(a, "shared", "/shared", handler=lambda req: {"body": "a"})
        await http_engine.wait_route("GET", "/shared")
        route(b, "shared", "/shared", handler=lambda req: {"body": "b"})
        await asyncio.sleep(0.3)
        fn = http_engine.server.engine.functions[("default", "shared")]
        assert fn.owner is not None and fn.owner.name == "a"
        assert [(await c.get("/shared")).json() for _ in range(6)] == ["a"] * 6
