"""What the engine's console says about its workers: connects, registrations, failures, leaves."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from pyiii import IIIError
from support.engines import sdk_worker  # tests/support, on sys.path via tests/conftest.py


async def line_with(engine_proc: Any, *parts: str, timeout: float = 10.0, skip: int = 0) -> str:
    """The first console line (after the first ``skip``) containing every one of ``parts``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for line in engine_proc.output.splitlines()[skip:]:
            if all(part in line for part in parts):
                return str(line)
        if loop.time() > deadline:
            pytest.fail(f"no engine line with {parts!r}:\n{engine_proc.output[-3000:]}")
        await asyncio.sleep(0.05)


async def test_connect_registrations_and_disconnect_are_logged(engine_proc: Any) -> None:
    async with sdk_worker(engine_proc.url, "lines-a") as w:
        worker_id = w.worker_id
        connected = await line_with(engine_proc, "'lines-a'", "connected")
        w.register_function("a::one", lambda data: 1)
        w.register_function("a::two", lambda data: 2)
        both = await line_with(engine_proc, "'lines-a' registered")
        w.register_function("a::three", lambda data: 3)
        third = await line_with(engine_proc, "'lines-a' registered 1 function")
    who = f"worker 'lines-a' (id {worker_id}, from 127.0.0.1)"
    assert re.search(rf"INFO .*{re.escape(who)} connected: python \S+, pid \d+, 0 functions$", connected)
    assert both.endswith("INFO  pyiii.engine: worker 'lines-a' registered 2 functions: a::one, a::two")
    assert third.endswith("worker 'lines-a' registered 1 function: a::three")
    left = await line_with(engine_proc, "'lines-a'", "disconnected")
    assert left.endswith(f"INFO  pyiii.engine: {who} disconnected: 3 functions removed")


async def test_a_reconnecting_worker_lists_its_functions_in_the_connect_line(engine_proc: Any) -> None:
    async with sdk_worker(engine_proc.url, "lines-b") as w:
        for name in ("b::x", "b::y"):
            w.register_function(name, lambda data: None)
        await line_with(engine_proc, "'lines-b' registered")
        engine_proc.stop()
        seen = len(engine_proc.output.splitlines())
        engine_proc.start()
        # the SDK reconnects by itself and replays both registrations before it announces
        line = await line_with(engine_proc, "'lines-b'", "connected", timeout=15, skip=seen)
        assert line.endswith("2 functions: b::x, b::y"), line


async def test_a_failing_handler_is_named_in_the_engine_log(engine_proc: Any) -> None:
    served_by, called_by = sdk_worker(engine_proc.url, "lines-c"), sdk_worker(engine_proc.url, "lines-d")
    async with served_by as served, called_by as caller:

        @served.function("c::needs_b")
        def needs_b(data: dict[str, Any]) -> Any:
            return data["b"]

        await line_with(engine_proc, "'lines-c' registered 1 function: c::needs_b")
        with pytest.raises(IIIError) as failed:
            await caller.trigger("c::needs_b", {"a": 1})
        assert (failed.value.code, failed.value.message) == ("invocation_failed", "KeyError: 'b'")
        assert failed.value.stacktrace is not None and "needs_b" in failed.value.stacktrace
        line = await line_with(engine_proc, "c::needs_b", "failed")
        assert re.search(r"WARNING .*function c::needs_b \(worker 'lines-c'\) failed for worker 'lines-d': "
                         r"invocation_failed: KeyError: 'b'", line), line  # fmt: skip


@pytest.mark.parametrize(
    ("trigger_type", "module"),
    [
        ("http", "iii-http"),
        ("durable:subscriber", "iii-queue"),
        ("stream", "iii-stream"),
    ],
)
async def test_a_trigger_no_module_provides_is_warned_about_once(
    engine_proc: Any, trigger_type: str, module: str
) -> None:
    async with sdk_worker(engine_proc.url, "lines-e") as w:
        w.register_function("e::handler", lambda data: None)
        first = w.register_trigger({"type": trigger_type, "function_id": "e::handler", "config": {}})
        w.register_trigger({"type": trigger_type, "function_id": "e::handler", "config": {"again": 1}})
        w.register_trigger({"type": "state", "function_id": "e::handler", "config": {"scope": "s"}})
        line = await line_with(engine_proc, "will not fire")
        await asyncio.sleep(0.3)
    quoted = re.escape(repr(trigger_type))
    assert re.search(
        rf"WARNING .*trigger {first.id} for e::handler \(from worker 'lines-e'\) will not fire: no module "
        rf"or worker provides trigger type {quoted}; trigger type {quoted} comes with the {module} module: "
        "enable it in the engine's config",
        line,
    ), line
    assert engine_proc.output.count("will not fire") == 1, engine_proc.output
