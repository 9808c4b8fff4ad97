"""On order.created: ship it (enqueue order.shipped)."""

import asyncio
from typing import Any

from motia import FlowContext, enqueue, queue

config = {
    "name": "ShipOrder",
    "description": "Ships a created order",
    "triggers": [queue("order.created")],
    "enqueues": ["order.shipped"],
}


async def handler(input_data: Any, ctx: FlowContext[Any]) -> None:
    # Motia's enqueue() and stateManager are blocking SDK calls, which iii-sdk 0.11.3
    # refuses on its event-loop thread (where async handlers run): call them from a thread.
    event = {"topic": "order.shipped", "data": {"id": input_data["id"], "shipped": True}}
    await asyncio.to_thread(enqueue, event)
