"""A Motia stream step: each change of the progress stream is recorded in State."""

from typing import Any

from motia import FlowContext, stream
from motia.iii import get_instance

config = {
    "name": "OnProgress",
    "description": "Records the last progress event",
    "triggers": [stream("progress", group_id="job-1")],
    "enqueues": [],
}


async def handler(event: Any, ctx: FlowContext[Any]) -> None:
    await get_instance().trigger_async(
        {
            "function_id": "state::set",
            "payload": {
                "scope": "motia-stream",
                "key": "last",
                "value": {"trigger": ctx.trigger.type, "event": event},
            },
        }
    )
