"""A Motia cron step whose condition always says no: the handler must never run."""

from typing import Any

from motia import FlowContext, cron
from motia.iii import get_instance


async def never(event: Any, _ctx: FlowContext[Any]) -> bool:
    # Motia hands the condition the engine's cron event; keep the last one to show it was asked.
    await get_instance().trigger_async(
        {"function_id": "state::set", "payload": {"scope": "motia-cron", "key": "asked", "value": event}}
    )
    return False


config = {
    "name": "Never",
    "triggers": [cron("* * * * * *", condition=never)],
    "enqueues": [],
}


async def handler(_input: Any, _ctx: FlowContext[Any]) -> None:
    await get_instance().trigger_async(
        {"function_id": "state::set", "payload": {"scope": "motia-cron", "key": "ran", "value": True}}
    )
