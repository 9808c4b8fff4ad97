"""Every second (a cron step): ask for a restock through the queue (Motia's enqueue())."""

import asyncio
from typing import Any

from motia import FlowContext, cron, enqueue

config = {
    "name": "Restock",
    "description": "Requests a restock every second",
    "triggers": [cron("* * * * * *")],
    "enqueues": ["inventory.restock"],
}


async def handler(_input: None, ctx: FlowContext[Any]) -> None:
    # Motia calls a cron step with no input; the trigger type shows where the run came from.
    event = {"topic": "inventory.restock", "data": {"requested_by": ctx.trigger.type}}
    await asyncio.to_thread(enqueue, event)
