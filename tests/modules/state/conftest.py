"""Raw-protocol helpers for the State module tests.

``Client`` speaks the worker protocol (docs/protocol.md) over the
``websockets`` library, exactly as a worker would: it reads the unprompted
``workerregistered`` frame, matches ``invocationresult`` frames to calls by
``invocation_id`` (a background reader task resolves futures), answers
``invokefunction`` frames for the functions it registered, and registers
triggers.

``state_engine`` runs an in-process engine (real sockets) once per State
adapter in ``ADAPTERS``; every adapter-agnostic test that uses it runs against
all of them. Adding an adapter is one entry in ``ADAPTERS``.

Nothing here is imported by the test modules (pytest owns ``conftest``);
everything they need is reached through fixtures and ``Client`` attributes
(``Client.MISSING``, ``Client.HandlerError``, ``Client.NO_REPLY``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from pyiii.config import parse_config
from pyiii.engine.server import Server
from pyiii.modules.state.config import StateConfig


def private_redis_url(workdir: Path, request: pytest.FixtureRequest) -> str:
    """Start a redis-server of its own for one engine (stopped when ``request`` ends).

    Each engine gets an empty Redis, so tests that count scopes stay exact.
    """
    from support.redis_server import RedisServer  # tests/support, on sys.path via tests/conftest.py

    server = RedisServer(workdir / "redis").start()
    request.addfinalizer(server.stop)
    return server.url


# adapter name -> StateConfig fields for an engine whose files live in `workdir`
# (`request` is the requesting fixture's, for adapters that need a server).
# Adding an adapter to every adapter-agnostic test is one line here, e.g.
#     "redis": lambda w, r: {"adapter": "redis", "redis_url": private_redis_url(w, r)},
ADAPTERS: dict[str, Callable[[Path, pytest.FixtureRequest], dict[str, Any]]] = {
    "in_memory": lambda workdir, request: {"store_method": "in_memory"},
    "file_based": lambda workdir, request: {
        "store_method": "file_based",
        "file_path": str(workdir / "state"),
    },
    "redis": lambda workdir, request: {"adapter": "redis", "redis_url": private_redis_url(workdir, request)},
}

CALL_TIMEOUT_S = 15.0


class _Missing:
    """The ``result`` field was absent from the ``invocationresult`` frame."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class HandlerError(Exception):
    """Raise from a handler to answer with ``error: {code, message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _NoReply:
    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY = _NoReply()

Handler = Callable[[Any, Any], Any]


class Sink:
    """A function that records every invocation it receives, in arrival order.

    ``events`` holds the ``data`` payloads, ``metadata`` the matching
    ``metadata`` fields (``MISSING`` when absent). The handler answers with
    ``reply`` (default: nothing) after sleeping ``delay`` seconds.
    """

    def __init__(self, function_id: str, *, delay: float = 0.0, reply: Any = MISSING) -> None:
        self.function_id = function_id
        self.delay = delay
        self.reply = reply
        self.error: tuple[str, str] | None = None
        self.events: list[Any] = []
        self.metadata: list[Any] = []
        self._changed = asyncio.Event()

    async def __call__(self, data: Any, metadata: Any) -> Any:
        self.events.append(data)
        self.metadata.append(metadata)
        self._changed.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise HandlerError(*self.error)
        return self.reply

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until at least ``count`` events arrived; return them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.events) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.function_id}: expected {count} events within {timeout}s, "
                    f"got {len(self.events)}: {self.events!r}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.events

    def of_key(self, key: str) -> list[Any]:
        return [e for e in self.events if isinstance(e, dict) and e.get("key") == key]


class Client:
    """One raw-protocol worker connection."""

    MISSING = MISSING
    NO_REPLY = NO_REPLY
    HandlerError = HandlerError

    def __init__(self, ws: Any, worker_id: str) -> None:
        self.ws = ws
        self.worker_id = worker_id
        self.handlers: dict[str, Handler] = {}
        self.trigger_results: list[dict[str, Any]] = []
        self.other_frames: list[dict[str, Any]] = []
        self.handler_failures: list[BaseException] = []
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pongs: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._trigger_result_event = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> Client:
        ws = await websockets.connect(url, max_size=None)
        first = json.loads(await asyncio.wait_for(ws.recv(), CALL_TIMEOUT_S))
        assert first.get("type") == "workerregistered", first
        assert isinstance(first.get("worker_id"), str) and first["worker_id"], first
        return cls(ws, first["worker_id"])

    # -- reading ---------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                frame = json.loads(message)
                kind = frame.get("type")
                if kind == "invocationresult":
                    fut = self._pending.pop(frame.get("invocation_id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                    else:
                        self.other_frames.append(frame)
                elif kind == "invokefunction":
                    task = asyncio.create_task(self._serve(frame))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif kind == "triggerregistrationresult":
                    self.trigger_results.append(frame)
                    self._trigger_result_event.set()
                elif kind == "pong":
                    if self._pongs:
                        pong = self._pongs.pop(0)
                        if not pong.done():
                            pong.set_result(None)
                else:
                    self.other_frames.append(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            err = ConnectionError("connection closed")
            for fut in [*self._pending.values(), *self._pongs]:
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            self._pongs.clear()

    async def _serve(self, frame: dict[str, Any]) -> None:
        function_id = frame.get("function_id")
        inv_id = frame.get("invocation_id")
        handler = self.handlers.get(function_id)  # type: ignore[arg-type]
        reply: dict[str, Any] = {
            "type": "invocationresult",
            "invocation_id": inv_id,
            "function_id": function_id,
        }
        if handler is None:
            reply["error"] = {"code": "function_not_found", "message": f"Function '{function_id}' not found"}
        else:
            try:
                out = handler(frame.get("data"), frame.get("metadata", MISSING))
                if inspect.isawaitable(out):
                    out = await out
            except HandlerError as exc:
                reply["error"] = {"code": exc.code, "message": exc.message}
            except Exception as exc:
                self.handler_failures.append(exc)
                reply["error"] = {"code": "invocation_failed", "message": repr(exc)}
            else:
                if out is NO_REPLY:
                    return
                if out is not MISSING:
                    reply["result"] = out
        if inv_id is None:
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(json.dumps(reply))

    # -- calls -----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The connection is gone (the reader saw it close)."""
        return self._reader.done()

    @property
    def in_flight(self) -> int:
        """Calls sent and not answered yet."""
        return len(self._pending)

    async def in_flight_soon(self, tries: int = 1000) -> int:
        """``in_flight`` once other tasks have had a turn to send.

        Answers to concurrent callers often arrive in one read, so just after
        one of them is answered nothing may be in flight until the others
        send again. Yields until something is, or ``tries`` turns pass."""
        for _ in range(tries):
            if self._pending:
                break
            await asyncio.sleep(0)
        return len(self._pending)

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def call_raw(
        self, function_id: str, data_json: str, timeout: float = CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        """Invoke with ``data_json`` spliced into the frame verbatim; return the reply frame."""
        if self._reader.done():
            raise ConnectionError("connection closed")
        inv_id = str(uuid.uuid4())
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[inv_id] = fut
        text = (
            '{"type":"invokefunction","invocation_id":'
            + json.dumps(inv_id)
            + ',"function_id":'
            + json.dumps(function_id)
            + ',"data":'
            + data_json
            + "}"
        )
        await self.ws.send(text)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(inv_id, None)

    async def call_frame(
        self, function_id: str, data: Any, timeout: float = CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        """Invoke and return the whole ``invocationresult`` frame (decoded)."""
        return await self.call_raw(function_id, json.dumps(data), timeout)

    @staticmethod
    def outcome(frame: dict[str, Any]) -> tuple[str, Any]:
        if "error" in frame:
            return ("error", frame["error"])
        return ("ok", frame.get("result", MISSING))

    async def call(self, function_id: str, data: Any, timeout: float = CALL_TIMEOUT_S) -> tuple[str, Any]:
        """``("ok", result)`` (``MISSING`` when the frame has no result) or ``("error", body)``."""
        return self.outcome(await self.call_frame(function_id, data, timeout))

    async def ok(self, function_id: str, data: Any) -> Any:
        """Call and require success; return the result (or MISSING)."""
        status, body = await self.call(function_id, data)
        assert status == "ok", f"{function_id}({data!r}) failed: {body!r}"
        return body

    async def sync(self, timeout: float = CALL_TIMEOUT_S) -> None:
        """Round-trip a JSON ping: every frame sent before it has been processed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        await self.ws.send('{"type":"ping"}')
        await asyncio.wait_for(fut, timeout)

    # -- registrations ---------------------------------------------------------

    async def register_function(self, function_id: str, handler: Handler) -> None:
        self.handlers[function_id] = handler
        await self.ws.send(json.dumps({"type": "registerfunction", "id": function_id}))
        await self.sync()

    async def sink(self, function_id: str, **kwargs: Any) -> Sink:
        """Register a recording function (see ``Sink``)."""
        sink = Sink(function_id, **kwargs)
        await self.register_function(function_id, sink)
        return sink

    async def register_trigger(
        self,
        trigger_type: str,
        function_id: str,
        config: Any,
        *,
        metadata: Any = MISSING,
        trigger_id: str | None = None,
    ) -> str:
        trigger_id = trigger_id or str(uuid.uuid4())
        frame: dict[str, Any] = {
            "type": "registertrigger",
            "id": trigger_id,
            "trigger_type": trigger_type,
            "function_id": function_id,
            "config": config,
        }
        if metadata is not MISSING:
            frame["metadata"] = metadata
        await self.ws.send(json.dumps(frame))
        await self.sync()
        return trigger_id

    async def unregister_trigger(self, trigger_id: str, trigger_type: str | None = None) -> None:
        frame = {"type": "unregistertrigger", "id": trigger_id}
        if trigger_type is not None:
            frame["trigger_type"] = trigger_type
        await self.ws.send(json.dumps(frame))
        await self.sync()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._reader, 5)
        for task in list(self._tasks):
            task.cancel()


@dataclasses.dataclass
class StateEngine:
    """An in-process engine with the State module, and the clients opened on it."""

    server: Server
    adapter: str
    workdir: Path
    clients: list[Client] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    @property
    def module(self) -> Any:
        return self.server.modules[0]

    async def client(self) -> Client:
        c = await Client.connect(self.url)
        self.clients.append(c)
        return c

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        await self.server.stop()


@contextlib.asynccontextmanager
async def running_state_engine(
    adapter: str, workdir: Path, request: pytest.FixtureRequest, **state: Any
) -> AsyncIterator[StateEngine]:
    """Start an engine on a free port with ``adapter`` and extra StateConfig fields.

    ``request`` is the calling fixture's (or test's); servers an adapter needs
    live as long as it does.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = parse_config("workers: []\n", source="test")
    fields = {**ADAPTERS[adapter](workdir, request), **state}
    config = dataclasses.replace(config, port=0).with_module("iii-state", StateConfig(**fields))
    server = Server(config)
    await server.start()
    handle = StateEngine(server, adapter, workdir)
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture(scope="module", params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    """The State adapter under test (every adapter in ADAPTERS).

    Module-scoped so module-scoped engines can use it too; tests are grouped
    by adapter within each module.
    """
    return str(request.param)


@pytest.fixture
async def make_state_engine(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[StateEngine]]]:
    """Factory: ``await make_state_engine(max_value_bytes=100)`` -> a running StateEngine."""
    stack = contextlib.AsyncExitStack()
    count = 0

    async def make(**state: Any) -> StateEngine:
        nonlocal count
        count += 1
        return await stack.enter_async_context(
            running_state_engine(adapter, tmp_path / f"engine{count}", request, **state)
        )

    async with stack:
        yield make


@pytest.fixture
async def state_engine(make_state_engine: Callable[..., Awaitable[StateEngine]]) -> StateEngine:
    """A running engine with default State settings, for the current adapter."""
    return await make_state_engine()


@pytest.fixture
async def client(state_engine: StateEngine) -> Client:
    """A connected raw-protocol client on ``state_engine``."""
    return await state_engine.client()


@pytest.fixture(scope="session")
def running_state_engine_cm() -> Callable[..., contextlib.AbstractAsyncContextManager[StateEngine]]:
    """``running_state_engine`` for module-scoped fixtures and one-off engines."""
    return running_state_engine


@pytest.fixture(scope="session")
def connect_client() -> Callable[[str], Awaitable[Client]]:
    """``await connect_client(url)`` -> a Client on any engine (the caller closes it)."""
    return Client.connect


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three redis-servers joined into one Redis Cluster, shared by the cluster tests."""
    from support.redis_server import RedisClusterServers  # tests/support, on sys.path via tests/conftest.py

    try:
        cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.stop()
