"""``pyiii state``: browse and edit State on a running engine.

``scopes`` and ``ls`` page through ``state::scopes`` / ``state::keys``
(constant memory at any size); ``get``/``set``/``delete`` are the ordinary
``state::*`` calls with metadata; ``dump``/``restore`` live in ``dump.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pyiii.cli import dump
from pyiii.cli.common import (
    ENV_EPILOG,
    EXIT_FAILED,
    CliError,
    Engine,
    add_engine_options,
    client_command,
    name_cell,
    parse_json,
    print_json,
    short,
    table,
    when,
)
from pyiii.cli.dump import positive, scopes_of, unknown_scope

PAGE = 1000


async def _scopes(engine: Engine, args: argparse.Namespace) -> int:
    items = [s async for s in scopes_of(engine, args.prefix or "")]
    if args.json:
        print_json(items)
        return 0
    table(("SCOPE", "KEYS"), [(name_cell(s["scope"]), s["keys"]) for s in items], empty="no scopes")
    return 0


async def _ls(engine: Engine, args: argparse.Namespace) -> int:
    cursor = None
    shown = 0
    widths: list[int] = []
    headers = ("KEY", "VERSION", "EXPIRES") + (("VALUE",) if args.values else ())
    while args.limit is None or shown < args.limit:
        limit = PAGE if args.limit is None else min(PAGE, args.limit - shown)
        payload = {"scope": args.scope, "prefix": args.prefix or "", "limit": limit, "cursor": cursor}
        page = await engine.call("state::keys", {**payload, "with_values": args.values})
        items = page["items"]
        if not items and shown == 0:
            # With a prefix the scope may exist all the same: say which it is.
            if args.prefix and (await engine.call("state::count", {"scope": args.scope}))["count"]:
                print(f"no keys of {args.scope!r} start with {args.prefix!r}", file=sys.stderr)
                return 0
            raise await unknown_scope(engine, args.scope)
        if args.json:  # one object per line: streams at any scope size
            for item in items:
                sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
        else:
            rows = []
            for item in items:
                row: tuple[Any, ...] = (
                    name_cell(item["key"]),
                    item["version"],
                    when(item.get("expires_at_ms")),
                )
                rows.append(row + ((short(item["value"]),) if args.values else ()))
            # Widths come from the first page; later pages reuse them (nothing is held back).
            widths = table(headers, rows) if shown == 0 else table((), rows, widths=widths)
        shown += len(items)
        cursor = page["cursor"]
        if cursor is None:
            break
    return 0


async def _get(engine: Engine, args: argparse.Namespace) -> int:
    meta = await engine.call("state::get", {"scope": args.scope, "key": args.key, "with_meta": True})
    if not meta["exists"]:
        if args.json:
            print_json({"scope": args.scope, "key": args.key, "exists": False})
        count = (await engine.call("state::count", {"scope": args.scope}))["count"]
        if not count:
            raise await unknown_scope(engine, args.scope)
        raise CliError(f"scope {args.scope!r} has no key {args.key!r}", EXIT_FAILED)
    out = {
        "scope": args.scope,
        "key": args.key,
        "value": meta["value"],
        "version": meta["version"],
        "expires_at_ms": meta.get("expires_at_ms"),
    }
    if args.json:
        print_json(out)
        return 0
    print(f"{args.scope} / {args.key}  version {meta['version']}  expires {when(out['expires_at_ms'])}")
    print(json.dumps(meta["value"], indent=2, ensure_ascii=False))
    return 0


def _value_arg(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    return parse_json(text, "the value")


async def _set(engine: Engine, args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"scope": args.scope, "key": args.key, "value": args.parsed, "with_meta": True}
    if args.ttl_ms is not None:
        payload["ttl_ms"] = args.ttl_ms
    if args.if_version is not None:
        payload["expect_version"] = args.if_version
    if args.if_absent:
        payload["expect_exists"] = False
    out = await engine.call("state::set", payload)
    if args.json:
        print_json({"scope": args.scope, "key": args.key, **out})
        return 0
    what = "created" if out.get("old_value") is None else "updated"
    expiry = f", expires {when(out['expires_at_ms'])}" if "expires_at_ms" in out else ""
    print(f"{what} {args.scope} / {args.key}: version {out['version']}{expiry}")
    return 0


async def _delete(engine: Engine, args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"scope": args.scope, "key": args.key}
    if args.if_version is not None:
        payload["expect_version"] = args.if_version
    else:
        payload["expect_exists"] = True  # so a missing key is reported, not silently fine
    try:
        old = await engine.call("state::delete", payload)
    except CliError as exc:
        if "VERSION_MISMATCH" in exc.message and "does not exist" in exc.message:
            raise CliError(f"scope {args.scope!r} has no key {args.key!r}: nothing deleted") from None
        raise
    if args.json:
        print_json({"scope": args.scope, "key": args.key, "deleted": True, "old_value": old})
        return 0
    print(f"deleted {args.scope} / {args.key}")
    return 0


def _parse_value(args: argparse.Namespace) -> None:
    args.parsed = _value_arg(args.value)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    state = sub.add_parser(
        "state",
        help="browse, edit, dump and restore State",
        description="Browse, edit, dump and restore the State of a running engine.",
        epilog=ENV_EPILOG,
    )
    cmds = state.add_subparsers(dest="state_command", metavar="COMMAND", required=True)

    p = cmds.add_parser("scopes", help="scopes with their key counts", epilog=ENV_EPILOG)
    p.add_argument("--prefix", default=None, help="only scopes starting with this")
    add_engine_options(p)
    p.set_defaults(run=client_command("state scopes", _scopes))

    p = cmds.add_parser(
        "ls",
        help="keys of a scope with version and expiry",
        description="Keys of a scope in key order, with version and expiry, paged from the engine "
        "(any scope size). --json prints one JSON object per line.",
        epilog=ENV_EPILOG,
    )
    p.add_argument("scope")
    p.add_argument("--prefix", default=None, help="only keys starting with this")
    p.add_argument("--limit", type=positive, default=None, help="at most this many keys (default: all)")
    p.add_argument("--values", action="store_true", help="show values too (cut to 60 characters in a table)")
    add_engine_options(p)
    p.set_defaults(run=client_command("state ls", _ls))

    p = cmds.add_parser("get", help="a value with its version and expiry", epilog=ENV_EPILOG)
    p.add_argument("scope")
    p.add_argument("key")
    add_engine_options(p)
    p.set_defaults(run=client_command("state get", _get))

    p = cmds.add_parser(
        "set",
        help="store a JSON value",
        description="Store a JSON value ('-' reads it from stdin). Strings are JSON too: '\"text\"'.",
        epilog=ENV_EPILOG,
    )
    p.add_argument("scope")
    p.add_argument("key")
    p.add_argument("value", help="JSON, e.g. '{\"a\": 1}', 42, '\"text\"'; - reads stdin")
    p.add_argument("--ttl-ms", type=int, default=None, help="expire the key after this many ms")
    p.add_argument("--if-version", type=int, default=None, help="only if the key has this version")
    p.add_argument("--if-absent", action="store_true", help="only if the key does not exist yet")
    add_engine_options(p)
    p.set_defaults(run=client_command("state set", _set, check=_parse_value))

    p = cmds.add_parser("delete", help="delete a key", epilog=ENV_EPILOG)
    p.add_argument("scope")
    p.add_argument("key")
    p.add_argument("--if-version", type=int, default=None, help="only if the key has this version")
    add_engine_options(p)
    p.set_defaults(run=client_command("state delete", _delete))

    dump.add_parsers(cmds)
