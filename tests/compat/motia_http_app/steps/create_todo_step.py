"""POST /todos: the JSON body; 201 with a location header, 400 when the title is missing."""

from typing import Any

from motia import ApiResponse, FlowContext, http

config = {
    "name": "CreateTodo",
    "description": "Creates a todo",
    "triggers": [http("POST", "/todos")],
    "enqueues": [],
}


async def handler(request: Any, ctx: FlowContext[Any]) -> ApiResponse[Any]:
    body = request.body or {}
    title = body.get("title") if isinstance(body, dict) else None
    if not title:
        return ApiResponse(status=400, body={"error": "title is required"})
    todo_id = f"t-{len(title)}"
    return ApiResponse(
        status=201,
        body={"id": todo_id, "title": title, "done": False},
        headers={"location": f"/todos/{todo_id}"},
    )
