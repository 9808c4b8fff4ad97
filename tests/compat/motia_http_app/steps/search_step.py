"""GET /search?q=...&tag=...: query parameters, echoed back with the method and a header."""

from typing import Any

from motia import FlowContext, http

config = {
    "name": "Search",
    "description": "Echoes its query parameters",
    "triggers": [http("GET", "/search")],
    "enqueues": [],
}


async def handler(request: Any, ctx: FlowContext[Any]) -> dict[str, Any]:
    return {
        "status": 200,
        "body": {
            "query": request.query_params,
            "method": request.method,
            "agent": request.headers.get("user-agent"),
        },
    }
