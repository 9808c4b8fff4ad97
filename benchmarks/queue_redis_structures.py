"""Which Redis structures should back the queue? A measurement of the two candidates.

Runs the core of a job queue (publish -> claim -> ack of one lane, no
handler work) both ways against a private redis-server, from one asyncio
process with redis-py + hiredis, and prints jobs/s and latency:

* ``lists``: a hash of job bodies, a ready list, an in-flight sorted set
  scored by lease deadline; publish, claim and ack are one Lua script each
  (one round trip); consumers are woken by a ``PUBLISH`` on one channel.
* ``streams``: one stream per lane with a consumer group; publish is
  ``XADD``, the consumer blocks in ``XREADGROUP ... BLOCK`` (one connection
  per lane and engine), ack is ``XACK`` + ``XDEL`` in one pipeline.

Neither includes delayed retries, FIFO groups or the dead-letter queue;
those need the same extra sorted sets and lists on both. The numbers decide
only what the hot path costs. Each structure runs in five alternating 1 s
windows per in-flight count; the figures are medians (~25 s in all).
Usage: ``python benchmarks/queue_redis_structures.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds
from support.redis_server import RedisServer

LEASE_MS = 30_000
PUSH = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[4], 'x')
return 1
"""
CLAIM = """
local ids = redis.call('RPOP', KEYS[2], tonumber(ARGV[1]))
if not ids then return {} end
local deadline = tonumber(ARGV[2])
for i, id in ipairs(ids) do redis.call('ZADD', KEYS[3], deadline, id) end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""
ACK = """
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


class Lists:
    def __init__(self, url: str) -> None:
        self.r = aioredis.from_url(url)
        self.sub = aioredis.from_url(url)
        lane = uuid.uuid4().hex[:8]
        self.keys = [f"q:{{{lane}}}:{k}" for k in ("jobs", "ready", "inflight")] + [f"q:notify:{lane}"]
        self.push_s = self.r.register_script(PUSH)
        self.claim_s = self.r.register_script(CLAIM)
        self.ack_s = self.r.register_script(ACK)
        self.wake = asyncio.Event()

    async def start(self) -> None:
        self.ps = self.sub.pubsub()
        await self.ps.subscribe(self.keys[3])
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            m = await self.ps.get_message(timeout=1.0)
            if m is not None and m["type"] == "message":
                self.wake.set()

    async def publish(self, job_id: str, body: bytes) -> None:
        await self.push_s(keys=self.keys, args=[job_id, body])

    async def claim(self, n: int) -> list[bytes]:
        while True:
            self.wake.clear()  # before the claim: a publish after it wakes us
            got = await self.claim_s(keys=self.keys, args=[n, int(time.time() * 1000) + LEASE_MS])
            if got:
                return list(got)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.1)

    async def ack(self, job_id: str) -> None:
        await self.ack_s(keys=self.keys, args=[job_id])

    async def close(self) -> None:
        self.reader.cancel()
        await self.ps.aclose()
        await self.r.aclose()
        await self.sub.aclose()


class Streams:
    def __init__(self, url: str) -> None:
        self.r = aioredis.from_url(url)
        self.block = aioredis.from_url(url)
        self.stream = f"q:{{{uuid.uuid4().hex[:8]}}}:s"
        self.ids: dict[bytes, bytes] = {}

    async def start(self) -> None:
        await self.r.xgroup_create(self.stream, "g", id="$", mkstream=True)

    async def publish(self, job_id: str, body: bytes) -> None:
        await self.r.xadd(self.stream, {"id": job_id, "b": body})

    async def claim(self, n: int) -> list[bytes]:
        while True:
            got = await self.block.xreadgroup("g", "c1", {self.stream: ">"}, count=n, block=100)
            out = []
            for _, entries in got or ():
                for entry_id, fields in entries:
                    self.ids[fields[b"id"]] = entry_id
                    out.append(fields[b"b"])
            if out:
                return out

    async def ack(self, job_id: str) -> None:
        entry = self.ids.pop(job_id.encode())
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, "g", entry)
            pipe.xdel(self.stream, entry)
            await pipe.execute()

    async def close(self) -> None:
        await self.r.aclose()
        await self.block.aclose()


async def run(kind: type[Any], url: str, in_flight: int, seconds: float) -> tuple[float, float, int]:
    q = kind(url)
    await q.start()
    done: dict[str, asyncio.Future[None]] = {}
    latencies: list[float] = []
    stop = False

    slots = asyncio.Semaphore(in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(job_id: str) -> None:
        try:
            await q.ack(job_id)
            fut = done.pop(job_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        finally:
            slots.release()

    async def consumer() -> None:
        # Like the real consumer: claim as many as there are free handler
        # slots, run each handler (here: just the ack) concurrently.
        while not stop:
            await slots.acquire()
            free = 1
            while free < in_flight and not slots.locked():
                await slots.acquire()
                free += 1
            bodies = await q.claim(free)
            for _ in range(free - len(bodies)):
                slots.release()
            for body in bodies:
                task = asyncio.create_task(handle(body.decode()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def producer() -> int:
        n = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            job_id = uuid.uuid4().hex
            fut = loop.create_future()
            done[job_id] = fut
            t = time.perf_counter()
            await q.publish(job_id, job_id.encode())
            await fut
            latencies.append(time.perf_counter() - t)
            n += 1
        return n

    task = asyncio.create_task(consumer())
    start = time.perf_counter()
    counts = await asyncio.gather(*(producer() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    stop = True
    task.cancel()
    await q.close()
    return sum(counts) / elapsed, statistics.median(latencies) * 1000, sum(counts)


ROUNDS = 5
WINDOW_S = 1.0


async def main() -> None:
    # Alternating 1 s windows (lists, streams, lists, ...) and medians over them, so
    # that load from other processes on the machine hits both alike; CPU per job
    # (this process + redis-server) is the figure least moved by that load.
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        assert server.proc is not None
        try:
            head = ("structure", "in flight", "jobs/s", "p50 ms", "cli µs/job", "redis µs/job")
            print("{:10} {:>9} {:>9} {:>8} {:>10} {:>12}".format(*head))
            for in_flight in (1, 64):
                got: dict[str, list[tuple[float, float, float, float]]] = {"lists": [], "streams": []}
                for _ in range(ROUNDS):
                    for kind in (Lists, Streams):
                        cli0, srv0 = time.process_time(), cpu_seconds(server.proc.pid)
                        rate, p50, jobs = await run(kind, server.url, in_flight, WINDOW_S)
                        cli = (time.process_time() - cli0) / jobs * 1e6
                        srv = (cpu_seconds(server.proc.pid) - srv0) / jobs * 1e6
                        got[kind.__name__.lower()].append((rate, p50, cli, srv))
                for name, windows in got.items():
                    rate, p50, cli, srv = (statistics.median(w[i] for w in windows) for i in range(4))
                    print(f"{name:10} {in_flight:9d} {rate:9.0f} {p50:8.3f} {cli:10.0f} {srv:12.0f}")
            print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
