"""The console in a real browser: Debian's Chromium, headless, driven by Playwright.

Playwright comes from PyPI into the ``$III_COMPAT_DIR/browser`` venv (same
Python as the tests, so this process imports it from there) and the browser
from Debian (``/usr/bin/chromium``): ``scripts/install-compat.sh browser``
installs both (``make test`` does). The test writes the screenshot
the README shows, ``docs/console.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pyiii import IIIError, Logger, Worker
from pyiii.engine.server import Server
from pyiii.modules.console.module import ConsoleModule
from support.engines import running_server, sdk_worker, url_of

ROOT = Path(__file__).resolve().parents[3]
COMPAT = Path(os.environ.get("III_COMPAT_DIR", ROOT / ".compat"))
BROWSER_VENV = COMPAT / "browser"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONFIG = """\
workers:
  - name: iii-state
  - name: iii-console
    config: {port: 0}
"""
SCOPE_KEYS = 10_000
XSS = "<img src=x onerror=window.__pwned=1>"

pytestmark = pytest.mark.timeout(120)


def _playwright() -> Any:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = BROWSER_VENV / "lib" / version / "site-packages"
    if not (site / "playwright").is_dir() or not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Playwright (in {site}) or Chromium ({CHROMIUM}) is missing: "
            "run `bash scripts/install-compat.sh browser` (make test does)"
        )
    if str(site) not in sys.path:
        sys.path.append(str(site))
    from playwright.async_api import async_playwright

    return async_playwright


@contextlib.asynccontextmanager
async def _page(pw: Any, *, console_errors: bool = True) -> AsyncIterator[tuple[Any, list[str]]]:
    """A page of a fresh headless Chromium; the list collects its uncaught errors (and console errors)."""
    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
    try:
        page = await browser.new_page(viewport={"width": 1400, "height": 860})
        js_errors: list[str] = []
        page.on("pageerror", lambda exc: js_errors.append(f"pageerror: {exc}"))
        if console_errors:
            page.on(
                "console",
                lambda msg: js_errors.append(f"console: {msg.text}") if msg.type == "error" else None,
            )
        yield page, js_errors
    finally:
        await browser.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Worker, str]]:
    async with running_server(CONFIG) as server, sdk_worker(url_of(server), "shop") as worker:
        logger = Logger("shop")

        def greet(data: dict[str, Any]) -> dict[str, Any]:
            logger.info(f"greeting {data.get('name')}")
            return {"hello": data.get("name")}

        def refuse(data: Any) -> Any:
            raise IIIError("out_of_stock", "nothing left")

        worker.register_function("shop::greet", greet, description="Says hello")
        worker.register_function("shop::refuse", refuse)
        for start in range(0, SCOPE_KEYS, 2000):
            items = [{"key": f"item-{i:05d}", "value": {"n": i}} for i in range(start, start + 2000)]
            await worker.trigger("state::set_many", {"scope": "catalog", "items": items})
        await worker.trigger("state::set", {"scope": "notes", "key": "evil", "value": XSS})
        await worker.trigger("state::set", {"scope": "notes", "key": "plain", "value": {"a": 1}})
        module = server.module("iii-console")
        assert isinstance(module, ConsoleModule)
        yield server, worker, f"http://127.0.0.1:{module.port}"


async def test_console_in_chromium(
    served: tuple[Server, Worker, str], caplog: pytest.LogCaptureFixture
) -> None:
    # The log page shows what the engine logs; `pyiii serve` logs INFO by default, pytest does not.
    caplog.set_level(logging.INFO, logger="pyiii")
    server, worker, base = served
    async with _playwright()() as pw, _page(pw) as (page, js_errors):
        await _every_page(page, base)
        await _workers_live(page, server)
        await _state(page, base, worker)
        await _functions(page)
        await _logs(page)
        await _expiry_kept(page, worker)
        await _xss(page)
        assert js_errors == []
        assert await page.evaluate("window.__pwned") is None


async def _every_page(page: Any, base: str) -> None:
    await page.goto(base + "/#workers")
    await page.locator("#workers-table tbody tr", has_text="shop").wait_for()
    for name in ("functions", "triggers", "state", "queues", "streams", "logs"):
        await page.click(f"nav a[data-page={name}]")
        await page.locator(f"#page-{name}").wait_for(state="visible")
    await page.click("nav a[data-page=queues]")
    await page.locator("#queues-status", has_text="queue module is not enabled").wait_for()
    await page.click("nav a[data-page=streams]")
    await page.locator("#streams-status", has_text="streams module is not enabled").wait_for()


async def _workers_live(page: Any, server: Server) -> None:
    # A worker that connects or leaves while the page is open shows up without a reload.
    await page.click("nav a[data-page=workers]")
    await page.locator("#live.on").wait_for()
    rows = page.locator("#workers-table tbody tr")
    async with sdk_worker(url_of(server), "late-joiner"):
        await rows.filter(has_text="late-joiner").wait_for()
        assert await rows.count() == 2
    await rows.filter(has_text="late-joiner").wait_for(state="detached")
    assert await rows.count() == 1


async def _state(page: Any, base: str, worker: Worker) -> None:
    await page.click("nav a[data-page=state]")
    row = page.locator("#scopes-table tbody tr", has_text="catalog")
    await row.locator("td.num", has_text=str(SCOPE_KEYS)).wait_for()
    await row.click()
    pager = page.locator("#keys-page")
    await pager.filter(has_text=f"page 1 · keys 1-50 of {SCOPE_KEYS}").wait_for()
    assert await page.locator("#keys-table tbody tr").count() == 50
    for n in range(2, 5):
        await page.click("#keys-next")
        await pager.filter(has_text=f"page {n} · keys {(n - 1) * 50 + 1}-{n * 50} of {SCOPE_KEYS}").wait_for()
    keys = await page.locator("#keys-table tbody tr td:first-child").all_inner_texts()
    assert keys == [f"item-{i:05d}" for i in range(150, 200)]
    await page.click("#keys-prev")
    await pager.filter(has_text="page 3 · keys 101-150").wait_for()
    # A prefix filter reaches keys at the far end of the scope.
    await page.fill("#key-prefix", "item-099")
    await pager.filter(has_text="page 1 · keys 1-50 of 100").wait_for()
    await page.click("#keys-next")
    await pager.filter(has_text="page 2 · keys 51-100 of 100").wait_for()
    assert await page.locator("#keys-next").is_disabled()
    last = await page.locator("#keys-table tbody tr td:first-child").all_inner_texts()
    assert last[-1] == "item-09999"

    # Edit with the version as precondition.
    key = {"scope": "catalog", "key": "item-09990", "with_meta": True}
    before = await worker.trigger("state::get", key)
    await page.locator("#keys-table tbody tr", has_text="item-09990").click()
    await page.locator("#value-version", has_text=str(before["version"])).wait_for()
    await page.fill("#value-editor", '{"n": 9990, "edited": true}')
    await page.click("#value-save")
    await page.locator("#value-message", has_text="Saved: version").wait_for()
    saved = await worker.trigger("state::get", key)
    assert saved["value"] == {"n": 9990, "edited": True} and saved["version"] > before["version"]
    assert await page.locator("#value-message").inner_text() == f"Saved: version {saved['version']}"
    # A change made elsewhere after the page read the value is reported, never overwritten.
    await worker.trigger("state::set", {"scope": "catalog", "key": "item-09990", "value": {"n": "theirs"}})
    theirs = await worker.trigger("state::get", key)
    await page.fill("#value-editor", '{"n": "mine"}')
    await page.click("#value-save")
    await page.locator("#value-message", has_text="Conflict").wait_for()
    assert f"now version {theirs['version']}" in await page.locator("#value-message").inner_text()
    await page.screenshot(path=str(ROOT / "docs" / "console.png"))
    stored = await worker.trigger("state::get", {"scope": "catalog", "key": "item-09990"})
    assert stored == {"n": "theirs"}
    await page.click("#value-reload")
    await page.locator("#value-view", has_text="theirs").wait_for()


async def _functions(page: Any) -> None:
    await page.click("nav a[data-page=functions]")
    await page.fill("#fn-filter", "shop::")
    rows = page.locator("#functions-table tbody tr")
    await rows.filter(has_text="shop::refuse").wait_for()
    assert await rows.count() == 2
    await rows.filter(has_text="shop::greet").click()
    await page.fill("#invoke-payload", "{not json")
    await page.locator("#invoke-json-state", has_text="not JSON").wait_for()
    await page.fill("#invoke-payload", '{"name": "Ada"}')
    await page.click("#invoke-run")
    await page.locator("#invoke-status.ok").wait_for()
    assert '"hello": "Ada"' in await page.locator("#invoke-output").inner_text()
    await rows.filter(has_text="shop::refuse").click()
    await page.click("#invoke-run")
    await page.locator("#invoke-status.error", has_text="out_of_stock").wait_for()
    assert "nothing left" in await page.locator("#invoke-output").inner_text()


async def _logs(page: Any) -> None:
    await page.click("nav a[data-page=logs]")
    await page.locator("#live.on").wait_for()
    # A worker's log line, sent over telemetry while the page is open, appears without a reload.
    await page.click("nav a[data-page=functions]")
    await page.locator("#functions-table tbody tr", has_text="shop::greet").click()
    await page.click("nav a[data-page=logs]")
    await page.evaluate(
        "fetch('/api/call', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({function_id: 'shop::greet', data: {name: 'Grace'}})})"
    )
    await page.locator("#log-lines .log", has_text="greeting Grace").wait_for(timeout=15_000)
    # The level filter hides it; the worker filter keeps it.
    await page.select_option("#log-level", "ERROR")
    await asyncio.sleep(0.3)
    assert await page.locator("#log-lines .log", has_text="greeting Grace").count() == 0
    await page.select_option("#log-level", "INFO")
    await page.locator("#log-lines .log", has_text="greeting Grace").wait_for()


async def _expiry_kept(page: Any, worker: Worker) -> None:
    # Editing a key that expires keeps it expiring at the same time (a plain set would drop the TTL).
    key = {"scope": "notes", "key": "session", "with_meta": True}
    await worker.trigger("state::set", {"scope": "notes", "key": "session", "value": 1, "ttl_ms": 3_600_000})
    before = await worker.trigger("state::get", key)
    await page.click("nav a[data-page=state]")
    await page.locator("#scopes-table tbody tr", has_text="notes").click()
    await page.locator("#keys-table tbody tr", has_text="session").click()
    await page.locator("#value-version", has_text=str(before["version"])).wait_for()
    assert await page.locator("#value-expiry").inner_text() != "never"
    await page.fill("#value-editor", "2")
    await page.click("#value-save")
    await page.locator("#value-message", has_text="Saved").wait_for()
    after = await worker.trigger("state::get", key)
    assert after["value"] == 2
    assert abs(after["expires_at_ms"] - before["expires_at_ms"]) < 5_000


async def _xss(page: Any) -> None:
    await page.click("nav a[data-page=state]")
    await page.locator("#scopes-table tbody tr", has_text="notes").click()
    await page.locator("#keys-table tbody tr", has_text="evil").click()
    view = page.locator("#value-view")
    await view.filter(has_text="<img").wait_for()
    assert XSS in await view.inner_text()
    assert await page.locator("main img").count() == 0
    assert await page.locator("#keys-table img").count() == 0


TOKEN = "browser-test-token"
FULL_CONFIG = f"""\
auth_token: {TOKEN}
workers:
  - name: iii-state
  - name: iii-queue
    config:
      queue_configs:
        jobs: {{max_retries: 1, concurrency: 1, backoff_ms: 10}}
  - name: iii-cron
  - name: iii-http
    config: {{port: 0}}
  - name: iii-stream
    config: {{port: 0}}
  - name: iii-console
    config: {{port: 0}}
"""


async def test_token_queues_and_triggers_in_chromium() -> None:
    from pyiii import connect

    async with running_server(FULL_CONFIG) as server:
        worker = await connect(url_of(server), name="ops", token=TOKEN, invocation_timeout_ms=20_000)
        try:
            await _ops_pages(server, worker)
        finally:
            await worker.shutdown()


async def _ops_pages(server: Server, worker: Worker) -> None:
    nightly_runs: list[Any] = []

    def nightly(event: Any) -> Any:
        nightly_runs.append(event)
        return {"swept": 3}

    def charge(data: Any) -> Any:
        raise IIIError("card_declined", "declined")

    worker.register_function("ops::nightly", nightly)
    worker.register_function("ops::charge", charge)
    worker.register_function(
        "ops::hello", lambda req: {"status_code": 200, "body": {"hi": req["path_params"]["who"]}}
    )
    worker.register_trigger(
        {"type": "cron", "function_id": "ops::nightly", "config": {"expression": "0 0 3 1 1 * *"}}
    )
    worker.register_trigger(
        {
            "type": "http",
            "function_id": "ops::hello",
            "config": {"api_path": "/hello/:who", "http_method": "GET"},
        }
    )
    for n in range(2):
        await worker.trigger("ops::charge", {"order": n}, action={"type": "enqueue", "queue": "jobs"})
    for _ in range(100):
        if (await worker.trigger("engine::queue::topic_stats", {"queue": "jobs"}))["dlq_depth"] == 2:
            break
        await asyncio.sleep(0.05)
    module = server.module("iii-console")
    assert isinstance(module, ConsoleModule)
    base = f"http://127.0.0.1:{module.port}"

    # Only uncaught errors count here: the refused wrong token makes the browser log failed requests.
    async with _playwright()() as pw, _page(pw, console_errors=False) as (page, js_errors):
        await page.goto(base + "/#queues")
        # The engine has a token: nothing is shown until it is given.
        await page.locator("#login").wait_for(state="visible")
        assert await page.locator("#page-queues").is_hidden()
        await page.fill("#token-input", "wrong")
        await page.click("#token-form button")
        await page.locator("#health", has_text="auth token needed").wait_for()
        await page.fill("#token-input", TOKEN)
        await page.click("#token-form button")
        row = page.locator("#queues-table tbody tr", has_text="jobs")
        await row.wait_for()
        assert (await row.locator("td").all_inner_texts())[2:5] == [
            "0",
            "1",
            "2",
        ]  # depth, consumers, dead
        await row.locator("button", has_text="Dead letters").click()
        letters = page.locator("#dlq-table tbody tr")
        await letters.nth(1).wait_for()
        assert "card_declined" in await letters.nth(0).inner_text()
        await letters.nth(0).locator("button", has_text="Discard").click()
        await page.locator("#dlq-message", has_text='"discarded":1').wait_for()
        await page.locator("#queues-table tbody tr td:nth-child(5)", has_text="1").wait_for()
        assert (await worker.trigger("engine::queue::topic_stats", {"queue": "jobs"}))["dlq_depth"] == 1

        await page.click("nav a[data-page=triggers]")
        cron = page.locator("#triggers-table tbody tr", has_text="ops::nightly")
        await cron.locator("button", has_text="Run now").click()
        await page.locator("#cron-status", has_text="ran ops::nightly").wait_for()
        assert '"swept": 3' in await page.locator("#cron-output").inner_text()
        assert nightly_runs and nightly_runs[0]["manual"] is True
        http = page.locator("#triggers-table tbody tr", has_text="ops::hello")
        await http.locator("button", has_text="Test").click()
        assert await page.input_value("#http-path") == "/hello/:who"
        await page.fill("#http-path", "/hello/ada")
        await page.click("#http-send")
        await page.locator("#http-status", has_text="200").wait_for()
        assert '"hi": "ada"' in await page.locator("#http-output").inner_text()

        # The live stream of a group is behind the token too (the page sends it).
        await worker.trigger(
            "stream::set", {"stream_name": "ops", "group_id": "runs", "item_id": "r1", "data": 1}
        )
        await page.click("nav a[data-page=streams]")
        await page.locator("#streams-table tbody tr", has_text="ops").click()
        await page.locator("#groups-table tbody tr", has_text="runs").locator("button").click()
        await page.locator("#stream-live", has_text="1 item · live").wait_for()
        await worker.trigger(
            "stream::set", {"stream_name": "ops", "group_id": "runs", "item_id": "r2", "data": 2}
        )
        await page.locator('#stream-items tbody tr[data-id="r2"]').wait_for(timeout=2_000)
        assert js_errors == []


STREAM_CONFIG = """\
workers:
  - name: iii-stream
    config: {port: 0}
  - name: iii-console
    config: {port: 0}
"""
LIVE_WITHIN_S = 1.0


async def test_streams_page_watches_a_group_live() -> None:
    async with running_server(STREAM_CONFIG) as server, sdk_worker(url_of(server), "board") as worker:
        g1 = {"stream_name": "board", "group_id": "g1"}
        await worker.trigger("stream::set", {**g1, "item_id": "a", "data": {"text": "first"}})
        await worker.trigger("stream::set", {**g1, "item_id": "evil", "data": {"text": XSS}})
        await worker.trigger(
            "stream::set", {"stream_name": "board", "group_id": "g2", "item_id": "z", "data": 1}
        )
        await worker.trigger(
            "stream::set", {"stream_name": "chat", "group_id": "room", "item_id": "m", "data": 2}
        )
        module = server.module("iii-console")
        assert isinstance(module, ConsoleModule)
        stream = server.module("iii-stream")
        async with _playwright()() as pw, _page(pw) as (page, js_errors):
            await page.goto(f"http://127.0.0.1:{module.port}/#streams")
            await _watch_board(page, worker, stream)
            assert js_errors == []
            assert await page.evaluate("window.__pwned") is None


async def _watch_board(page: Any, worker: Worker, stream: Any) -> None:
    g1 = {"stream_name": "board", "group_id": "g1"}
    streams = page.locator("#streams-table tbody tr")
    await streams.filter(has_text="chat").wait_for()
    assert await streams.all_inner_texts() == ["board\t2", "chat\t1"]
    await streams.filter(has_text="board").click()
    groups = page.locator("#groups-table tbody tr")
    await groups.filter(has_text="g2").wait_for()
    await groups.filter(has_text="g1").locator("button", has_text="Watch").click()
    items = page.locator("#stream-items tbody tr")
    await items.filter(has_text="first").wait_for()
    await page.locator("#stream-live", has_text="2 items · live").wait_for()
    # A value is text on the page, never markup.
    assert XSS in await items.filter(has_text="evil").inner_text()
    assert await page.locator("#stream-items img").count() == 0
    assert stream.stats()["subscriptions"] == 1

    async def shown_within(change: Any, locator: Any, state: str = "visible") -> float:
        started = time.perf_counter()
        await change
        await locator.wait_for(state=state, timeout=5_000)
        return time.perf_counter() - started

    row = page.locator('#stream-items tbody tr[data-id="b"]')
    lags = [
        await shown_within(
            worker.trigger("stream::set", {**g1, "item_id": "b", "data": {"text": "bee"}}), row
        )
    ]
    assert await row.inner_text() == 'b\t{"text":"bee"}'
    ops = [{"type": "set", "path": "text", "value": "changed"}]
    a_changed = page.locator('#stream-items tbody tr[data-id="a"]', has_text="changed")
    lags.append(
        await shown_within(worker.trigger("stream::update", {**g1, "item_id": "a", "ops": ops}), a_changed)
    )
    a_row = page.locator('#stream-items tbody tr[data-id="a"]')
    lags.append(
        await shown_within(worker.trigger("stream::delete", {**g1, "item_id": "a"}), a_row, "detached")
    )
    event = page.locator("#stream-event", has_text='event ping: {"n":7}')
    lags.append(
        await shown_within(worker.trigger("stream::send", {**g1, "type": "ping", "data": {"n": 7}}), event)
    )
    assert max(lags) < LIVE_WITHIN_S, lags
    # Another group's change is not this group's.
    await worker.trigger("stream::set", {"stream_name": "board", "group_id": "g2", "item_id": "y", "data": 3})
    await worker.trigger("stream::set", {**g1, "item_id": "c", "data": "sea"})
    await page.locator('#stream-items tbody tr[data-id="c"]').wait_for()
    assert await page.locator("#stream-items tbody tr td:first-child").all_inner_texts() == ["b", "c", "evil"]
    await page.locator("#stream-live", has_text="3 items · live").wait_for()

    # Away from the page the group is not followed; back on it, it shows what changed meanwhile.
    await page.click("nav a[data-page=workers]")
    await _until(lambda: stream.stats()["subscriptions"] == 0)
    await worker.trigger("stream::delete", {**g1, "item_id": "evil"})
    await page.click("nav a[data-page=streams]")
    await page.locator("#stream-live", has_text="2 items · live").wait_for()
    assert await page.locator("#stream-items tbody tr td:first-child").all_inner_texts() == ["b", "c"]
    assert stream.stats()["subscriptions"] == 1


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
