"""The console's JSON API: what the pages call, over the engine's own functions.

Almost everything goes through ``POST /api/call`` (any function, as a
worker would call it: ``state::list``, ``state::set`` with
``expect_version``, ``iii::queue::redrive``...), so the console can do
nothing a worker could not. The rest are reads that combine several calls
(scopes with key counts), the live event stream, the HTTP route tester and
"run now" for cron triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from msgspec import Raw

from pyiii.engine import builtins
from pyiii.errors import IIIError
from pyiii.modules.console import logbook, sampling
from pyiii.modules.console.guard import Refused

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine
    from pyiii.httpserver import Exchange
    from pyiii.modules.console.module import ConsoleModule

MAX_BODY = 16 * 1024 * 1024
KEEPALIVE_S = 15.0
HTTP_TEST_TIMEOUT_S = 30.0
HTTP_TEST_MAX_BODY = 1024 * 1024
# A watched group's first view holds at most this many items (the page says when there are more).
WATCH_ITEMS = 1000
SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
]


class _CallInput(msgspec.Struct):
    function_id: str
    data: Raw = Raw(b"{}")


class _HttpTestInput(msgspec.Struct):
    method: str
    path: str
    body: str = ""
    headers: dict[str, str] = {}


class _CronInput(msgspec.Struct):
    trigger_id: str


def query(ex: Exchange) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(ex.query_string, keep_blank_values=True).items()}


async def body_of(ex: Exchange, kind: type[Any]) -> Any:
    raw = await ex.read_body(MAX_BODY)
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Refused(
            400, "invalid_request", f"the request body is not what {ex.path} takes: {exc}"
        ) from None


def error_body(err: IIIError) -> bytes:
    return msgspec.json.encode({"error": err.to_body()})


class ConsoleApi:
    """Handlers of ``/api/*``; each returns (status, JSON bytes) or streams."""

    def __init__(self, module: ConsoleModule) -> None:
        self.module = module

    @property
    def engine(self) -> Engine:
        assert self.module.engine is not None
        return self.module.engine

    async def call(self, function_id: str, data: Any) -> bytes:
        """``{"result": ...}`` or ``{"error": {code, message, ...}}`` of one call."""
        timeout = self.module.config.invoke_timeout_ms / 1000
        try:
            raw = await self.engine.call_within(timeout, function_id, data)
        except IIIError as err:
            return error_body(err)
        except TimeoutError:
            return error_body(IIIError("timeout", f"{function_id} did not answer within {timeout:g} s"))
        return b'{"result":' + (bytes(raw) if raw is not None else b"null") + b"}"

    # --- reads ------------------------------------------------------------------

    def overview(self) -> bytes:
        engine = self.engine
        has = {
            "state": sampling.has(engine, "state::get"),
            "queue": sampling.has(engine, "engine::queue::list_topics"),
            "stream": sampling.has(engine, "stream::list_all"),
            "cron": "cron" in engine.trigger_types,
            "http": "iii-http" in engine.services,
        }
        return msgspec.json.encode(
            {
                "health": builtins.health(engine),
                "modules": has,
                "auth": engine.auth_token is not None,
                "metrics": engine.metrics is not None,
            }
        )

    async def scopes(self) -> bytes:
        if not sampling.has(self.engine, "state::list_groups"):
            return error_body(IIIError("not_enabled", "the State module is not enabled in this engine"))
        try:
            counts, total = await sampling.scope_counts(self.engine, 2000)
        except IIIError as err:
            return error_body(err)
        return msgspec.json.encode({"scopes": [{"scope": s, "keys": n} for s, n in counts], "total": total})

    def logs(self, params: dict[str, str]) -> bytes:
        book = self.module.logbook
        assert book is not None
        level = logbook.LEVELS.get(params.get("level", "DEBUG").upper(), 0)
        limit = min(int(params.get("limit", "500") or 500), 5000)
        lines = book.recent(level, params.get("worker", ""), limit)
        return msgspec.json.encode({"lines": lines, "workers": book.workers()})

    # --- changes -------------------------------------------------------------------

    async def invoke(self, ex: Exchange) -> bytes:
        inp: _CallInput = await body_of(ex, _CallInput)
        if not inp.function_id:
            raise Refused(400, "invalid_request", "function_id must not be empty")
        return await self.call(inp.function_id, inp.data)

    async def run_cron(self, ex: Exchange) -> bytes:
        inp: _CronInput = await body_of(ex, _CronInput)
        trigger = self.engine.triggers.get(inp.trigger_id)
        if trigger is None or trigger.trigger_type != "cron":
            raise Refused(404, "trigger_not_found", f"no cron trigger with id {inp.trigger_id!r}")
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {
            "trigger": "cron",
            "job_id": trigger.id,
            "scheduled_time": now,
            "actual_time": now,
            "manual": True,  # run from the console, not by the schedule
        }
        timeout = self.module.config.invoke_timeout_ms / 1000
        try:
            raw = await self.engine.call_within(
                timeout, trigger.function_id, event, namespace=trigger.namespace
            )
        except IIIError as err:
            return error_body(err)
        except TimeoutError:
            return error_body(
                IIIError("timeout", f"{trigger.function_id} did not answer within {timeout:g} s")
            )
        return b'{"result":' + (bytes(raw) if raw is not None else b"null") + b"}"

    async def http_test(self, ex: Exchange) -> bytes:
        inp: _HttpTestInput = await body_of(ex, _HttpTestInput)
        http = self.engine.services.get("iii-http")
        if http is None or getattr(http, "server", None) is None:
            return error_body(IIIError("not_enabled", "the HTTP module is not enabled in this engine"))
        if not inp.path.startswith("/"):
            raise Refused(400, "invalid_request", "path must start with '/'")
        host = http.config.host if http.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{http.port}{inp.path}"
        started = time.perf_counter()
        status, headers, body = await asyncio.to_thread(
            _request, inp.method.upper(), url, inp.body.encode(), inp.headers
        )
        return msgspec.json.encode(
            {
                "status": status,
                "headers": headers,
                "body": body.decode(errors="replace"),
                "truncated": len(body) >= HTTP_TEST_MAX_BODY,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )

    # --- live events -------------------------------------------------------------------

    async def events(self, ex: Exchange) -> None:
        """Server-sent events: ``log`` lines (filtered) and ``workers`` / ``functions`` changes."""
        params = query(ex)
        level = logbook.LEVELS.get(params.get("level", "DEBUG").upper(), 0)
        worker = params.get("worker", "")
        book = self.module.logbook
        assert book is not None
        queue = book.subscribe()
        engine = self.engine

        def workers_changed(event: str, worker_id: str) -> None:
            queue.put_nowait({"_event": "workers"})

        def functions_changed() -> None:
            queue.put_nowait({"_event": "functions"})

        engine.on_workers_changed.append(workers_changed)
        engine.on_functions_changed.append(functions_changed)
        send = ex.stream(200, SSE_HEADERS)
        gone = asyncio.ensure_future(ex.disconnected())
        closing = asyncio.ensure_future(self.module.closing.wait())
        try:
            await send(b"event: hello\ndata: {}\n\n")
            while True:
                getter = asyncio.ensure_future(queue.get())
                if not await _wait_or_keepalive(getter, gone, closing, send):
                    return
                item = getter.result()
                kind = item.get("_event")
                if kind is not None:
                    await send(b"event: " + kind.encode() + b"\ndata: {}\n\n")
                elif logbook.matches(item, level, worker):
                    await send(b"event: log\ndata: " + msgspec.json.encode(item) + b"\n\n")
        except Exception:  # the browser went away mid-send
            return
        finally:
            book.unsubscribe(queue)
            with contextlib.suppress(ValueError):
                engine.on_workers_changed.remove(workers_changed)
            with contextlib.suppress(ValueError):
                engine.on_functions_changed.remove(functions_changed)
            gone.cancel()
            closing.cancel()

    async def stream_watch(self, ex: Exchange) -> None:
        """Server-sent events of one stream group: ``stream`` frames (a sync, then each change).

        The frames are those a client of the stream port gets (clients.py),
        relayed from inside the engine, so the page needs no second port,
        origin or credential: the console's own token guards it.
        """
        params = query(ex)
        stream_name, group_id = params.get("stream_name", ""), params.get("group_id", "")
        if not stream_name or not group_id:
            raise Refused(400, "invalid_request", "give ?stream_name=...&group_id=... (both non-empty)")
        streams = self.engine.services.get("iii-stream")
        if streams is None or not hasattr(streams, "watch"):
            raise Refused(404, "not_enabled", "the streams module is not enabled in this engine")
        frames: list[bytes] = []
        wake = asyncio.Event()

        def push(frame: bytes) -> None:
            frames.append(frame)
            wake.set()

        try:
            stop = await streams.watch(stream_name, group_id, push, WATCH_ITEMS)
        except IIIError as err:
            raise Refused(503, err.code, f"cannot watch {stream_name} / {group_id}: {err.message}") from None
        send = ex.stream(200, SSE_HEADERS)
        gone = asyncio.ensure_future(ex.disconnected())
        closing = asyncio.ensure_future(self.module.closing.wait())
        try:
            while True:
                if frames:
                    batch, frames[:] = list(frames), []
                    await send(b"".join(_sse(b"stream", f) for f in batch))
                    continue
                wake.clear()
                if not await _wait_or_keepalive(asyncio.ensure_future(wake.wait()), gone, closing, send):
                    return
        except Exception:  # the browser went away mid-send
            return
        finally:
            stop()
            gone.cancel()
            closing.cancel()


async def _wait_or_keepalive(
    ready: asyncio.Future[Any],
    gone: asyncio.Future[Any],
    closing: asyncio.Future[Any],
    send: Callable[[bytes], Awaitable[None]],
) -> bool:
    """Wait for ``ready``, sending an SSE keep-alive comment every ``KEEPALIVE_S`` meanwhile.

    True once it is done; False (and ``ready`` cancelled) when the browser
    left or the console is closing.
    """
    while True:
        done, _ = await asyncio.wait(
            {ready, gone, closing}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
        )
        if ready in done:
            return True
        if gone in done or closing in done:
            ready.cancel()
            return False
        await send(b": keep-alive\n\n")


def _sse(event: bytes, data: bytes) -> bytes:
    """One server-sent event; a JSON text with line breaks (a worker's own) spans data lines."""
    lines = b"\n".join(b"data: " + line for line in data.split(b"\n"))
    return b"event: " + event + b"\n" + lines + b"\n\n"


def _request(
    method: str, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """One request to the engine's own HTTP module (loopback), from a worker thread."""
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(req, timeout=HTTP_TEST_TIMEOUT_S) as resp:
            return resp.status, dict(resp.headers.items()), resp.read(HTTP_TEST_MAX_BODY)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read(HTTP_TEST_MAX_BODY)
    except OSError as exc:
        return 0, {}, f"request failed: {exc}".encode()
