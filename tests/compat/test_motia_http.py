"""A Motia app's HTTP (API) steps served by pyiii (Motia 1.0.4rc1 on iii-sdk 0.11.3).

`motia run --dir steps` runs tests/compat/motia_http_app as a subprocess against an
in-process engine with iii-http; a real HTTP client (httpx) checks path and query
parameters, the JSON body, status codes, response headers and a step that raises.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from compat_kit import COMPAT, ROOT, Spawner

from pyiii.config import parse_config
from pyiii.engine.server import Server
from pyiii.modules.http.module import HttpModule

pytestmark = pytest.mark.timeout(120)

APP = ROOT / "tests" / "compat" / "motia_http_app"
MOTIA = COMPAT / "py-motia" / "bin" / "motia"
ROUTES = {("GET", "/todos/x"), ("GET", "/search"), ("POST", "/todos"), ("GET", "/broken")}
CONFIG = "workers:\n  - name: iii-http\n    config: {port: 0}\n  - name: iii-state\n"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server(dataclasses.replace(parse_config(CONFIG, source="test"), port=0))
    await server.start()
    yield server
    await server.stop()


async def test_motia_api_steps_answer_over_http(
    spawn: Spawner, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    if not MOTIA.exists():
        hint = "run `make test` (scripts/install-compat.sh py-motia)"
        pytest.fail(f"{MOTIA} is missing: {hint}", pytrace=False)
    http = server.module("iii-http")
    assert isinstance(http, HttpModule)
    url = f"ws://127.0.0.1:{server.port}"
    app = await spawn.command("motia run", [str(MOTIA), "run", "--dir", "steps"], url=url, cwd=APP)
    try:
        deadline = time.monotonic() + 30
        while not all(http.routes.match(m, p) for m, p in ROUTES):
            if app.returncode is not None:
                pytest.fail(f"motia exited\n{app.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the Motia API steps never registered their routes\n{app.describe()}")
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", timeout=20) as c:
            found = await c.get("/todos/t-2")
            missing = await c.get("/todos/t-404")
            search = await c.get("/search?q=milk&tag=a&tag=b", headers={"user-agent": "motia-test/1"})
            created = await c.post("/todos", json={"title": "water plants"})
            invalid = await c.post("/todos", json={"done": True})
            broken = await c.get("/broken")
            unknown = await c.get("/nowhere")
    finally:
        await app.stop()

    assert found.status_code == 200, found.text
    assert found.json() == {"id": "t-2", "title": "write tests"}
    assert found.headers["x-todo-id"] == "t-2"
    assert missing.status_code == 404 and missing.json() == {"error": "no todo t-404"}

    assert search.status_code == 200, search.text
    assert search.json() == {
        "query": {"q": "milk", "tag": ["a", "b"]},
        "method": "GET",
        "agent": "motia-test/1",
    }

    assert created.status_code == 201, created.text
    assert created.json() == {"id": "t-12", "title": "water plants", "done": False}
    assert created.headers["location"] == "/todos/t-12"
    assert invalid.status_code == 400 and invalid.json() == {"error": "title is required"}

    # The raising step: the engine's 500 envelope, its error_id also in the engine log.
    assert broken.status_code == 500, broken.text
    envelope = broken.json()
    assert "the todo database is on fire" in envelope["error"]["message"], envelope
    error_id = envelope["error"]["error_id"]
    assert re.fullmatch(r"[0-9a-zA-Z-]{8,}", error_id), envelope
    assert any(error_id in r.getMessage() for r in caplog.records), "error_id not in the engine log"

    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
