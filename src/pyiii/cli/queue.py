"""``pyiii queue``: depth, consumers and dead letters of the engine's queues."""

from __future__ import annotations

import argparse
from typing import Any

from pyiii.cli.common import (
    ENV_EPILOG,
    Engine,
    add_engine_options,
    client_command,
    cut,
    print_json,
    short,
    table,
    when,
)
from pyiii.cli.dump import positive

NO_QUEUES = "the engine runs no queue module (add `- name: iii-queue` to the workers of its config)"


async def _stats(engine: Engine, args: argparse.Namespace) -> int:
    if args.topic:
        topics = [{"name": args.topic, "broker_type": ""}]
    else:
        topics = await engine.call("engine::queue::list_topics", hint=NO_QUEUES)
    rows: list[dict[str, Any]] = []
    for topic in topics:
        stats = await engine.call("engine::queue::topic_stats", {"topic": topic["name"]}, hint=NO_QUEUES)
        rows.append({"name": topic["name"], "broker_type": topic.get("broker_type"), **stats})
    if args.json:
        print_json(rows if not args.topic else rows[0])
        return 0
    table(
        ("NAME", "TYPE", "DEPTH", "CONSUMERS", "DEAD LETTERS"),
        [(r["name"], r["broker_type"] or "", r["depth"], r["consumer_count"], r["dlq_depth"]) for r in rows],
        empty="no topics or queues yet",
    )
    return 0


async def _dlq(engine: Engine, args: argparse.Namespace) -> int:
    if not args.topic:
        counts = await engine.call("engine::queue::dlq_topics", hint=NO_QUEUES)
        if args.json:
            print_json(counts)
            return 0
        table(
            ("TOPIC", "TYPE", "DEAD LETTERS"),
            [(c["topic"], c["broker_type"], c["message_count"]) for c in counts],
            empty="no topics or queues yet",
        )
        return 0
    payload = {"topic": args.topic, "offset": args.offset, "limit": args.limit}
    letters = await engine.call("engine::queue::dlq_messages", payload, hint=NO_QUEUES)
    if args.json:
        print_json(letters)
        return 0
    table(
        ("ID", "FAILED", "RETRIES", "FUNCTION", "ERROR", "PAYLOAD"),
        [
            (
                m["id"],
                when(m.get("failed_at_ms")),
                m.get("retries"),
                m.get("function_id") or "",
                cut(m.get("error") or "", 60),
                short(m.get("payload"), 40),
            )
            for m in letters
        ],
        empty=f"no dead letters in {args.topic!r}",
    )
    return 0


async def _redrive(engine: Engine, args: argparse.Namespace) -> int:
    if args.message:
        payload = {"queue": args.queue, "message_id": args.message}
        out = await engine.call("iii::queue::redrive_message", payload, hint=NO_QUEUES)
    else:
        out = await engine.call("iii::queue::redrive", {"queue": args.queue}, hint=NO_QUEUES)
    if args.json:
        print_json(out)
        return 0
    n = out.get("redriven", 0)
    if args.message and not n:
        print(f"no dead letter {args.message!r} in {args.queue!r}: nothing moved")
        return 1
    print(f"moved {n} dead letter{'' if n == 1 else 's'} of {args.queue!r} back into it")
    return 0


async def _discard(engine: Engine, args: argparse.Namespace) -> int:
    payload = {"queue": args.queue, "message_id": args.message}
    out = await engine.call("iii::queue::discard_message", payload, hint=NO_QUEUES)
    if args.json:
        print_json(out)
        return 0
    if not out.get("discarded"):
        print(f"no dead letter {args.message!r} in {args.queue!r}: nothing discarded")
        return 1
    print(f"discarded dead letter {args.message!r} of {args.queue!r}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = sub.add_parser(
        "queue",
        help="queue depth, consumers and dead letters",
        description="Look into the engine's topics and named queues, and handle their dead letters.",
        epilog=ENV_EPILOG,
    )
    cmds = queue.add_subparsers(dest="queue_command", metavar="COMMAND", required=True)

    p = cmds.add_parser(
        "stats", help="depth, consumers and dead letters per topic or queue", epilog=ENV_EPILOG
    )
    p.add_argument("topic", nargs="?", default=None, help="only this topic or queue")
    add_engine_options(p)
    p.set_defaults(run=client_command("queue stats", _stats))

    p = cmds.add_parser(
        "dlq", help="dead-letter counts, or the dead letters of one topic or queue", epilog=ENV_EPILOG
    )
    p.add_argument("topic", nargs="?", default=None, help="list the dead letters of this topic or queue")
    p.add_argument("--limit", type=positive, default=50, help="at most this many (default 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many, newest first")
    add_engine_options(p)
    p.set_defaults(run=client_command("queue dlq", _dlq))

    p = cmds.add_parser("redrive", help="move dead letters back into their queue", epilog=ENV_EPILOG)
    p.add_argument("queue", help="topic or queue name")
    p.add_argument("--message", default=None, help="only the dead letter with this id")
    add_engine_options(p)
    p.set_defaults(run=client_command("queue redrive", _redrive))

    p = cmds.add_parser("discard", help="delete one dead letter", epilog=ENV_EPILOG)
    p.add_argument("queue", help="topic or queue name")
    p.add_argument("message", help="the dead letter's id")
    add_engine_options(p)
    p.set_defaults(run=client_command("queue discard", _discard))
