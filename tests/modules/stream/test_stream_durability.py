"""file_based streams: every acknowledged write is there after kill -9 and a restart."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from support.engines import free_port, sdk_worker
from support.stream_engines import StreamClient


async def test_acknowledged_items_survive_sigkill(make_engine_proc: Any, tmp_path: Any) -> None:
    stream_port = free_port()
    config = (
        "workers:\n  - name: iii-stream\n    config:\n"
        f"      port: {stream_port}\n"
        "      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/streams}}\n"
    )
    eng = make_engine_proc(config).start()
    n = 300
    async with sdk_worker(eng.url, "writer") as w:
        acked = await asyncio.gather(
            *(
                w.trigger(
                    "stream::set",
                    {"stream_name": "s", "group_id": f"g{i % 3}", "item_id": str(i), "data": {"i": i}},
                )
                for i in range(n)
            )
        )
        await w.trigger(
            "stream::update",
            {
                "stream_name": "s",
                "group_id": "g0",
                "item_id": "0",
                "ops": [{"type": "set", "path": "x", "value": 1}],
            },
        )
        await w.trigger("stream::delete", {"stream_name": "s", "group_id": "g1", "item_id": "1"})
    assert len(acked) == n
    eng.proc.send_signal(signal.SIGKILL)
    eng.proc.wait(10)
    assert (tmp_path / "data" / "streams" / "pyiii-stream.sqlite3").is_file()

    eng = make_engine_proc(config).start()
    async with sdk_worker(eng.url, "reader") as w:
        groups = await w.trigger("stream::list_groups", {"stream_name": "s"})
        assert groups == ["g0", "g1", "g2"]
        items = []
        for g in groups:
            items += await w.trigger("stream::list", {"stream_name": "s", "group_id": g})
        assert sorted(item["i"] for item in items) == [i for i in range(n) if i != 1]
        assert await w.trigger("stream::get", {"stream_name": "s", "group_id": "g0", "item_id": "0"}) == {
            "i": 0,
            "x": 1,
        }
    async with StreamClient(f"ws://127.0.0.1:{stream_port}/") as c:
        await c.join("sub", "s", "g2")
        sync = await c.recv()
        assert sorted(item["i"] for item in sync["event"]["data"]) == list(range(2, n, 3))
