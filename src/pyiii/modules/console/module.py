"""The console module: a web console, ``/metrics`` and ``/health`` on a port of their own.

Routes (everything else is 404):

* ``GET /``, ``GET /static/<file>``: the pages (plain HTML/JS/CSS shipped in
  the package, no build step);
* ``GET /health``: liveness (``engine::health::check``), no token needed;
* ``GET /metrics``: the Prometheus text format;
* ``GET /api/overview|scopes|logs|events``: reads (events is a live stream);
* ``POST /api/call|http-test|cron/run``: calls and changes, JSON bodies only.

guard.py says who may do what; api.py has the handlers.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import TYPE_CHECKING

import msgspec

from pyiii.engine import builtins
from pyiii.engine.module import Module
from pyiii.errors import ConfigError
from pyiii.httpserver import BodyTooLarge, Exchange, HttpServer
from pyiii.metrics import Recorder, exposition, registry_for
from pyiii.modules.console import guard, sampling
from pyiii.modules.console.api import ConsoleApi, query
from pyiii.modules.console.logbook import LogBook

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from pyiii.engine.engine import Engine
    from pyiii.modules.console.config import ConsoleConfig

log = logging.getLogger("pyiii.console")

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# Scripts only from our own files: even a value that slipped into the DOM as
# markup could not run code (the pages also render every value as text).
SECURITY_HEADERS = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
]
JSON = [("content-type", "application/json"), *SECURITY_HEADERS]


def _static_files() -> dict[str, bytes]:
    folder = resources.files("pyiii.modules.console") / "static"
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


class ConsoleModule(Module):
    """Serves the console pages, their API, ``/metrics`` and ``/health``."""

    name = "iii-console"

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.engine: Engine | None = None
        self.server: HttpServer | None = None
        self.logbook: LogBook | None = None
        self.recorder = Recorder()
        self.registry: CollectorRegistry | None = None
        self.api = ConsoleApi(self)
        self.closing = asyncio.Event()
        self.static = _static_files()

    @property
    def port(self) -> int:
        if self.server is None:
            raise RuntimeError("iii-console is not started")
        return self.server.port

    def describe(self) -> str:
        port = self.server.port if self.server is not None else self.config.port
        metrics = "metrics on" if self.config.metrics else "metrics off"
        return f"http://{self.config.host}:{port}/ (console, /metrics, /health; {metrics})"

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        if self.config.metrics and engine.metrics is None:
            engine.metrics = self.recorder
        self.registry = registry_for(self.recorder, lambda: self._live(engine))
        self.logbook = LogBook(self.config.log_buffer, asyncio.get_running_loop())
        logging.getLogger("pyiii").addHandler(self.logbook)
        server = HttpServer(self._serve, self.config.host, self.config.port, name="iii-console")
        try:
            await server.start()
        except OSError as exc:
            self._detach()
            raise ConfigError(
                f"iii-console: {exc}; choose another port in the iii-console config (port: ...)"
            ) from None
        self.server = server
        log.info("console on http://%s:%d/", self.config.host, server.port)

    async def stop(self) -> None:
        self.closing.set()  # live streams end, so the server's stop does not wait for them
        if self.server is not None:
            await self.server.stop()
            self.server = None
        self._detach()

    def _detach(self) -> None:
        if self.logbook is not None:
            logging.getLogger("pyiii").removeHandler(self.logbook)
        if self.engine is not None and self.engine.metrics is self.recorder:
            self.engine.metrics = None

    @staticmethod
    def _live(engine: Engine) -> dict[str, int]:
        stats = engine.stats()
        return {
            "workers": stats["connections"],
            "functions": stats["functions"] + stats["builtin_functions"],
            "pending_invocations": stats["pending"],
            "triggers": stats["triggers"],
        }

    # --- requests ---------------------------------------------------------------------

    async def _serve(self, ex: Exchange) -> None:
        try:
            await self._route(ex)
        except guard.Refused as refused:
            body = {"error": {"code": refused.code, "message": refused.message}}
            ex.respond(refused.status, JSON, msgspec.json.encode(body))
        except BodyTooLarge as exc:
            body = {"error": {"code": "payload_too_large", "message": str(exc)}}
            ex.respond(413, JSON, msgspec.json.encode(body))

    async def _route(self, ex: Exchange) -> None:
        assert self.engine is not None
        engine, path = self.engine, ex.path
        token = engine.auth_token
        guard.check_host(ex, self.config.host, token)
        if path == "/health":
            self._only_get(ex)
            report = builtins.health(engine)
            if token is not None and not self._authorized(ex, token):
                report = {"status": report["status"]}  # the counts are for people with the token
            ex.respond(200 if report["status"] == "ok" else 503, JSON, msgspec.json.encode(report))
            return
        if path == "/" or path.startswith("/static/"):
            self._only_get(ex)
            self._static(ex, "index.html" if path == "/" else path[len("/static/") :])
            return
        if path == "/metrics":
            self._only_get(ex)
            guard.check_token(ex, token)
            await sampling.refresh(engine, self.recorder, self.config.sample_interval_ms / 1000)
            assert self.registry is not None
            body, content_type = exposition(self.registry)
            ex.respond(200, [("content-type", content_type), ("cache-control", "no-store")], body)
            return
        if not path.startswith("/api/"):
            raise guard.Refused(404, "not_found", f"no page {path}; the console is at /")
        guard.check_token(ex, token)
        reads = {"/api/overview", "/api/scopes", "/api/logs", "/api/events"}
        if path in reads:
            self._only_get(ex)
            if path == "/api/events":
                await self.api.events(ex)
                return
            if path == "/api/overview":
                body = self.api.overview()
            elif path == "/api/scopes":
                body = await self.api.scopes()
            else:
                body = self.api.logs(query(ex))
            ex.respond(200, JSON, body)
            return
        changes = {
            "/api/call": self.api.invoke,
            "/api/http-test": self.api.http_test,
            "/api/cron/run": self.api.run_cron,
        }
        handler = changes.get(path)
        if handler is None:
            raise guard.Refused(404, "not_found", f"no API {path}")
        guard.check_change(ex, {f"http://{ex.header('host') or ''}"})
        ex.respond(200, JSON, await handler(ex))

    @staticmethod
    def _only_get(ex: Exchange) -> None:
        if ex.method not in ("GET", "HEAD"):
            raise guard.Refused(405, "method_not_allowed", f"{ex.path} takes GET only")

    @staticmethod
    def _authorized(ex: Exchange, token: str) -> bool:
        try:
            guard.check_token(ex, token)
        except guard.Refused:
            return False
        return True

    def _static(self, ex: Exchange, name: str) -> None:
        content = self.static.get(name)
        suffix = name[name.rfind(".") :] if "." in name else ""
        if content is None or suffix not in STATIC_TYPES:
            raise guard.Refused(404, "not_found", f"no file {name}")
        ex.respond(200, [("content-type", STATIC_TYPES[suffix]), *SECURITY_HEADERS], content)
