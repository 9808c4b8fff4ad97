"""On payment.requested: fail the first delivery, succeed on the retry."""

import asyncio
from typing import Any

from motia import FlowContext, queue, stateManager
from motia.types import QueueConfig

config = {
    "name": "Charge",
    "description": "Charges a payment (flaky on purpose)",
    "triggers": [queue("payment.requested", config=QueueConfig(max_retries=2, backoff_delay_ms=50))],
    "enqueues": [],
}


async def handler(input_data: Any, ctx: FlowContext[Any]) -> None:
    key = input_data["id"]
    ops = [{"type": "increment", "path": "attempts", "by": 1}]
    await asyncio.to_thread(stateManager.update, "charges", key, ops)
    attempts = ((await asyncio.to_thread(stateManager.get, "charges", key)) or {}).get("attempts", 0)
    if attempts < 2:
        raise RuntimeError(f"card network timeout (attempt {attempts})")
