"""The ``pyiii`` command: run an engine, and look into or drive a running one.

One module per command group: ``serve``, ``trigger``, ``state`` (with
``dump``/``restore`` in ``dump.py``), ``registry`` (``functions``,
``workers``) and ``queue``; ``common`` holds the connection, exit codes and
output helpers they share. Without a command, ``pyiii`` runs ``serve``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pyiii import __version__
from pyiii.cli import queue, registry, state, trigger
from pyiii.cli.serve import add_serve_options, listen_failure, serve, startup_summary

__all__ = ["build_parser", "listen_failure", "main", "startup_summary"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyiii",
        description="pyiii: an iii engine in Python, and tools to talk to a running one.",
        epilog="Client commands reach the engine at --url (default: $III_URL, then ws://127.0.0.1:49134). "
        "Exit codes: 0 done, 1 the engine reported an error or found nothing, 2 bad arguments or "
        "input, 3 engine unreachable.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"pyiii {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve_parser = sub.add_parser("serve", help="run the engine (the default command)")
    for p in (parser, serve_parser):
        add_serve_options(p)
    trigger.add_parser(sub)
    state.add_parser(sub)
    registry.add_parsers(sub)
    queue.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        return serve(args)
    code: int = run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
