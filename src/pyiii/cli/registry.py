"""``pyiii functions`` and ``pyiii workers``: what is registered and connected."""

from __future__ import annotations

import argparse
from typing import Any

from pyiii.cli.common import ENV_EPILOG, Engine, add_engine_options, client_command, print_json, table, when


async def _functions(engine: Engine, args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"include_internal": args.all}
    if args.prefix:
        payload["prefix"] = args.prefix
    if args.worker:
        payload["worker"] = args.worker
    functions = (await engine.call("engine::functions::list", payload))["functions"]
    if args.json:
        print_json(functions)
        return 0
    rows = [(f["function_id"], f.get("worker_name") or "", f.get("description") or "") for f in functions]
    table(("FUNCTION", "WORKER", "DESCRIPTION"), rows, empty="no functions match")
    return 0


async def _workers(engine: Engine, args: argparse.Namespace) -> int:
    workers = (await engine.call("engine::workers::list"))["workers"]
    if not args.all:  # this very command is a worker too
        workers = [w for w in workers if w.get("id") != engine.worker.worker_id]
    if args.json:
        print_json(workers)
        return 0
    rows = [
        (
            w["id"],
            w.get("name") or "",
            w.get("runtime") or "",
            w.get("status") or "",
            w.get("active_invocations", 0),
            when(w.get("connected_at_ms")),
            ", ".join(w.get("functions") or []) or "-",
        )
        for w in sorted(workers, key=lambda w: (str(w.get("name")), w["id"]))
    ]
    table(
        ("ID", "NAME", "RUNTIME", "STATUS", "BUSY", "CONNECTED", "FUNCTIONS"),
        rows,
        empty="no workers connected",
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fn = sub.add_parser(
        "functions",
        help="list the functions registered on the engine",
        description="List the functions registered on a running engine.",
        epilog=ENV_EPILOG,
    )
    fn.add_argument("--prefix", default=None, help="only ids starting with this, e.g. state::")
    fn.add_argument("--worker", default=None, help="only functions of the worker with this name")
    fn.add_argument("--all", action="store_true", help="include the engine's own engine::* functions")
    add_engine_options(fn)
    fn.set_defaults(run=client_command("functions", _functions))

    wk = sub.add_parser(
        "workers",
        help="list the workers connected to the engine",
        description="List the workers connected to a running engine: their functions, since when.",
        epilog=ENV_EPILOG,
    )
    wk.add_argument("--all", action="store_true", help="include this command's own connection")
    add_engine_options(wk)
    wk.set_defaults(run=client_command("workers", _workers))
