"""A running engine: config -> engine + modules + listener, and a clean stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

from pyiii.engine import builtins
from pyiii.engine.engine import SHUTDOWN_CLOSE_CODE, Engine, Limits
from pyiii.engine.transport import TransportOptions, close_all, serve

if TYPE_CHECKING:
    from pyiii.config import EngineConfig, ListenerConfig
    from pyiii.engine.module import Module

log = logging.getLogger("pyiii.engine")

# How long a stop waits for running built-in calls (state writes) to answer.
DRAIN_TIMEOUT_S = 5.0


def build_modules(config: EngineConfig) -> list[Module]:
    """The modules the config asks for, in the file's order (their start order)."""
    return [entry.spec.create(entry.config) for entry in config.modules]


class Server:
    """Owns the engine, its modules and its listener for one process."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        limits = config.limits
        self.engine = Engine(
            Limits(
                max_pending_per_worker=limits.max_pending_per_worker,
                max_nesting_depth=limits.max_nesting_depth,
            ),
            config.channels,
        )
        self.engine.auth_token = config.auth_token
        self.modules = build_modules(config)
        self.listener: asyncio.Server | None = None  # the main listener
        self.listeners: list[asyncio.Server] = []  # every listener, the main one first
        self.sockets: set[Any] = set()  # open WebSocket transports
        self.stopped = asyncio.Event()

    def module(self, name: str) -> Module:
        """A module of this server by canonical name (``iii-http``); KeyError if not loaded."""
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(f"module {name} is not loaded")

    @property
    def port(self) -> int:
        assert self.listener is not None
        port: int = self.listener.sockets[0].getsockname()[1]
        return port

    @property
    def ports(self) -> list[int]:
        """The bound port of every listener, in config order (the main one first)."""
        return [int(server.sockets[0].getsockname()[1]) for server in self.listeners]

    async def start(self) -> None:
        """Bind the port, start the modules, then accept connections.

        Binding comes first so that a port in use (OSError) fails the start
        before any module has opened, or created, its store. Raises
        ConfigError for unusable modules.
        """
        builtins.install(self.engine)
        cfg = self.config
        bound: list[asyncio.Server] = []
        try:
            for listener_cfg in cfg.listeners:
                bound.append(await self._bind(listener_cfg))
        except BaseException:
            for server in bound:
                server.close()
            raise
        started: list[Module] = []
        try:
            for module in self.modules:
                await module.start(self.engine)
                started.append(module)
        except BaseException:
            for server in bound:
                server.close()
            for module in reversed(started):
                await module.stop()
            raise
        self.listeners = bound
        self.listener = bound[0]
        for server in bound:
            await server.start_serving()
        for listener_cfg in cfg.listeners:
            local = listener_cfg.host in ("127.0.0.1", "localhost", "::1")
            if (
                not local
                and listener_cfg.auth_token is None
                and (listener_cfg.rbac is None or listener_cfg.rbac.auth_function_id is None)
            ):
                log.warning(
                    "listening on %s:%d without auth_token or rbac.auth_function_id: any host that can "
                    "reach this port can register and call functions. Set auth_token (or an rbac block) "
                    "on that iii-worker-manager entry.",
                    listener_cfg.host,
                    listener_cfg.port,
                )

    async def _bind(self, listener: ListenerConfig) -> asyncio.Server:
        """Bind one listener (not serving yet); an OSError names its host and port."""
        limits = self.config.limits
        frame = listener.max_frame_bytes or limits.max_frame_bytes
        options = TransportOptions(
            max_frame_bytes=frame,
            max_connections=listener.max_connections or limits.max_connections,
            max_send_buffer_bytes=max(listener.max_send_buffer_bytes or limits.max_send_buffer_bytes, frame),
            auth_token=listener.auth_token,
            handshake_timeout_s=listener.handshake_timeout_ms / 1000,
            name=f"{listener.host}:{listener.port}",
            rbac=listener.rbac,
            middleware_function_id=listener.middleware_function_id,
        )
        try:
            return await serve(
                self.engine, listener.host, listener.port, options, self.sockets, start_serving=False
            )
        except OSError as exc:
            exc.listen_address = (listener.host, listener.port)  # type: ignore[attr-defined]
            raise

    async def stop(self, reason: str = "the engine is shutting down") -> None:
        """Stop accepting, let running built-in calls finish, fail the rest, close, flush.

        Calls waiting on workers fail with SHUTTING_DOWN at once; built-in
        calls already running (a state write waiting for its commit) get up to
        ``DRAIN_TIMEOUT_S`` to answer; then every socket is closed with 1012
        and the modules flush and close their stores.
        """
        if self.stopped.is_set():
            return
        self.stopped.set()
        for server in self.listeners:
            server.close()
        self.engine.begin_shutdown(reason)
        if not await self.engine.drain(DRAIN_TIMEOUT_S):
            log.warning("stopping with built-in calls still running after %gs", DRAIN_TIMEOUT_S)
        self.engine.stop_all(reason)
        # Wait for the peers to answer the close frames (so none of our last
        # frames is lost to a reset), then let the modules go.
        await close_all(self.sockets, SHUTDOWN_CLOSE_CODE, reason)
        for module in reversed(self.modules):
            try:
                await module.stop()
            except Exception:
                log.exception("module %s failed to stop cleanly", module.name)

    def catch_signals(self) -> asyncio.Event:
        """Route SIGINT/SIGTERM to a clean stop. Call before announcing readiness."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return stop

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (by a signal), then stop cleanly."""
        await stop.wait()
        log.info("stopping: finishing in-flight writes and closing connections")
        await self.stop()
        log.info("stopped")
