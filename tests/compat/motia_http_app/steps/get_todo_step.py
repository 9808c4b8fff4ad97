"""GET /todos/:id: a path parameter, a response header, 200 or 404."""

from typing import Any

from motia import ApiResponse, FlowContext, http

config = {
    "name": "GetTodo",
    "description": "Reads one todo by id",
    "triggers": [http("GET", "/todos/:id")],
    "enqueues": [],
}

KNOWN = {"t-1": "buy milk", "t-2": "write tests"}


async def handler(request: Any, ctx: FlowContext[Any]) -> ApiResponse[Any]:
    todo_id = request.path_params["id"]
    if todo_id not in KNOWN:
        return ApiResponse(status=404, body={"error": f"no todo {todo_id}"})
    return ApiResponse(
        status=200,
        body={"id": todo_id, "title": KNOWN[todo_id]},
        headers={"x-todo-id": todo_id},
    )
