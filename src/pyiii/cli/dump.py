"""``pyiii state dump`` and ``pyiii state restore``: State as JSON Lines.

One line per key, in scope then key order::

    {"scope":"users","key":"u1","value":{"name":"Ada"},"version":7,"expires_at_ms":null}

``dump`` pages through ``state::scopes`` and ``state::keys`` (the next page
is requested while the current one is written), so its memory does not grow
with the store. It is not a snapshot: a key written while the dump runs may
appear with its old or its new value. A dump to a file is written to
``FILE.partial`` and renamed when complete, so a file under the asked name
is always a whole dump.

``restore`` reads lines in batches and sends each to ``state::import``
(a few batches in flight), which writes only keys that are absent and keeps
versions and expiries. What it skips is reported with the line and the
reason: ``exists`` (the key is there; never overwritten), ``expired``
(its expiry has passed), ``invalid`` (the engine refused the value, e.g.
over ``max_value_bytes``) and ``bad line`` (not a dump line).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any

import msgspec

from pyiii.cli.common import (
    ENV_EPILOG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Engine,
    Progress,
    add_engine_options,
    client_command,
    print_json,
)

PAGE = 1000
MAX_PAGE = 10_000
BATCH = 1000
BATCH_BYTES = 8 << 20  # well under the 64 MiB frame limit, whatever the values
IN_FLIGHT = 4
EXAMPLES = 20  # skipped lines reported one by one; the rest are counted


class DumpLine(msgspec.Struct):
    """A line as written: field order is the file format."""

    scope: str
    key: str
    value: Any
    version: int
    expires_at_ms: int | None


class RestoreLine(msgspec.Struct, forbid_unknown_fields=False):
    """A line as read: the value stays JSON text all the way to the engine."""

    scope: str
    key: str
    value: msgspec.Raw
    # The engine's own bounds, checked per line so one bad line does not fail its batch.
    version: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    expires_at_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


async def unknown_scope(engine: Engine, scope: str) -> CliError:
    """The error for a scope that holds no keys, with the closest name and some known ones."""
    names = [s["scope"] async for s in scopes_of(engine)]
    near = difflib.get_close_matches(scope, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    known = f" (scopes: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''})" if names else ""
    return CliError(f"no scope {scope!r} on the engine at {engine.url}: it holds no keys{hint}{known}")


async def scopes_of(engine: Engine, prefix: str = "") -> AsyncIterator[dict[str, Any]]:
    """Every scope (name order) with its key count, page by page."""
    cursor = None
    while True:
        page = await engine.call("state::scopes", {"prefix": prefix, "limit": PAGE, "cursor": cursor})
        for item in page["scopes"]:
            yield item
        cursor = page["cursor"]
        if cursor is None:
            return


# --- dump -----------------------------------------------------------------------------


async def _dump(engine: Engine, args: argparse.Namespace) -> int:
    if args.scope:
        counts = {}
        for scope in args.scope:
            counts[scope] = (await engine.call("state::count", {"scope": scope}))["count"]
            if not counts[scope]:  # a typo must not make an empty "backup"
                raise await unknown_scope(engine, scope)
    else:
        counts = {s["scope"]: s["keys"] async for s in scopes_of(engine, args.prefix or "")}
    to_file = args.file != "-"
    partial = f"{args.file}.partial"
    out: IO[bytes] = open(partial, "wb") if to_file else sys.stdout.buffer  # noqa: SIM115
    progress = Progress("dump", sum(counts.values()), enabled=None if not args.quiet else False)
    started = time.monotonic()
    try:
        written = await _write_dump(engine, counts, out, progress, args.page_size)
    except BaseException:
        if to_file:
            out.close()
            os.unlink(partial)
        raise
    progress.close()
    if to_file:
        out.flush()
        os.fsync(out.fileno())
        out.close()
        os.replace(partial, args.file)
    else:
        out.flush()
    seconds = time.monotonic() - started
    summary = {"values": written, "scopes": len(counts), "seconds": round(seconds, 3), "file": args.file}
    if args.json:
        # stdout may be the dump itself: the summary then goes to stderr.
        print(msgspec.json.encode(summary).decode(), file=sys.stderr if not to_file else sys.stdout)
    elif not args.quiet:
        where = args.file if to_file else "stdout"
        rate = written / seconds if seconds > 0 else 0.0
        print(
            f"dumped {written} values of {len(counts)} scopes to {where} in {seconds:.1f}s ({rate:,.0f}/s)",
            file=sys.stderr,
        )
    return EXIT_OK


async def _write_dump(
    engine: Engine, counts: dict[str, int], out: IO[bytes], progress: Progress, page_size: int
) -> int:
    encoder = msgspec.json.Encoder()
    written = 0

    def fetch(scope: str, cursor: str | None) -> asyncio.Task[Any]:
        payload = {"scope": scope, "limit": page_size, "cursor": cursor, "with_values": True}
        return asyncio.ensure_future(engine.call("state::keys", payload))

    for scope in counts:
        pending = fetch(scope, None)
        while True:
            page = await pending
            cursor = page["cursor"]
            if cursor is not None:
                pending = fetch(scope, cursor)  # in flight while this page is written
            buf = bytearray()
            for item in page["items"]:
                line = DumpLine(scope, item["key"], item["value"], item["version"], item.get("expires_at_ms"))
                encoder.encode_into(line, buf, len(buf))
                buf += b"\n"
            out.write(buf)
            written += len(page["items"])
            progress.advance(len(page["items"]))
            if cursor is None:
                break
    return written


# --- restore --------------------------------------------------------------------------


class _Restore:
    """Batches in flight and what came back, in memory that does not grow with the file."""

    def __init__(self, engine: Engine, in_flight: int) -> None:
        self.engine = engine
        self.slots = asyncio.Semaphore(in_flight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.imported = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self.error: CliError | None = None

    def skip(self, line: int, reason: str, **details: Any) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append({"line": line, "reason": reason, **details})

    async def submit(self, items: list[RestoreLine], lines: list[int]) -> None:
        await self.slots.acquire()
        if self.error is not None:
            self.slots.release()
            raise self.error
        task = asyncio.ensure_future(self._send(items, lines))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, items: list[RestoreLine], lines: list[int]) -> None:
        try:
            out = await self.engine.call("state::import", {"items": items})
        except CliError as exc:
            self.error = self.error or exc
            return
        finally:
            self.slots.release()
        self.imported += out["imported"]
        for s in out["skipped"]:
            details = {k: v for k, v in s.items() if k not in ("index", "reason")}
            self.skip(lines[s["index"]], s["reason"], **details)

    async def finish(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks)
        if self.error is not None:
            raise self.error


async def _restore(engine: Engine, args: argparse.Namespace) -> int:
    if args.file == "-":
        src: IO[bytes] = sys.stdin.buffer
        size = None
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror}", EXIT_USAGE) from None
        size = os.fstat(src.fileno()).st_size
    decoder = msgspec.json.Decoder(RestoreLine)
    run = _Restore(engine, args.in_flight)
    progress = Progress("restore", None, enabled=None if not args.quiet else False)
    started = time.monotonic()
    batch: list[RestoreLine] = []
    lines: list[int] = []
    batch_bytes = read = 0
    try:
        for number, line in enumerate(src, 1):
            read += len(line)
            if not line.strip():
                continue
            try:
                item = decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                run.skip(number, "bad line", message=str(exc))
                continue
            batch.append(item)
            lines.append(number)
            batch_bytes += len(line)
            if len(batch) >= args.batch or batch_bytes >= BATCH_BYTES:
                await run.submit(batch, lines)
                progress.advance(len(batch), fraction=read / size if size else None)
                batch, lines, batch_bytes = [], [], 0
        if batch:
            await run.submit(batch, lines)
            progress.advance(len(batch))
        await run.finish()
    except CliError as exc:
        raise CliError(
            f"{exc.message}; {run.imported} values were restored before that (run the restore again to"
            " go on: keys already there are skipped)",
            exc.exit_code,
        ) from None
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    progress.close()
    seconds = time.monotonic() - started
    skipped = sum(run.reasons.values())
    if args.json:
        print_json(
            {
                "imported": run.imported,
                "skipped": dict(run.reasons),
                "examples": run.examples,
                "seconds": round(seconds, 3),
            }
        )
    else:
        rate = run.imported / seconds if seconds > 0 else 0.0
        reasons = ", ".join(f"{n} {reason}" for reason, n in run.reasons.most_common())
        print(
            f"restored {run.imported} values in {seconds:.1f}s ({rate:,.0f}/s); "
            f"skipped {skipped}{': ' + reasons if reasons else ''}",
            file=sys.stderr,
        )
        for ex in run.examples:
            print(f"  line {ex['line']}: {_describe(ex)}", file=sys.stderr)
        if skipped > len(run.examples):
            print(
                f"  ... and {skipped - len(run.examples)} more (--json lists the first {EXAMPLES})",
                file=sys.stderr,
            )
    # Expired entries are an expected loss; any other skip needs a look.
    return EXIT_FAILED if skipped - run.reasons["expired"] else EXIT_OK


def _describe(ex: dict[str, Any]) -> str:
    where = f"{ex['scope']} / {ex['key']}: " if "scope" in ex else ""
    reason = ex["reason"]
    if reason == "exists":
        return f"{where}exists already (version {ex.get('current_version')}), left as it is"
    if reason == "expired":
        return f"{where}its expiry has passed, not restored"
    if reason == "invalid":
        return f"{where}refused: {ex.get('code')}: {ex.get('message')}"
    return f"not a dump line: {ex.get('message')}"


def _bounded(most: int) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not 1 <= n <= most:
            raise argparse.ArgumentTypeError(f"{n} is out of range: 1 to {most}")
        return n

    return parse


positive = _bounded(2**63 - 1)


def add_parsers(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser(
        "dump",
        help="write every key as JSON Lines (scope, key, value, version, expires_at_ms)",
        description="Write State as JSON Lines, one key per line in scope and key order, streaming "
        "(constant memory at any size), with a progress bar when stderr is a terminal.",
        epilog=ENV_EPILOG,
    )
    p.add_argument("file", nargs="?", default="-", help="output file (default: - for stdout)")
    p.add_argument("--scope", action="append", default=None, help="only this scope (repeatable)")
    p.add_argument("--prefix", default=None, help="only scopes starting with this")
    p.add_argument(
        "--page-size",
        type=_bounded(MAX_PAGE),
        default=PAGE,
        metavar="N",
        help=f"keys per request (default {PAGE}, at most {MAX_PAGE})",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    add_engine_options(p)
    p.set_defaults(run=client_command("state dump", _dump))

    p = cmds.add_parser(
        "restore",
        help="write a dump back into absent keys, keeping versions and expiries",
        description="Read a dump (JSON Lines) in batches and write each key that is absent on the engine, "
        "with its version and expiry. Present keys are never overwritten: skipped keys are reported "
        "with the line and the reason. Exit code 1 when anything but an expired key was skipped.",
        epilog=ENV_EPILOG,
    )
    p.add_argument("file", help="the dump (- for stdin)")
    p.add_argument(
        "--batch", type=_bounded(MAX_PAGE), default=BATCH, help=f"lines per request (default {BATCH})"
    )
    p.add_argument(
        "--in-flight", type=_bounded(64), default=IN_FLIGHT, help=f"requests at once (default {IN_FLIGHT})"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_engine_options(p)
    p.set_defaults(run=client_command("state restore", _restore))
