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

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, cpu_seconds, engine, free_port, process, progress, run, with_ratio

CLIENTS = 1000
WINDOW = 4
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


async def _measure(name: str, clients: _Clients, write: Any, seconds: float, pid: int) -> Row:
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    seq = 0
    stop = False

    async def writer() -> None:
        nonlocal seq
        while not stop:
            seq += 1
            n = seq
            sent[n] = time.perf_counter()
            await write(n, sent[n])
            acked[n] = time.perf_counter()

    # warm up, then measure one window
    tasks = [asyncio.create_task(writer()) for _ in range(WINDOW)]
    await asyncio.sleep(0.5)
    clients.count, clients.samples = 0, []
    first = seq + 1
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    clients.counting = True
    await asyncio.sleep(seconds)
    clients.counting = False
    elapsed = time.perf_counter() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed
    delivered = clients.count / elapsed
    stop = True
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.3)
    from_sent = [(at - sent[n]) * 1e6 for n, at in clients.samples if n >= first and n in sent]
    from_ack = [max(0.0, at - acked[n]) * 1e6 for n, at in clients.samples if n >= first and n in acked]
    return Row(
        name=name,
        ops_per_s=delivered,
        p50_us=_percentile(from_ack, 0.5),
        p99_us=_percentile(from_ack, 0.99),
        section="stream",
        server_cpu=cpu,
        note=f"{CLIENTS} clients, {WINDOW} writes in flight",
        extra={
            "writes_per_s": (len([n for n in sent if n >= first]) / elapsed),
            "sent_p50_us": _percentile(from_sent, 0.5),
            "sent_p99_us": _percentile(from_sent, 0.99),
        },
    )


async def _ceiling(port: int, pid: int, seconds: float) -> Row:
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

    try:
        return await _measure("bare picows broadcast (ceiling)", clients, write, seconds, pid)
    finally:
        wt.disconnect()
        clients.close()


async def _engine(url: str, stream_port: int, pid: int, seconds: float) -> Row:
    from pyiii import connect

    clients = _Clients()
    await clients.connect(f"ws://127.0.0.1:{stream_port}/")
    w = await connect(url, name="stream-bench")

    async def write(n: int, t: float) -> None:
        item = {"stream_name": "bench", "group_id": "g", "item_id": f"i{n % 100}"}
        await w.trigger("stream::set", {**item, "data": {"n": n, "t": t, "pad": PAD}})

    try:
        return await _measure("stream::set -> clients (kv in_memory)", clients, write, seconds, pid)
    finally:
        await w.shutdown()
        clients.close()


def stream_rows(seconds: float) -> list[Row]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        progress(f"stream: bare broadcast to {CLIENTS} clients")
        port = free_port()
        proc = stack.enter_context(
            process([sys.executable, __file__, "--serve", str(port)], "broadcast ready")
        )
        ceiling = run(_ceiling(port, proc.pid, seconds))
        assert isinstance(ceiling, Row)
        progress(f"stream: engine, stream::set to {CLIENTS} clients")
        port, stream_port = free_port(), free_port()
        proc = stack.enter_context(engine(port, tmp, STREAM_CONFIG.format(port=stream_port)))
        row = run(_engine(f"ws://127.0.0.1:{port}", stream_port, proc.pid, seconds))
        assert isinstance(row, Row)
    return [ceiling, with_ratio(row, ceiling)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--serve", type=int, help="run only the bare broadcast server on this port")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve_broadcast(args.serve))
        return
    import run as runner

    runner.main(["--only", "stream", "--seconds", str(args.seconds)])


if __name__ == "__main__":
    main()
