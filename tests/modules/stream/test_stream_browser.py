"""A page in headless Chromium (Debian's, driven by Playwright) joins a group and shows it live."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from compat.compat_kit import COMPAT
from support.engines import running_server, sdk_worker, url_of
from support.stream_engines import StreamEngine, stream_config

DRIVER = os.path.join(os.path.dirname(__file__), "browser_board.py")
PYTHON = COMPAT / "browser" / "bin" / "python"

pytestmark = pytest.mark.timeout(90)


async def test_a_browser_page_shows_items_as_they_change() -> None:
    if not PYTHON.exists() or not os.path.exists("/usr/bin/chromium"):
        pytest.fail(f"no browser install at {PYTHON.parent.parent}: run scripts/install-compat.sh browser")
    config = stream_config("{name: kv, config: {store_method: in_memory}}")
    async with running_server(config) as server, sdk_worker(url_of(server), "w") as w:
        e = StreamEngine(server, w, "in_memory")
        await e.call(
            "stream::set",
            {"stream_name": "board", "group_id": "g1", "item_id": "a", "data": {"id": "a", "text": "first"}},
        )
        proc = await asyncio.create_subprocess_exec(
            str(PYTHON),
            DRIVER,
            e.client_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None

        async def shown(expected: list[str]) -> None:
            """Read the page's renders until it shows ``expected``."""
            seen: list[Any] = []
            while True:
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
                except TimeoutError:
                    pytest.fail(f"the page never showed {expected}; it showed {seen}")
                if not line:
                    err = await proc.stderr.read() if proc.stderr else b""  # type: ignore[union-attr]
                    pytest.fail(f"the browser driver ended: {err.decode()[-2000:]}")
                msg = json.loads(line)
                if "shown" in msg:
                    seen.append(msg["shown"])
                    if msg["shown"] == expected:
                        return

        try:
            await shown(["a: first"])  # the sync
            item = {"stream_name": "board", "group_id": "g1"}
            await e.call("stream::set", {**item, "item_id": "b", "data": {"id": "b", "text": "second"}})
            await shown(["a: first", "b: second"])
            await e.call(
                "stream::update",
                {**item, "item_id": "a", "ops": [{"type": "set", "path": "text", "value": "edited"}]},
            )
            await shown(["a: edited", "b: second"])
            await e.call("stream::delete", {**item, "item_id": "b"})
            await shown(["a: edited"])
            await e.call(
                "stream::set",
                {
                    "stream_name": "board",
                    "group_id": "other",
                    "item_id": "z",
                    "data": {"id": "z", "text": "elsewhere"},
                },
            )
            await e.call("stream::set", {**item, "item_id": "c", "data": {"id": "c", "text": "third"}})
            await shown(["a: edited", "c: third"])  # the other group never reached the page
        finally:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
