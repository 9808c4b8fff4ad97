"""On inventory.restock (queued by the cron step): count the requests in State."""

import asyncio
from typing import Any

from motia import FlowContext, queue, stateManager

config = {
    "name": "CountRestock",
    "description": "Counts restock requests",
    "triggers": [queue("inventory.restock")],
    "enqueues": [],
}


async def handler(input_data: Any, ctx: FlowContext[Any]) -> None:
    ops = [
        {"type": "increment", "path": "count", "by": 1},
        {"type": "set", "path": "requested_by", "value": input_data["requested_by"]},
    ]
    await asyncio.to_thread(stateManager.update, "inventory", "restocks", ops)
