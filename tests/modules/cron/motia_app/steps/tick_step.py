"""A Motia cron step: every second, count the run in State (scope motia-cron, key ticks)."""

from typing import Any

from motia import FlowContext, cron
from motia.iii import get_instance

config = {
    "name": "Tick",
    "description": "Counts its runs",
    "triggers": [cron("* * * * * *")],
    "enqueues": [],
}


async def handler(_input: Any, ctx: FlowContext[Any]) -> None:
    # Motia's state helpers are blocking calls; an async handler uses the SDK directly.
    await get_instance().trigger_async(
        {
            "function_id": "state::update",
            "payload": {
                "scope": "motia-cron",
                "key": "ticks",
                "ops": [
                    {"type": "increment", "path": "count", "by": 1},
                    {"type": "set", "path": "trigger", "value": ctx.trigger.type},
                ],
            },
        }
    )
