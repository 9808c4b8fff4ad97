"""Version-agnostic compat worker for the official Python iii-sdk (0.11.6 and 0.25.0).

    III_URL=ws://127.0.0.1:PORT .compat/py-0.25.0/bin/python tests/compat/python/worker.py ROLE [ARGS]

Run it with the venv's python made by scripts/install-compat.sh. Roles:
    serve-add PREFIX                 PREFIX::add -> {c: a+b}, PREFIX::fail raises 'boom',
                                     PREFIX::slow sleeps data['ms'] (default 60000); runs until killed
    call FUNCTION_ID [JSON] [MS]     one trigger; prints {"result":..} or {"error":{code,message,class}}
    log [MESSAGE]                    Logger().info(MESSAGE or 'hello from python', {'userId': 'u1'})
    increment SCOPE KEY N [PATH]     N concurrent state::update increments of PATH (default "count");
                                     with III_START_AT_MS they start at that epoch ms (output gets late_ms)
    state-trigger FUNCTION_ID SCOPE [KEY]   'state' trigger; prints {"event":..} per event; runs until killed
    serve-channels PREFIX            PREFIX::consume {reader, slow_ms?} -> {bytes, sha256, texts};
                                     PREFIX::produce {writer, size, texts?} -> {bytes, sha256}; runs
                                     until killed
    channel-send FUNCTION_ID SIZE [BUFFER_SIZE] [TEXTS_JSON] [EXTRA_JSON]     create_channel, trigger
                                     FUNCTION_ID with {**EXTRA, reader: reader_ref} while writing the texts
                                     and SIZE pattern bytes; prints {"result":..,"sent":{bytes,sha256}}
    channel-receive FUNCTION_ID SIZE [BUFFER_SIZE] [TEXTS_JSON] [EXTRA_JSON]  create_channel, trigger
                                     FUNCTION_ID with {**EXTRA, writer: writer_ref, size, texts} while
                                     reading; prints {"result":..,"received":{bytes,sha256,texts}}
    pubsub-subscribe FUNCTION_ID TOPIC   'subscribe' trigger; prints {"message":..} per message;
                                     runs until killed
    pubsub-publish TOPIC [JSON] [void]  trigger('publish', {topic, data}) (as a Void action with 'void');
                                     prints {"result":..} or {"error":..}
    cron FUNCTION_ID EXPRESSION      'cron' trigger; prints {"event":..} per run; runs until killed
    subscribe FUNCTION_ID TOPIC [TYPE]       durable subscription (TYPE durable:subscriber, or 'queue');
                                     prints {"message":..} per delivery, raises 'boom' for data['fail']
    publish TOPIC COUNT              COUNT concurrent iii::durable::publish {topic, data: {n}}; prints
                                     {"published":n,"failed":n,"errors":[..]}
    enqueue FUNCTION_ID QUEUE [JSON] one trigger with TriggerAction.Enqueue; {"result":..} or {"error":..}
    serve-http FUNCTION_ID INVOCATION_JSON [WAIT_MS]   register_function(FUNCTION_ID,
                                     HttpInvocationConfig(**INVOCATION)) (0.25+); prints
                                     {"ready":true,"listed":bool} once engine::functions::list shows it (or
                                     after WAIT_MS, default 3000); on SIGTERM unregisters it, prints
                                     {"unregistered":..} and exits
stdout carries ONLY one JSON object per line; SDK logging goes to stderr.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Any

from iii import TriggerAction, register_worker

try:  # 0.11.x exports Logger from `iii`; 0.25.x moved it to iii-helpers
    from iii import Logger  # type: ignore[attr-defined]
except ImportError:
    from iii_helpers.observability import Logger

logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
warnings.simplefilter("ignore", DeprecationWarning)  # 0.25.0: register_trigger is deprecated
SDK = version("iii-sdk")
_out = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def fail(msg: str) -> None:
    emit({"fatal": msg})
    os._exit(2)


def error_json(e: BaseException) -> dict[str, Any]:
    # 0.11.6 raises IIIInvocationError, 0.25.0 InvocationError; both have .code/.message.
    return {
        "code": getattr(e, "code", None),
        "message": getattr(e, "message", str(e)),
        "class": type(e).__name__,
    }


URL = os.environ.get("III_URL") or fail("III_URL is not set")
ROLE, ARGS = (sys.argv[1] if len(sys.argv) > 1 else ""), sys.argv[2:]
ROLE_NAMES = (
    "serve-add",
    "call",
    "log",
    "increment",
    "state-trigger",
    "serve-channels",
    "channel-send",
    "channel-receive",
    "pubsub-subscribe",
    "pubsub-publish",
    "cron",
    "subscribe",
    "publish",
    "enqueue",
    "serve-http",
    "stream-trigger",
    "stream-custom",
    "calls",
)
if ROLE not in ROLE_NAMES:
    fail(f"unknown role {ROLE!r} (expected: {', '.join(ROLE_NAMES)})")
# Blocks until connected (returns after 30 s anyway if the engine never answers).
iii = register_worker(URL)


def stop(code: int = 0) -> None:
    iii.shutdown()  # closes both sockets and joins the SDK's event-loop thread
    sys.exit(code)


def wait_routable(function_id: str, payload: Any, deadline_s: float = 15.0) -> None:
    """Registrations have no ack: a round trip through the engine proves they were processed."""
    until = time.monotonic() + deadline_s
    while True:
        try:
            iii.trigger({"function_id": function_id, "payload": payload, "timeout_ms": 2000})
            return
        except Exception as e:  # function_not_found until the engine has our registration
            if time.monotonic() > until:
                fail(f"not routable: {function_id}: {error_json(e)}")
            time.sleep(0.2)


def serve_forever() -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    stop(0)


def serve_add(prefix: str = "compat") -> None:
    async def add(data: Any) -> Any:
        if not data.get("__ready"):
            emit({"invoked": f"{prefix}::add", "data": data})
        return {"c": data["a"] + data["b"]}

    async def boom(data: Any) -> Any:
        emit({"invoked": f"{prefix}::fail", "data": data})
        raise Exception("boom")

    async def slow(data: Any) -> Any:
        ms = int((data or {}).get("ms", 60000))
        emit({"invoked": f"{prefix}::slow", "data": data})
        await asyncio.sleep(ms / 1000)
        return {"slept": ms}

    iii.register_function(f"{prefix}::add", add)
    iii.register_function(f"{prefix}::fail", boom)
    iii.register_function(f"{prefix}::slow", slow)
    wait_routable(f"{prefix}::add", {"a": 0, "b": 0, "__ready": True})
    emit({"ready": True, "sdk": SDK})
    serve_forever()


def call(function_id: str, payload: str = "null", timeout_ms: str | None = None) -> None:
    request: dict[str, Any] = {"function_id": function_id, "payload": json.loads(payload)}
    if timeout_ms:
        request["timeout_ms"] = int(timeout_ms)
    try:
        emit({"result": iii.trigger(request)})
    except Exception as e:
        emit({"error": error_json(e)})
    stop(0)


def log(message: str = "hello from python") -> None:
    Logger().info(message, {"userId": "u1"})
    emit({"logged": message, "sdk": SDK})
    time.sleep(1.0)  # shutdown closes the telemetry socket WITHOUT flushing: let the batch go out
    stop(0)


def increment(scope: str, key: str, n: str = "10", path: str = "count") -> None:
    req = {
        "function_id": "state::update",
        "payload": {"scope": scope, "key": key, "ops": [{"type": "increment", "path": path, "by": 1}]},
    }

    # III_START_AT_MS (epoch ms): connect first, then fire at that moment (lines up several workers)
    start_at = int(os.environ.get("III_START_AT_MS") or 0)
    late_ms = 0
    if start_at:
        iii.trigger({"function_id": "state::get", "payload": {"scope": scope, "key": key}})
        late_ms = max(0, int(time.time() * 1000) - start_at)
        time.sleep(max(0.0, start_at / 1000 - time.time()))

    def one(_: int) -> dict[str, Any] | None:
        try:
            iii.trigger(req)  # sync trigger from a worker thread: portable across both SDKs
            return None
        except Exception as e:
            return error_json(e)

    with ThreadPoolExecutor(max_workers=min(int(n), 64) or 1) as pool:
        errors = [e for e in pool.map(one, range(int(n))) if e is not None]
    try:
        final = iii.trigger({"function_id": "state::get", "payload": {"scope": scope, "key": key}})
    except Exception as e:
        final = {"error": error_json(e)}
    out = {"ok": int(n) - len(errors), "failed": len(errors), "errors": errors[:5], "final": final}
    if start_at:
        out["late_ms"] = late_ms
    emit(out)
    stop(0)


def state_trigger(function_id: str, scope: str, key: str | None = None) -> None:
    async def on_event(data: Any) -> Any:
        if isinstance(data, dict) and data.get("__ready"):
            return {"pong": True}
        emit({"event": data})
        return {}

    iii.register_function(function_id, on_event)
    config = {"scope": scope} if key is None else {"scope": scope, "key": key}
    iii.register_trigger({"type": "state", "function_id": function_id, "config": config})
    wait_routable(function_id, {"__ready": True})
    emit({"ready": True, "sdk": SDK})
    serve_forever()


# -- channels -------------------------------------------------------------------------------


def create_channel(buffer_size: int | None) -> Any:
    """0.11 has iii.create_channel(n); 0.25 moved it to iii.helpers.create_channel(iii, n)."""
    if hasattr(iii, "create_channel"):
        return iii.create_channel(buffer_size)
    from iii.helpers import create_channel as helper

    return helper(iii, buffer_size)


def pattern(size: int) -> bytes:
    """The same bytes in every language: byte i is i % 251."""
    block = bytes(range(251))
    return (block * (size // 251 + 1))[:size]


async def read_channel(reader: Any, slow_ms: int = 0) -> dict[str, Any]:
    texts: list[str] = []
    reader.on_message(texts.append)
    digest, size = hashlib.sha256(), 0
    async for chunk in reader:
        digest.update(chunk)
        size += len(chunk)
        if slow_ms:
            await asyncio.sleep(slow_ms / 1000)
    return {"bytes": size, "sha256": digest.hexdigest(), "texts": texts}


async def write_channel(writer: Any, size: int, texts: list[str]) -> dict[str, Any]:
    for text in texts:
        await writer.send_message_async(text)
    data = pattern(size)
    for start in range(0, size, 256 * 1024):
        await writer.write(data[start : start + 256 * 1024])
    await writer.close_async()
    return {"bytes": size, "sha256": hashlib.sha256(data).hexdigest()}


def serve_channels(prefix: str = "compat") -> None:
    async def consume(data: Any) -> Any:
        if data.get("__ready"):
            return {"pong": True}
        return await read_channel(data["reader"], int(data.get("slow_ms") or 0))

    async def produce(data: Any) -> Any:
        return await write_channel(data["writer"], int(data["size"]), list(data.get("texts") or []))

    iii.register_function(f"{prefix}::consume", consume)
    iii.register_function(f"{prefix}::produce", produce)
    wait_routable(f"{prefix}::consume", {"__ready": True})
    emit({"ready": True, "sdk": SDK})
    serve_forever()


def bound(function_id: str, trigger_type: str, config: dict[str, Any], key: str) -> None:
    """A function bound by a trigger: prints each payload as {key: payload}.

    A {"__ready": true} call is the readiness probe (it proves the engine has our registrations).
    """

    async def on_call(data: Any) -> Any:
        if isinstance(data, dict) and data.get("__ready"):
            return {"pong": True}
        emit({key: data})
        return {}

    iii.register_function(function_id, on_call)
    iii.register_trigger({"type": trigger_type, "function_id": function_id, "config": config})
    wait_routable(function_id, {"__ready": True})
    emit({"ready": True, "sdk": SDK})
    serve_forever()


def _ref(ref: Any) -> Any:
    return ref.model_dump() if hasattr(ref, "model_dump") else ref


def _channel_call(function_id: str, payload: dict[str, Any], local: Any) -> tuple[dict[str, Any], Any]:
    """Trigger from a thread (sync trigger) while this thread streams on a loop of its own."""
    box: dict[str, Any] = {}

    def call_it() -> None:
        try:
            box["result"] = iii.trigger({"function_id": function_id, "payload": payload, "timeout_ms": 60000})
        except Exception as e:
            box["error"] = error_json(e)

    caller = threading.Thread(target=call_it)
    caller.start()
    try:
        done = asyncio.run(local())
    except Exception as e:
        box.setdefault("error", error_json(e))
        done = None
    caller.join()
    return box, done


def channel_send(
    function_id: str, size: str, buffer_size: str | None = None, texts: str = "[]", extra: str = "{}"
) -> None:
    channel = create_channel(int(buffer_size) if buffer_size else None)
    box, sent = _channel_call(
        function_id,
        {**json.loads(extra), "reader": _ref(channel.reader_ref)},
        lambda: write_channel(channel.writer, int(size), json.loads(texts)),
    )
    emit({"error": box["error"]} if "error" in box else {"result": box["result"], "sent": sent})
    stop(0)


def channel_receive(
    function_id: str, size: str, buffer_size: str | None = None, texts: str = "[]", extra: str = "{}"
) -> None:
    channel = create_channel(int(buffer_size) if buffer_size else None)
    payload = {
        **json.loads(extra),
        "writer": _ref(channel.writer_ref),
        "size": int(size),
        "texts": json.loads(texts),
    }
    box, received = _channel_call(function_id, payload, lambda: read_channel(channel.reader))
    emit({"error": box["error"]} if "error" in box else {"result": box["result"], "received": received})
    stop(0)


def pubsub_subscribe(function_id: str, topic: str) -> None:
    bound(function_id, "subscribe", {"topic": topic}, "message")


def cron(function_id: str, expression: str) -> None:
    bound(function_id, "cron", {"expression": expression}, "event")


def pubsub_publish(topic: str, payload: str = "null", mode: str = "") -> None:
    data = json.loads(payload)
    request: dict[str, Any] = {"function_id": "publish", "payload": {"topic": topic, "data": data}}
    if mode == "void":
        try:  # 0.25.x: the documented factory; 0.11.x takes the wire shape
            from iii import TriggerAction  # type: ignore[attr-defined]

            request["action"] = TriggerAction.Void()
        except ImportError:
            request["action"] = {"type": "void"}
    try:
        emit({"result": iii.trigger(request)})
    except Exception as e:
        emit({"error": error_json(e)})
    time.sleep(0.2)  # a void frame has no answer: let it leave before the socket closes
    stop(0)


def subscribe(function_id: str, topic: str, trigger_type: str = "durable:subscriber") -> None:
    async def on_message(data: Any) -> Any:
        if isinstance(data, dict) and data.get("__ready"):
            return {"pong": True}
        emit({"message": data})
        if isinstance(data, dict) and data.get("fail"):
            raise Exception("boom")
        return {"ok": True}

    iii.register_function(function_id, on_message)
    iii.register_trigger({"type": trigger_type, "function_id": function_id, "config": {"topic": topic}})
    wait_routable(function_id, {"__ready": True})
    emit({"ready": True, "sdk": SDK})
    serve_forever()


def publish(topic: str, count: str = "1") -> None:
    def one(n: int) -> dict[str, Any] | None:
        try:
            payload = {"topic": topic, "data": {"n": n}}
            iii.trigger({"function_id": "iii::durable::publish", "payload": payload})
            return None
        except Exception as e:
            return error_json(e)

    with ThreadPoolExecutor(max_workers=min(int(count), 32) or 1) as pool:
        errors = [e for e in pool.map(one, range(int(count))) if e is not None]
    emit({"published": int(count) - len(errors), "failed": len(errors), "errors": errors[:5]})
    stop(0)


def enqueue(function_id: str, queue: str, payload: str = "{}") -> None:
    request = {
        "function_id": function_id,
        "payload": json.loads(payload),
        "action": TriggerAction.Enqueue(queue=queue),
    }
    try:
        emit({"result": iii.trigger(request)})
    except Exception as e:
        emit({"error": error_json(e)})
    stop(0)


def listed(function_id: str) -> bool:
    functions = iii.trigger({"function_id": "engine::functions::list", "payload": {}})["functions"]
    return any(f["function_id"] == function_id for f in functions)


def serve_http(function_id: str, invocation: str, wait_ms: str = "3000") -> None:
    from iii_helpers.http import HttpInvocationConfig  # 0.25+: 0.11 has no HTTP-invoked functions

    ref = iii.register_function(function_id, HttpInvocationConfig.model_validate(json.loads(invocation)))
    until = time.monotonic() + int(wait_ms) / 1000
    while not (found := listed(function_id)) and time.monotonic() < until:
        time.sleep(0.1)
    emit({"ready": True, "listed": found, "sdk": SDK})
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    ref.unregister()
    time.sleep(0.3)  # let the frame leave before the socket closes
    emit({"unregistered": function_id})
    stop(0)


# -- streams ---------------------------------------------------------------------------------


def stream_trigger(function_id: str, trigger_type: str, config_json: str = "{}") -> None:
    """A binding of ``trigger_type`` (stream, stream:join, stream:leave); a join for group
    "secret" is refused with {unauthorized: true}."""

    async def on_event(data: Any) -> Any:
        if isinstance(data, dict) and data.get("__ready"):
            return {"pong": True}
        emit({"event": data})
        if trigger_type == "stream:join":
            return {"unauthorized": isinstance(data, dict) and data.get("group_id") == "secret"}
        return {}

    iii.register_function(function_id, on_event)
    config = json.loads(config_json)
    iii.register_trigger({"type": trigger_type, "function_id": function_id, "config": config})
    wait_routable(function_id, {"__ready": True})
    emit({"ready": True, "sdk": SDK})
    serve_forever()


def stream_custom(stream_name: str) -> None:
    """Serves stream ``stream_name`` from a dict through the SDK's create_stream
    (0.11: iii.create_stream; 0.25: iii.helpers.create_stream)."""
    from iii.stream import StreamDeleteResult, StreamSetResult

    items: dict[str, Any] = {}

    def key(i: Any) -> str:
        return f"{i.group_id}/{i.item_id}"

    class Impl:
        async def get(self, i: Any) -> Any:
            emit({"op": "get", "input": i.model_dump()})
            return items.get(key(i))

        async def set(self, i: Any) -> Any:
            emit({"op": "set", "input": i.model_dump()})
            old = items.get(key(i))
            items[key(i)] = i.data
            return StreamSetResult(old_value=old, new_value=i.data)

        async def delete(self, i: Any) -> Any:
            emit({"op": "delete", "input": i.model_dump()})
            return StreamDeleteResult(old_value=items.pop(key(i), None))

        async def list(self, i: Any) -> Any:
            return [v for k, v in items.items() if k.startswith(f"{i.group_id}/")]

        async def list_groups(self, i: Any) -> Any:
            return sorted({k.split("/")[0] for k in items})

        async def update(self, i: Any) -> Any:
            raise NotImplementedError

    if hasattr(iii, "create_stream"):
        iii.create_stream(stream_name, Impl())
    else:
        from iii.helpers import create_stream

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            create_stream(iii, stream_name, Impl())  # type: ignore[arg-type]
    wait_routable(f"stream::list_groups({stream_name})", {"stream_name": stream_name})
    emit({"ready": True, "sdk": SDK})
    serve_forever()


def calls(calls_json: str) -> None:
    """Several calls in order, from a JSON array of [function_id, payload]: one {results} line."""
    results: list[Any] = []
    for function_id, payload in json.loads(calls_json):
        try:
            results.append({"result": iii.trigger({"function_id": function_id, "payload": payload})})
        except Exception as e:
            results.append({"error": error_json(e)})
    emit({"results": results})
    stop(0)


ROLES = {
    "calls": calls,
    "stream-trigger": stream_trigger,
    "stream-custom": stream_custom,
    "serve-add": serve_add,
    "call": call,
    "log": log,
    "increment": increment,
    "state-trigger": state_trigger,
    "serve-channels": serve_channels,
    "channel-send": channel_send,
    "channel-receive": channel_receive,
    "pubsub-subscribe": pubsub_subscribe,
    "pubsub-publish": pubsub_publish,
    "cron": cron,
    "subscribe": subscribe,
    "publish": publish,
    "enqueue": enqueue,
    "serve-http": serve_http,
}
ROLES[ROLE](*ARGS)
