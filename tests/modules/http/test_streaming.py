"""Streamed responses and raw request bodies through the request's channels (pyiii SDK)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pyiii import HttpRequest, HttpResponse
from support.engines import sdk_worker
from support.http_engines import HttpEngine


async def test_streamed_response_and_raw_body(http_engine: HttpEngine) -> None:
    blob = bytes(range(256)) * 1000  # 256 KB: several channel frames each way

    async with sdk_worker(http_engine.url, "files") as w:

        @w.http("POST", "/upload")
        async def upload(req: HttpRequest) -> Any:
            data = await req.read_body()
            return {"size": len(data), "same": data == blob, "body": req.body}

        @w.http("GET", "/download")
        async def download(req: HttpRequest) -> HttpResponse:
            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(blob), 10_000):
                    yield blob[i : i + 10_000]

            return HttpResponse.streaming(chunks(), 200, {"content-type": "application/octet-stream"})

        @w.http("GET", "/events")
        async def events(req: HttpRequest) -> HttpResponse:
            async def sse() -> AsyncIterator[str]:
                for n in range(3):
                    yield f"id: {n}\ndata: tick {n}\n\n"
                    await asyncio.sleep(0.01)

            return HttpResponse.streaming(sse(), 200, {"content-type": "text/event-stream", "x-n": "3"})

        @w.http("GET", "/created-empty")
        async def empty(req: HttpRequest) -> HttpResponse:
            async def nothing() -> AsyncIterator[bytes]:
                for _ in ():
                    yield b""

            return HttpResponse.streaming(nothing(), 201, {"x-empty": "yes"})

        await http_engine.wait_route("GET", "/created-empty")
        async with http_engine.client() as c:
            up = await c.post("/upload", content=blob, headers={"content-type": "application/octet-stream"})
            up_json = await c.post("/upload", json={"a": 1})
            down = await c.get("/download")
            lines: list[str] = []
            async with c.stream("GET", "/events") as ev:
                async for line in ev.aiter_lines():
                    lines.append(line)
            created = await c.get("/created-empty")
    assert up.json() == {"size": len(blob), "same": True, "body": None}
    assert up_json.json()["body"] == {"a": 1} and up_json.json()["size"] == len(b'{"a":1}')
    assert down.status_code == 200
    assert down.headers["content-type"] == "application/octet-stream"
    assert down.content == blob
    assert ev.headers["content-type"] == "text/event-stream" and ev.headers["x-n"] == "3"
    assert [x for x in lines if x.startswith("data:")] == ["data: tick 0", "data: tick 1", "data: tick 2"]
    assert (created.status_code, created.headers["x-empty"], created.content) == (201, "yes", b"")
    engine = http_engine.server.engine
    for _ in range(50):
        if len(engine.channels) == 0:
            break
        await asyncio.sleep(0.02)
    assert len(engine.channels) == 0


async def test_client_leaving_a_stream_closes_the_writer(http_engine: HttpEngine) -> None:
    stopped = asyncio.Event()

    async with sdk_worker(http_engine.url, "ticker") as w:

        @w.http("GET", "/forever")
        async def forever(req: HttpRequest) -> HttpResponse:
            async def ticks() -> AsyncIterator[bytes]:
                try:
                    while True:
                        yield b"tick\n"
                        await asyncio.sleep(0.01)
                finally:
                    stopped.set()

            return HttpResponse.streaming(ticks())

        await http_engine.wait_route("GET", "/forever")
        async with http_engine.client() as c, c.stream("GET", "/forever") as r:
            async for _chunk in r.aiter_bytes():
                break
        await asyncio.wait_for(stopped.wait(), 10)
        engine = http_engine.server.engine
        for _ in range(100):
            if len(engine.channels) == 0 and engine.stats()["pending"] == 0:
                break
            await asyncio.sleep(0.02)
        assert len(engine.channels) == 0
        assert engine.stats()["pending"] == 0


async def test_channels_are_made_only_when_the_function_opens_them(http_engine: HttpEngine) -> None:
    engine = http_engine.server.engine
    seen: list[dict[str, Any]] = []

    async with sdk_worker(http_engine.url, "plain") as w:

        @w.http("POST", "/plain")
        async def plain(req: HttpRequest) -> Any:
            # The refs are in the request, yet no channel exists while it runs.
            refs = {k: req.raw[k] for k in ("request_body", "response")}
            seen.append({"open": len(engine.channels), **refs})
            return {"ok": True}

        await http_engine.wait_route("POST", "/plain")
        async with http_engine.client() as c:
            r = await c.post("/plain", json={"a": 1})
    assert r.json() == {"ok": True}
    assert seen[0]["open"] == 0
    body, response = seen[0]["request_body"], seen[0]["response"]
    assert (body["direction"], response["direction"]) == ("read", "write")
    # Once the request is over its refs open nothing, and nothing is left behind.
    assert engine.channels.get(body["channel_id"], body["access_key"], "read") is None
    assert engine.channels.get(response["channel_id"], response["access_key"], "write") is None
    assert len(engine.channels) == 0 and not engine.channels._spots
