"""Streams: one writer, many subscribed WebSocket clients, against a bare broadcast.

The engine rows: a pyiii SDK worker calls ``stream::set`` on items of one group
(``WINDOW`` writes in flight), ``CLIENTS`` picows clients joined to that group
on the stream port receive every change. The ceiling: a bare picows server
(same WebSocket stack, no engine) that takes the same writes as frames,
sends the same frames to the same clients, then acknowledges the write.

Delivered messages/s counts frames received by all clients during the
measured window; latency is per delivery, from the write acknowledged to
the writer (ack -> client; 0 when the client had it first) and from the
write sent (sent -> client), sampled on every ``SAMPLE``-th client. The
clients and the writer share this process, so its CPU bounds both rows alike.

    python benchmarks/streams.py                 # = run.py --only stream
    python benchmarks/streams.py --serve PORT    # run the bare broadcast server alone
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, cpu_seconds, engine, free_port, process, progress, run, section_main, with_ratio

CLIENTS = 1000
WINDOW = 16
SAMPLE = 10
PAD = "x" * 64
STREAM_CONFIG = """\
workers:
  - name: iii-stream
    config: {{port: {port}, adapter: {{name: kv, config: {{store_method: in_memory}}}}}}
"""


def _frame(n: int, t: float) -> bytes:
    """What the ceiling sends each client: the engine's frame shape for an update."""
    data = json.dumps({"n": n, "t": t, "pad": PAD})
    ms = time.time_ns() // 1_000_000
    return (
        f'{{"type":"stream","timestamp":{ms},"streamName":"bench","groupId":"g","id":"i{n % 100}",'
        f'"event":{{"type":"update","data":{data}}}}}'
    ).encode()


async def serve_broadcast(port: int) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    subscribers: set[WSTransport] = set()

    class Conn(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            self.t = transport

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
                return
            if frame.msg_type is not WSMsgType.TEXT:
                return
            msg = json.loads(frame.get_payload_as_bytes())
            if msg.get("type") == "join":
                subscribers.add(transport)
                transport.send(WSMsgType.TEXT, b'{"type":"stream","event":{"type":"sync","data":[]}}')
            elif msg.get("type") == "write":
                data = _frame(msg["n"], msg["t"])
                for sub in subscribers:
                    sub.send(WSMsgType.TEXT, data)
                transport.send(WSMsgType.TEXT, b'{"ack":%d}' % msg["n"])

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            subscribers.discard(transport)

    server = await ws_create_server(lambda _req: Conn(), "127.0.0.1", port)
    print("broadcast ready", flush=True)
    await server.serve_forever()


class _Clients:
    """``CLIENTS`` picows clients joined to group g of stream bench; they count and sample."""

    def __init__(self) -> None:
        self.count = 0
        self.counting = False
        self.samples: list[tuple[int, float]] = []  # (seq, received at)
        self.transports: list[Any] = []

    async def connect(self, url: str) -> None:
        from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

        clients = self
        synced = 0
        all_synced = asyncio.get_running_loop().create_future()

        class Client(WSListener):
            def __init__(self, sampled: bool) -> None:
                self.sampled = sampled
                self.joined = False

            def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
                nonlocal synced
                if frame.msg_type is not WSMsgType.TEXT:
                    return
                if not self.joined:
                    self.joined = True
                    synced += 1
                    if synced == CLIENTS and not all_synced.done():
                        all_synced.set_result(None)
                    return
                if clients.counting:
                    clients.count += 1
                    if self.sampled:
                        at = time.perf_counter()
                        data = json.loads(frame.get_payload_as_bytes())["event"]["data"]
                        clients.samples.append((data["n"], at))

        join = json.dumps(
            {"type": "join", "data": {"subscriptionId": "b", "streamName": "bench", "groupId": "g"}}
        ).encode()
        for i in range(CLIENTS):
            transport, _ = await ws_connect(lambda i=i: Client(i % SAMPLE == 0), url)  # type: ignore[misc]
            transport.send(WSMsgType.TEXT, join)
            self.transports.append(transport)
        await asyncio.wait_for(all_synced, 60)

    def close(self) -> None:
        for t in self.transports:
            t.disconnect()


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


class _Side:
    """One side (ceiling or engine): its clients, its writer, and what its windows measured."""

    def __init__(self, name: str, clients: _Clients, write: Any, pid: int) -> None:
        self.name, self.clients, self.write, self.pid = name, clients, write, pid
        self.sent: dict[int, float] = {}
        self.acked: dict[int, float] = {}
        self.seq = 0
        self.delivered = 0
        self.writes = 0
        self.elapsed = self.cpu = self.own = 0.0
        self.from_sent: list[float] = []
        self.from_ack: list[float] = []

    async def window(self, seconds: float) -> None:
        """Writers on, a short warm-up, ``seconds`` counted, writers off and drained."""
        stop = False

        async def writer() -> None:
            while not stop:
                self.seq += 1
                n = self.seq
                self.sent[n] = time.perf_counter()
                await self.write(n, self.sent[n])
                self.acked[n] = time.perf_counter()

        clients = self.clients
        tasks = [asyncio.create_task(writer()) for _ in range(WINDOW)]
        await asyncio.sleep(0.2)
        clients.count, clients.samples = 0, []
        first = self.seq + 1
        cpu0, own0, t0 = cpu_seconds(self.pid), time.process_time(), time.perf_counter()
        clients.counting = True
        await asyncio.sleep(seconds)
        clients.counting = False
        elapsed = time.perf_counter() - t0
        self.cpu += cpu_seconds(self.pid) - cpu0
        self.own += time.process_time() - own0
        self.elapsed += elapsed
        self.delivered += clients.count
        last = self.seq
        stop = True
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.3)  # let the last frames arrive before the next window
        self.writes += last - first + 1
        for n, at in clients.samples:
            if n >= first and n in self.acked:
                self.from_sent.append((at - self.sent[n]) * 1e6)
                self.from_ack.append(max(0.0, at - self.acked[n]) * 1e6)
        self.sent.clear()
        self.acked.clear()

    def row(self) -> Row:
        return Row(
            name=self.name,
            ops_per_s=self.delivered / self.elapsed,
            p50_us=_percentile(self.from_ack, 0.5),
            p99_us=_percentile(self.from_ack, 0.99),
            section="stream",
            server_cpu=self.cpu / self.elapsed,
            client_cpu=self.own / self.elapsed,
            note=f"{CLIENTS} clients, {WINDOW} writes in flight",
            extra={
                "writes_per_s": self.writes / self.elapsed,
                "sent_p50_us": _percentile(self.from_sent, 0.5),
                "sent_p99_us": _percentile(self.from_sent, 0.99),
            },
        )


async def _ceiling_side(port: int, pid: int) -> tuple[_Side, Any]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    url = f"ws://127.0.0.1:{port}/"
    clients = _Clients()
    await clients.connect(url)
    waiting: dict[int, asyncio.Future[None]] = {}

    class Writer(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.TEXT:
                n = json.loads(frame.get_payload_as_bytes())["ack"]
                fut = waiting.pop(n, None)
                if fut is not None:
                    fut.set_result(None)

    wt, _ = await ws_connect(Writer, url)

    async def write(n: int, t: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        waiting[n] = fut
        wt.send(WSMsgType.TEXT, json.dumps({"type": "write", "n": n, "t": t}).encode())
        await fut

    async def close() -> None:
        wt.disconnect()
        clients.close()

    return _Side("bare picows broadcast (ceiling)", clients, write, pid), close


async def _engine_side(url: str, stream_port: int, pid: int) -> tuple[_Side, Any]:
    from pyiii import connect

    clients = _Clients()
    await clients.connect(f"ws://127.0.0.1:{stream_port}/")
    w = await connect(url, name="stream-bench")

    async def write(n: int, t: float) -> None:
        item = {"stream_name": "bench", "group_id": "g", "item_id": f"i{n % 100}"}
        await w.trigger("stream::set", {**item, "data": {"n": n, "t": t, "pad": PAD}})

    async def close() -> None:
        await w.shutdown()
        clients.close()

    return _Side("stream::set -> clients (kv in_memory)", clients, write, pid), close


async def _both(
    ceiling_port: int, ceiling_pid: int, url: str, stream_port: int, pid: int, seconds: float
) -> list[Row]:
    ceiling, close_ceiling = await _ceiling_side(ceiling_port, ceiling_pid)
    side, close_engine = await _engine_side(url, stream_port, pid)
    try:
        for _ in range(2):  # alternating windows, so drifting machine load hits both alike
            await ceiling.window(seconds / 2)
            await side.window(seconds / 2)
    finally:
        await close_engine()
        await close_ceiling()
    return [ceiling.row(), side.row()]


def stream_rows(seconds: float) -> list[Row]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        progress(f"stream: a bare broadcast and an engine, {CLIENTS} clients each, alternating windows")
        ceiling_port = free_port()
        ceiling = stack.enter_context(
            process([sys.executable, __file__, "--serve", str(ceiling_port)], "broadcast ready")
        )
        port, stream_port = free_port(), free_port()
        proc = stack.enter_context(engine(port, tmp, STREAM_CONFIG.format(port=stream_port)))
        rows = run(_both(ceiling_port, ceiling.pid, f"ws://127.0.0.1:{port}", stream_port, proc.pid, seconds))
        assert isinstance(rows, list)
    base, row = rows
    return [base, with_ratio(row, base)]


def main() -> None:
    section_main(
        "stream", __doc__, serve=serve_broadcast, serve_help="run only the bare broadcast server on this port"
    )


if __name__ == "__main__":
    main()
