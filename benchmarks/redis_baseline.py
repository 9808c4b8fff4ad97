"""The alternative: redis-py (asyncio, hiredis parser) against a local redis-server.

Made to match the pyiii rows: the same value (state.VALUE, JSON-encoded on
every SET and decoded on every GET, as the pyiii SDK does), the same 100
keys, and the same concurrency model: N concurrent loops on one asyncio
(uvloop) loop, each awaiting one command at a time. redis-py does not
multiplex a connection, so its pool opens one connection per loop in flight;
that is how redis-py is used.

The server is tests/support/redis_server.py's private redis-server (loopback,
nothing saved to disk).

    python benchmarks/redis_baseline.py      # = run.py --only redis
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec

from common import ROOT, Call, section_main
from state import KEYS, VALUE

sys.path.insert(0, str(ROOT / "tests"))

from support.redis_server import RedisServer


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


def hiredis_in_use() -> bool:
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE)


async def redis_client(port: int) -> Any:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=port)
    encoded = msgspec.json.encode(VALUE)
    for i in range(KEYS):
        await client.set(f"k{i}", encoded)
    return client


def redis_calls(client: Any) -> dict[str, Call]:
    encode, decode = msgspec.json.encode, msgspec.json.decode

    async def get(n: int) -> object:
        return decode(await client.get(f"k{n % KEYS}"))

    async def set_(n: int) -> object:
        return await client.set(f"k{n % KEYS}", encode(VALUE))

    return {"GET": get, "SET": set_}


def main() -> None:
    section_main("redis", __doc__)


if __name__ == "__main__":
    main()
