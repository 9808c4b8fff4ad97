"""``pyiii trigger``: call one function and print its result as JSON."""

from __future__ import annotations

import argparse
import json

from pyiii.cli.common import ENV_EPILOG, Engine, add_engine_options, client_command, parse_json
from pyiii.errors import IIIError


async def _trigger(engine: Engine, args: argparse.Namespace) -> int:
    payload = parse_json(args.payload, "the payload") if args.payload is not None else {}
    try:
        result = await engine.worker.trigger(args.function_id, payload, timeout_ms=args.timeout_ms)
    except IIIError as exc:
        # Scripts read the error from stdout, in the shape the engine sent it.
        print(json.dumps({"error": {"code": exc.code, "message": exc.message}}, indent=2))
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _check_payload(args: argparse.Namespace) -> None:
    if args.payload is not None:
        parse_json(args.payload, "the payload")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trig = sub.add_parser(
        "trigger",
        help="call a function and print its result as JSON",
        description="Call a function through a running engine and print its result as JSON.",
        epilog=ENV_EPILOG,
    )
    trig.add_argument("function_id", help="e.g. engine::functions::list or state::get")
    trig.add_argument("payload", nargs="?", default=None, help="JSON payload, e.g. '{\"a\": 1}'")
    add_engine_options(trig, json_flag=False)
    trig.set_defaults(run=client_command("trigger", _trigger, check=_check_payload))
