"""HTTP routes served by the official Python iii-sdk (0.25.x) and its iii_helpers.http helper.

    III_URL=ws://127.0.0.1:PORT .compat/py-0.25.0/bin/python py_routes.py

Prints {"ready": true} once every route is registered, then runs until SIGTERM.
"""

import json
import os
import signal
import sys
import threading

from iii import register_worker
from iii_helpers.http import http

iii = register_worker(os.environ["III_URL"])


def route(fid, handler, config):
    iii.register_function(fid, handler)
    iii.register_trigger({"type": "http", "function_id": fid, "config": config})


route(
    "py::hello",
    lambda req: {"status_code": 200, "body": {"message": "hello", "from": "python"}},
    {"api_path": "py/hello", "http_method": "GET"},
)
route(
    "py::items::create",
    lambda req: {
        "status_code": 201,
        "headers": {"x-item": req["path_params"]["id"]},
        "body": {"id": req["path_params"]["id"], "got": req["body"], "q": req["query_params"]},
    },
    {"api_path": "/py/items/:id", "http_method": "POST"},
)


def fails(req):
    raise RuntimeError("python handler broke")


route("py::fails", fails, {"api_path": "py/fails", "http_method": "GET"})
iii.register_function(
    "py::mw::token",
    lambda inp: (
        {"action": "continue"}
        if inp["request"]["headers"].get("x-token") == "secret"
        else {"action": "respond", "response": {"status_code": 401, "body": {"error": "token required"}}}
    ),
)
route(
    "py::secure",
    lambda req: {"status_code": 200, "body": {"secret": 42}},
    {"api_path": "py/secure", "http_method": "GET", "middleware_function_ids": ["py::mw::token"]},
)
iii.register_function("py::cond::allow", lambda req: req["query_params"].get("allow") == "yes")
route(
    "py::conditional",
    lambda req: {"status_code": 200, "body": {"allowed": True}},
    {"api_path": "py/cond", "http_method": "GET", "condition_function_id": "py::cond::allow"},
)


@http
async def stream(req, res):
    await res.status(206)
    await res.headers({"content-type": "text/plain", "x-streamed": "yes"})
    for part in (b"alpha ", b"beta ", b"gamma"):
        await res.writer.write(part)
    await res.writer.close_async()


route("py::stream", stream, {"api_path": "py/stream", "http_method": "GET"})


@http
async def raw(req, res):
    data = await req.request_body.read_all()
    await res.status(200)
    await res.headers({"content-type": "application/json"})
    text = data.decode() if "json" in req.headers.get("content-type", "") else None
    payload = {"parsed": req.body, "raw": text, "size": len(data), "sum": sum(data)}
    await res.writer.write(json.dumps(payload).encode())
    await res.writer.close_async()


route("py::raw", raw, {"api_path": "py/raw", "http_method": "POST"})

done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
signal.signal(signal.SIGINT, lambda *_: done.set())
print(json.dumps({"ready": True}), flush=True)
done.wait()
iii.shutdown()
sys.exit(0)
