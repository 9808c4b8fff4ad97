"""What every client command shares: engine options, the connection, exit codes, output.

Client commands talk to a running engine as a worker named ``pyiii-cli``
over the worker WebSocket (``pyiii.sdk``), like any program would. Output
goes to stdout (tables for people, ``--json`` for scripts); messages and
progress go to stderr, so a pipe only ever carries data.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from pyiii import errors
from pyiii.errors import IIIError

DEFAULT_URL = "ws://127.0.0.1:49134"

EXIT_OK = 0
EXIT_FAILED = 1  # the engine answered with an error, or found nothing
EXIT_USAGE = 2  # bad arguments or input (nothing was sent)
EXIT_UNREACHABLE = 3  # no engine at the address, or it refused the connection

# Codes meaning the conversation with the engine broke, not that a call failed.
_LINK_CODES = frozenset({errors.CONNECTION_LOST, errors.SHUTDOWN, errors.AUTH_ERROR})


class CliError(Exception):
    """A failure to report on stderr as one line, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def add_engine_options(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """``--url``, ``--token``, ``--timeout-ms`` (and ``--json``) on a client command."""
    parser.add_argument("--url", default=None, help=f"engine address (default: $III_URL, then {DEFAULT_URL})")
    parser.add_argument(
        "--token",
        default=None,
        help="the engine's auth_token, sent as 'Authorization: Bearer <token>' (default: $III_TOKEN)",
    )
    parser.add_argument("--timeout-ms", type=int, default=30_000, help="per call (default 30000)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


ENV_EPILOG = "environment: III_URL (engine address), III_TOKEN (auth token); the flags win."


def engine_url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("III_URL") or DEFAULT_URL)


def engine_token(args: argparse.Namespace) -> str | None:
    token = args.token if args.token is not None else os.environ.get("III_TOKEN")
    return token or None


class Engine:
    """A connected CLI worker: ``call`` runs a function and maps failures to ``CliError``."""

    def __init__(self, worker: Any, url: str, timeout_ms: int) -> None:
        self.worker = worker
        self.url = url
        self.timeout_ms = timeout_ms

    async def call(self, function_id: str, payload: Any = None, *, hint: str = "") -> Any:
        try:
            return await self.worker.trigger(function_id, payload or {}, timeout_ms=self.timeout_ms)
        except IIIError as exc:
            if exc.code in _LINK_CODES:
                raise CliError(f"lost the engine at {self.url}: {exc.message}", EXIT_UNREACHABLE) from None
            if exc.code == errors.FUNCTION_NOT_FOUND and not hint and function_id.startswith("state::"):
                hint = (
                    "the engine runs no State module, or is not a pyiii engine (`pyiii state` needs "
                    "state::scopes, state::keys and state::import)"
                )
            if exc.code == errors.FUNCTION_NOT_FOUND and hint:
                raise CliError(
                    f"{function_id} is not available on the engine at {self.url}: {hint}"
                ) from None
            raise CliError(f"{function_id} failed: {exc.code}: {exc.message}") from None


async def connect(args: argparse.Namespace) -> Engine:
    from pyiii.sdk import connect as sdk_connect

    url = engine_url(args)
    try:
        worker = await sdk_connect(
            url, reconnect=False, name="pyiii-cli", token=engine_token(args), connect_timeout=10
        )
    except IIIError as exc:
        hint = ""
        if exc.code == errors.AUTH_ERROR:
            hint = " (pass the engine's auth_token with --token or $III_TOKEN)"
        else:
            hint = " (is it running? start one with `pyiii serve`, or point --url / $III_URL at it)"
        raise CliError(f"cannot reach the engine at {url}: {exc.message}{hint}", EXIT_UNREACHABLE) from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot reach the engine at {url}: {exc}", EXIT_UNREACHABLE) from None
    return Engine(worker, url, args.timeout_ms)


def client_command(
    name: str,
    body: Callable[[Engine, argparse.Namespace], Awaitable[int]],
    *,
    check: Callable[[argparse.Namespace], None] | None = None,
) -> Callable[[argparse.Namespace], int]:
    """A command's entry: connect, run ``body``, print a ``CliError`` as one line, close.

    ``check`` runs first, before connecting (a typo needs no engine): a
    ``CliError`` it raises is printed and nothing is sent.
    """

    def run(args: argparse.Namespace) -> int:
        if check is not None:
            try:
                check(args)
            except CliError as exc:
                return fail(name, exc)

        async def main() -> int:
            try:
                engine = await connect(args)
            except CliError as exc:
                return fail(name, exc)
            try:
                return await body(engine, args)
            except CliError as exc:
                return fail(name, exc)
            finally:
                await engine.worker.shutdown()

        try:
            return run_loop(main())
        except KeyboardInterrupt:
            print(f"pyiii {name}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `pyiii ... | head`: the reader left, that is fine
            sys.stderr.close()
            return EXIT_OK

    return run


def fail(name: str, exc: CliError) -> int:
    print(f"pyiii {name}: {exc.message}", file=sys.stderr)
    return exc.exit_code


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON, or a usage error saying what was wrong and where."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); quote strings"
            " as JSON, e.g. '\"text\"', and objects as '{\"a\": 1}'",
            EXIT_USAGE,
        ) from None


# --- output ---------------------------------------------------------------------------


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "", widths: list[int] | None = None
) -> list[int]:
    """A plain aligned table on stdout (the last column is not padded); its column widths.

    Pass the widths of an earlier call (and no headers) to continue a table page by page.
    """
    if not rows and not widths:
        if empty:
            print(empty, file=sys.stderr)
        return []
    cells = ([[str(h) for h in headers]] if headers else []) + [
        ["" if c is None else str(c) for c in row] for row in rows
    ]
    if widths is None:
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        print("  ".join([*padded, row[-1]]))
    return widths


def name_cell(name: str) -> str:
    """A scope or key for a table: as is, or as a JSON string when it is empty or has
    spaces or control characters (so every row stays one line and can be copied back)."""
    if name and name.isprintable() and not any(c.isspace() for c in name) and not name.startswith('"'):
        return name
    return json.dumps(name, ensure_ascii=False)


def short(value: Any, width: int = 60) -> str:
    """A value as compact JSON, cut to ``width`` characters."""
    return cut(json.dumps(value, ensure_ascii=False, separators=(",", ":")), width)


def cut(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def when(ms: int | None, *, now_ms: int | None = None) -> str:
    """A wall-clock time in ms as UTC, with how far from now."""
    if ms is None:
        return "never"
    stamp = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = (ms - (now_ms if now_ms is not None else int(time.time() * 1000))) / 1000
    return f"{stamp}Z ({'in ' if delta > 0 else ''}{_span(abs(delta))}{'' if delta > 0 else ' ago'})"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(
        self, what: str, total: int | None, *, unit: str = "values", enabled: bool | None = None
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self._fraction: float | None = None

    def advance(self, n: int, *, fraction: float | None = None) -> None:
        self.done += n
        if fraction is not None:
            self._fraction = fraction
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw(fraction)

    def _draw(self, fraction: float | None) -> None:
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        if fraction is None and self.total:
            fraction = min(self.done / self.total, 1.0)
        if fraction is not None:
            filled = int(fraction * 30)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:5.1f}% "
        else:
            bar = ""
        of = f"/{self.total}" if self.total else ""
        sys.stderr.write(f"\r{self.what} {bar}{self.done}{of} {self.unit} ({rate:,.0f}/s)\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(1.0 if self.total is not None or self._fraction is not None else None)
            sys.stderr.write("\n")
            sys.stderr.flush()
