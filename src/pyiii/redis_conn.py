"""One way to reach Redis for every Redis adapter (State, Queue, ...).

``RedisConnection(url, owner=...)`` holds what each adapter would otherwise
set up on its own:

* the command client: a ``BlockingConnectionPool`` (at most
  ``MAX_CONNECTIONS`` sockets, a caller waits for a free one) with short
  socket timeouts, so a call to a Redis whose packets vanish fails in seconds
  instead of hanging; one immediate retry replaces a pooled socket that died
  with a Redis restart;
* Redis Cluster auto-detection: when the server at the URL reports
  ``cluster_enabled:1`` the command client becomes a
  ``redis.asyncio.RedisCluster`` (it finds the other nodes and routes each
  command to its slot's primary), with no retries, because redis-py would
  re-send a ``MULTI``..``EXEC`` on a new socket without the ``WATCH`` the old
  one held;
* ``pipe`` (when asked for with ``pipe=True``): for a plain (non-cluster, TCP) server, one shared pipelined
  connection (``pyiii.redis_pipe``) for the hot paths: one round trip per
  command, concurrent callers pipelined, nothing but plain futures to await;
  None otherwise (TLS, Unix socket, cluster), and the adapter then uses
  ``client`` for everything;
* the subscriber client: its own pool with no socket timeout (a pub/sub
  read blocks by design) and a periodic ``PING`` to notice a dead peer; on a
  cluster it stays on the node of the URL (classic pub/sub reaches every
  node);
* the messages: ``open()`` raises ``ConfigError`` naming the URL (password
  redacted) and the adapter; ``failure(exc)`` turns a client exception into a
  sentence naming the URL, e.g. ``Redis at redis://h:6379 is unreachable
  (Connection refused)``.

Nothing here knows about keys: the adapters own their layouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyiii.errors import ConfigError
from pyiii.redis_pipe import RedisPipe

__all__ = ["FAILURES", "UNREACHABLE", "RedisConnection", "redact"]

OPEN_TIMEOUT_S = 5.0
# A stopped Redis refuses connections at once; these bound the cases where
# packets just vanish, so a call never hangs much longer than this.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 64
SUBSCRIBER_HEALTH_CHECK_S = 10

# The client could not talk to the server at all (vs. the server refused a command).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
# Everything a Redis call may raise; RedisClusterException (no slot owner,
# cross-slot, ...) is not a RedisError.
FAILURES = (RedisError, RedisClusterException, OSError)


def _pipe_for(pool: Any) -> RedisPipe | None:
    """A ``RedisPipe`` to the server of ``pool`` when it is plain TCP, else None."""
    if pool.connection_class is not aioredis.Connection:
        return None  # TLS or a Unix socket: redis-py only
    kw = pool.connection_kwargs
    return RedisPipe(
        kw.get("host", "localhost"),
        int(kw.get("port", 6379)),
        username=kw.get("username"),
        password=kw.get("password"),
        db=int(kw.get("db") or 0),
        timeout=SOCKET_TIMEOUT_S,
        connect_timeout=CONNECT_TIMEOUT_S,
    )


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable redis_url>"


class RedisConnection:
    """The clients one adapter uses to talk to one Redis (or Redis Cluster).

    ``owner`` names the adapter in open errors (``state adapter redis``).
    ``client`` and ``subscriber`` are usable after ``open()``; ``cluster``
    says which kind of server was found.
    """

    def __init__(
        self, url: str, *, owner: str, max_connections: int = MAX_CONNECTIONS, pipe: bool = False
    ) -> None:
        self.url = url
        self._want_pipe = pipe
        self.where = redact(url)
        self.owner = owner
        self.max_connections = max_connections
        self.cluster = False
        self._client: Any = None
        self._subscriber: Any = None
        self.pipe: RedisPipe | None = None

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        """Connect and detect a cluster; ``ConfigError`` if Redis cannot be used."""
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=SOCKET_TIMEOUT_S,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                # One immediate retry replaces a pooled connection that died with
                # a Redis restart; more (redis-py's default backs off for
                # seconds) would only delay the error when Redis is really down.
                retry=Retry(NoBackoff(), 1),
            )
            sub_pool = aioredis.ConnectionPool.from_url(
                self.url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                health_check_interval=SUBSCRIBER_HEALTH_CHECK_S,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"{self.owner}: invalid redis_url {self.where!r}: {exc}") from None
        self._client = aioredis.Redis.from_pool(pool)
        self._subscriber = aioredis.Redis.from_pool(sub_pool)
        self.cluster = False
        try:
            await asyncio.wait_for(self._client.ping(), OPEN_TIMEOUT_S)
            if await asyncio.wait_for(self._is_cluster(), OPEN_TIMEOUT_S):
                await self._client.aclose()
                self.cluster = True
                self._client = aioredis.RedisCluster.from_url(
                    self.url,
                    socket_timeout=SOCKET_TIMEOUT_S,
                    socket_connect_timeout=CONNECT_TIMEOUT_S,
                    retry=Retry(NoBackoff(), 0),
                )
                await asyncio.wait_for(self._client.initialize(), OPEN_TIMEOUT_S)
            elif self._want_pipe:
                self.pipe = _pipe_for(pool)
                if self.pipe is not None:
                    await asyncio.wait_for(self.pipe.open(), OPEN_TIMEOUT_S)
        except (*FAILURES, TimeoutError) as exc:
            await self.close()
            raise self.open_error(exc) from None

    def open_error(self, exc: BaseException) -> ConfigError:
        """The ``ConfigError`` for a Redis that could not be used while opening."""
        if self.cluster and not isinstance(exc, UNREACHABLE):
            return ConfigError(f"{self.owner}: the Redis Cluster at {self.where} is not usable ({exc})")
        return ConfigError(
            f"{self.owner}: cannot reach Redis at {self.where} within {OPEN_TIMEOUT_S:g}s"
            f" ({exc or type(exc).__name__}); start redis-server or fix redis_url"
        )

    async def _is_cluster(self) -> bool:
        try:
            info = await self._client.info("cluster")
        except ResponseError:  # INFO renamed or not allowed: assume a plain server
            return False
        return bool(info.get("cluster_enabled"))

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
            self.pipe = None
        for client in (self._client, self._subscriber):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = self._subscriber = None

    # --- clients --------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> Any:
        """The command client; raises ``RuntimeError`` when not open."""
        if self._client is None:
            raise RuntimeError(f"the Redis connection to {self.where} is not open")
        return self._client

    @property
    def subscriber(self) -> Any:
        """The client for ``SUBSCRIBE``/``PSUBSCRIBE`` (no socket timeout)."""
        if self._subscriber is None:
            raise RuntimeError(f"the Redis connection to {self.where} is not open")
        return self._subscriber

    # --- messages -------------------------------------------------------------

    def failure(self, exc: BaseException) -> str:
        """What went wrong with a call, naming the URL (for the adapter's own error type)."""
        if isinstance(exc, UNREACHABLE):
            return f"Redis at {self.where} is unreachable ({exc or type(exc).__name__})"
        return f"Redis at {self.where} failed: {exc}"
