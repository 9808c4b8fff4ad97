"""The ``pyiii`` command: run an engine, or call a function from a shell."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import json
import logging
import os
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from pyiii import __version__, errors
from pyiii.errors import ConfigError, IIIError

if TYPE_CHECKING:
    from pyiii.engine.server import Server

EXIT_CONFIG = 2  # the engine cannot start as configured: a config error, a port in use, ...


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def listen_failure(exc: OSError, host: str, port: int) -> str:
    """Why the engine cannot listen, and what to change (one line, no errno soup)."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where} is already in use (another pyiii or iii engine?): stop it, or choose another "
            "port with --port N (or iii-worker-manager.config.port)"
        )
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where} (ports below 1024 need privileges): use --port N"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"{host!r} is not an address of this machine: fix --host (or iii-worker-manager.config.host)"
    if exc.errno is None:  # the event loop tried every address of the host and says only that
        return (
            f"nothing could be bound at {where}: is {host!r} an address of this machine, and the port "
            "free? Fix --host, or choose another port with --port N"
        )
    return f"cannot listen on {where}: {exc.strerror or exc}"


def startup_summary(server: Server) -> list[str]:
    """What a started engine runs: config, modules, built-ins, where it listens."""
    config = server.config
    defaults = "no config file (defaults: in-memory state, pub/sub, cron)"
    source = os.path.abspath(config.source) if config.source else defaults
    lines = [f"pyiii {__version__}: config {source}"]
    lines += [f"module {module.name}: {module.describe()}" for module in server.modules]
    engine = server.engine
    builtin = sorted(fn.id for fn in engine.functions.values() if fn.handler is not None)
    prefixes = sorted({fid.split("::", 1)[0] + "::*" for fid in builtin})
    types = ", ".join(sorted(engine.trigger_types)) or "none"
    lines.append(f"{len(builtin)} built-in functions ({', '.join(prefixes)}); trigger types: {types}")
    auth = "workers must send the auth token" if config.auth_token else "no auth token"
    lines.append(f"listening on ws://{config.host}:{server.port} (workers on /, telemetry on /otel; {auth})")
    for listener, port in zip(config.extra_listeners, server.ports[1:], strict=False):
        parts = []
        if listener.rbac is not None:
            parts.append(
                f"rbac, auth {listener.rbac.auth_function_id or 'none'}, "
                f"{len(listener.rbac.expose_functions)} expose filter(s)"
            )
        if listener.middleware_function_id:
            parts.append(f"middleware {listener.middleware_function_id}")
        if listener.auth_token:
            parts.append("auth token")
        lines.append(
            f"also listening on ws://{listener.host}:{port} ({'; '.join(parts) or 'no access control'})"
        )
    return lines


def _serve(args: argparse.Namespace) -> int:
    from pyiii.config import load_config
    from pyiii.engine.server import Server

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # picows logs every accepted socket at INFO; that is noise on a busy engine.
    logging.getLogger("picows").setLevel(max(logging.WARNING, logging.getLogger().level))
    log = logging.getLogger("pyiii.engine")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pyiii: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.host:
        config = dataclasses.replace(config, host=args.host)
    if args.port is not None:
        config = dataclasses.replace(config, port=args.port)

    async def main() -> int:
        server = Server(config)
        stop = server.catch_signals()
        try:
            await server.start()
        except ConfigError as exc:
            print(f"pyiii: cannot start: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except OSError as exc:
            host, port = getattr(exc, "listen_address", (config.host, config.port))
            print(f"pyiii: cannot start: {listen_failure(exc, host, port)}", file=sys.stderr)
            return EXIT_CONFIG
        for warning in config.warnings:
            log.warning("%s", warning)
        for line in startup_summary(server):
            log.info("%s", line)
        # Tests and scripts wait for this exact line on stdout.
        print(f"pyiii engine ready on ws://{config.host}:{server.port}", flush=True)
        await server.run_forever(stop)
        return 0

    return _run_loop(main())


def _trigger(args: argparse.Namespace) -> int:
    from pyiii.sdk import connect

    try:
        payload = json.loads(args.payload) if args.payload is not None else {}
    except json.JSONDecodeError as exc:
        print(f"pyiii trigger: the payload is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    url = args.url or os.environ.get("III_URL") or "ws://127.0.0.1:49134"
    token = args.token if args.token is not None else os.environ.get("III_TOKEN")

    async def main() -> int:
        try:
            worker = await connect(url, reconnect=False, name="pyiii-cli", token=token or None)
        except IIIError as exc:
            hint = ""
            if exc.code == errors.AUTH_ERROR:
                hint = " (pass the engine's auth_token with --token or $III_TOKEN)"
            print(f"pyiii trigger: cannot reach the engine at {url}: {exc.message}{hint}", file=sys.stderr)
            return 1
        try:
            result = await worker.trigger(args.function_id, payload, timeout_ms=args.timeout_ms)
        except IIIError as exc:
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}, indent=2))
            return 1
        finally:
            await worker.shutdown()
        print(json.dumps(result, indent=2))
        return 0

    return _run_loop(main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyiii", description="pyiii: an iii engine in Python, and tools to talk to it."
    )
    parser.add_argument("-V", "--version", action="version", version=f"pyiii {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the engine (the default command)")
    for p in (parser, serve):
        p.add_argument(
            "-c",
            "--config",
            default=None,
            help="config file (default: ./iii-config.yaml, then ./config.yaml)",
        )
        p.add_argument("--host", default=None, help="address to listen on (overrides the config)")
        p.add_argument("--port", type=int, default=None, help="port (overrides the config)")
        p.add_argument(
            "--log-level",
            default="info",
            choices=["debug", "info", "warning", "error"],
            help="console log level",
        )

    trig = sub.add_parser(
        "trigger",
        help="call a function and print its result as JSON",
        description="Call a function through a running engine and print its result as JSON.",
        epilog="environment: III_URL (engine address), III_TOKEN (auth token); the flags win.",
    )
    trig.add_argument("function_id", help="e.g. engine::functions::list or state::get")
    trig.add_argument("payload", nargs="?", default=None, help="JSON payload, e.g. '{\"a\": 1}'")
    trig.add_argument(
        "--url", default=None, help="engine address (default: $III_URL, then ws://127.0.0.1:49134)"
    )
    trig.add_argument(
        "--token",
        default=None,
        help="the engine's auth_token, sent as 'Authorization: Bearer <token>' (default: $III_TOKEN)",
    )
    trig.add_argument("--timeout-ms", type=int, default=30_000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "trigger":
        return _trigger(args)
    return _serve(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
