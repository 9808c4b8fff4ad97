"""README "Functions over HTTP": a todo API on the engine's HTTP port (engine config: iii-config.yaml)."""

import itertools

from pyiii import HttpRequest, HttpResponse, register_worker

iii = register_worker()                  # $III_URL, else ws://127.0.0.1:49134
next_id = itertools.count(1)

@iii.http("POST", "/todos")
async def create_todo(req: HttpRequest):
    title = req.body.get("title") if isinstance(req.body, dict) else None
    if not title:
        return HttpResponse(400, {"error": "send JSON with a title"})
    todo = {"id": str(next(next_id)), "title": title, "done": False}
    await iii.trigger("state::set", {"scope": "todos", "key": todo["id"], "value": todo})
    return HttpResponse(201, todo, {"location": f"/todos/{todo['id']}"})

@iii.http("GET", "/todos/:id")
async def get_todo(req: HttpRequest):
    todo = await iii.trigger("state::get", {"scope": "todos", "key": req.path_params["id"]})
    return todo if todo is not None else HttpResponse(404, {"error": f"no todo {req.path_params['id']}"})

@iii.http("GET", "/todos")
async def list_todos(req: HttpRequest):
    todos = await iii.trigger("state::list", {"scope": "todos"})
    if "done" in req.query:                # /todos?done=true
        todos = [t for t in todos if t["done"] == (req.query["done"] == "true")]
    return sorted(todos, key=lambda t: int(t["id"]))

@iii.http("DELETE", "/todos/:id")
async def delete_todo(req: HttpRequest):
    await iii.trigger("state::delete", {"scope": "todos", "key": req.path_params["id"]})
    return None                          # 204 No Content

iii.run()                                # serve until Ctrl-C
