"""A Motia cron step: every second, advance progress/job-1/bar by one."""

from typing import Any

from motia import FlowContext, cron
from motia.iii import get_instance

config = {
    "name": "Advance",
    "description": "Moves the job-1 progress bar",
    "triggers": [cron("* * * * * *")],
    "enqueues": [],
}


async def handler(_input: Any, ctx: FlowContext[Any]) -> None:
    # Motia's Stream helpers are blocking calls; an async handler uses the SDK directly.
    await get_instance().trigger_async(
        {
            "function_id": "stream::update",
            "payload": {
                "stream_name": "progress",
                "group_id": "job-1",
                "item_id": "bar",
                "ops": [
                    {"type": "increment", "path": "done", "by": 1},
                    {"type": "set", "path": "by", "value": ctx.trigger.type},
                ],
            },
        }
    )
