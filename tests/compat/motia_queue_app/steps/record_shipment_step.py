"""On order.shipped: record the shipment in State."""

import asyncio
from typing import Any

from motia import FlowContext, queue, stateManager

config = {
    "name": "RecordShipment",
    "description": "Stores each shipment",
    "triggers": [queue("order.shipped")],
    "enqueues": [],
}


async def handler(input_data: Any, ctx: FlowContext[Any]) -> None:
    shipment = {"id": input_data["id"], "shipped": input_data["shipped"]}
    await asyncio.to_thread(stateManager.set, "shipments", input_data["id"], shipment)
