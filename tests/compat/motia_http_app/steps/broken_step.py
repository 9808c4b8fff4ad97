"""GET /broken: a step that raises."""

from typing import Any

from motia import FlowContext, http

config = {
    "name": "Broken",
    "description": "Always fails",
    "triggers": [http("GET", "/broken")],
    "enqueues": [],
}


async def handler(request: Any, ctx: FlowContext[Any]) -> None:
    raise ValueError("the todo database is on fire")
