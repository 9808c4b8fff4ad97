"""The bridge State adapter: engine B forwards every state call to engine A.

A keeps its State in memory; B runs ``adapter: bridge`` pointed at A. Test
workers are pyiii SDK workers, one per engine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pyiii.errors import IIIError
from pyiii.modules.state.config import StateConfig
from pyiii.sdk import Worker
from support.engines import free_port, running_engine  # tests/support, on sys.path via tests/conftest.py
from support.engines import sdk_worker as worker


class Recorder:
    """A function that records the payloads it is called with."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, data: Any) -> None:
        self.events.append(data)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"expected {count} events, got {self.events!r}"
            await asyncio.sleep(0.02)
        return self.events


async def watch(w: Worker, function_id: str, config: dict[str, Any]) -> Recorder:
    rec = Recorder()
    w.register_function(function_id, rec)
    w.register_trigger({"type": "state", "function_id": function_id, "config": config})
    await w.trigger("state::list_groups", {})  # frames are handled in order: both are live now
    return rec


async def error_of(w: Worker, function_id: str, payload: Any) -> IIIError:
    with pytest.raises(IIIError) as err:
        await w.trigger(function_id, payload)
    return err.value


def bridge_to(url: str) -> StateConfig:
    return StateConfig(adapter="bridge", bridge_url=url)


async def test_every_function_goes_through_the_bridge() -> None:
    async with (
        running_engine(StateConfig(max_value_bytes=100)) as url_a,
        running_engine(bridge_to(url_a)) as url_b,
        worker(url_a, "on-a") as a,
        worker(url_b, "on-b") as b,
    ):
        on_a = await watch(a, "a::changes", {"scope": "s"})
        on_b = await watch(b, "b::changes", {"scope": "s"})

        assert await b.trigger("state::set", {"scope": "s", "key": "k", "value": {"n": 1, "l": []}}) == {
            "old_value": None,
            "new_value": {"n": 1, "l": []},
        }
        assert await a.trigger("state::get", {"scope": "s", "key": "k"}) == {"n": 1, "l": []}
        assert await b.trigger("state::get", {"scope": "s", "key": "k"}) == {"n": 1, "l": []}
        assert await b.trigger("state::get", {"scope": "s", "key": "missing"}) is None

        ops = [{"type": "increment", "path": "n", "by": 2**62}, {"type": "increment", "path": "l", "by": 1}]
        result = await b.trigger("state::update", {"scope": "s", "key": "k", "ops": ops})
        assert result["new_value"] == {"n": 2**62 + 1, "l": []}
        assert [(e["op_index"], e["code"]) for e in result["errors"]] == [(1, "increment.not_number")]

        await b.trigger("state::set", {"scope": "s", "key": "j", "data": 2.0})
        await a.trigger("state::set", {"scope": "t", "key": "k", "value": "from A"})
        assert await b.trigger("state::list", {"scope": "s"}) == [{"n": 2**62 + 1, "l": []}, 2.0]
        assert await b.trigger("state::list", {"scope": "nope"}) == []
        assert await b.trigger("state::list_groups", {}) == {"groups": ["s", "t"]}

        assert await b.trigger("state::delete", {"scope": "s", "key": "j"}) == 2.0
        assert await b.trigger("state::delete", {"scope": "s", "key": "j"}) is None
        assert await a.trigger("state::get", {"scope": "s", "key": "j"}) is None

        # Both engines fire their own triggers for a write made through B.
        k = {"type": "state", "scope": "s", "key": "k"}
        j = {**k, "key": "j"}
        first, second = {"n": 1, "l": []}, {"n": 2**62 + 1, "l": []}
        expected = [
            {**k, "event_type": "state:created", "old_value": None, "new_value": first},
            {**k, "event_type": "state:updated", "old_value": first, "new_value": second},
            {**j, "event_type": "state:created", "old_value": None, "new_value": 2.0},
            {**j, "event_type": "state:deleted", "old_value": 2.0, "new_value": None},
        ]
        assert await on_b.wait_for(4) == expected
        assert await on_a.wait_for(4) == expected
        await asyncio.sleep(0.2)
        assert len(on_b.events) == len(on_a.events) == 4


async def test_errors_keep_their_state_codes() -> None:
    async with (
        running_engine(StateConfig(max_value_bytes=10)) as url_a,
        running_engine(bridge_to(url_a)) as url_b,
        worker(url_b, "on-b") as b,
    ):
        # A's limit, reported by A, reaches B's caller unchanged.
        err = await error_of(b, "state::set", {"scope": "s", "key": "k", "value": "x" * 50})
        assert err.code == "VALUE_TOO_LARGE" and "max_value_bytes limit of 10" in err.message
        err = await error_of(b, "state::set", {"scope": "s", "value": 1})
        assert err.code == "deserialization_error" and "missing field `key`" in err.message
        err = await error_of(b, "state::update", {"scope": "s", "key": "k", "ops": [{"type": "multiply"}]})
        assert err.code == "deserialization_error"
        assert await b.trigger("state::list_groups", {}) == {"groups": []}


async def test_remote_engine_down_then_up() -> None:
    port = free_port()
    remote = f"ws://127.0.0.1:{port}"
    async with running_engine(bridge_to(remote)) as url_b, worker(url_b, "on-b") as b:
        for function_id, payload, code in [
            ("state::set", {"scope": "s", "key": "k", "value": 1}, "SET_ERROR"),
            ("state::get", {"scope": "s", "key": "k"}, "GET_ERROR"),
            ("state::delete", {"scope": "s", "key": "k"}, "DELETE_ERROR"),
            ("state::update", {"scope": "s", "key": "k", "ops": []}, "UPDATE_ERROR"),
            ("state::list", {"scope": "s"}, "LIST_ERROR"),
            ("state::list_groups", {}, "LIST_GROUPS_ERROR"),
        ]:
            start = time.monotonic()
            err = await error_of(b, function_id, payload)
            assert err.code == code, err
            assert f"the engine at {remote} is unreachable" in err.message, err.message
            assert time.monotonic() - start < 1, f"{function_id} did not fail fast"

        async def until_ok(payload: Any) -> Any:
            deadline = time.monotonic() + 30
            while True:
                try:
                    return await b.trigger("state::set", payload)
                except IIIError as exc:
                    assert exc.code == "SET_ERROR" and time.monotonic() < deadline, exc
                    await asyncio.sleep(0.1)

        # A starts later: B's calls work without restarting B.
        async with running_engine(StateConfig(), port=port) as url_a, worker(url_a, "on-a") as a:
            assert await until_ok({"scope": "s", "key": "k", "value": 1}) == {
                "old_value": None,
                "new_value": 1,
            }
            assert await a.trigger("state::get", {"scope": "s", "key": "k"}) == 1

        # A goes away again (its in-memory state with it), then comes back.
        err = await error_of(b, "state::get", {"scope": "s", "key": "k"})
        assert err.code == "GET_ERROR" and "unreachable" in err.message
        async with running_engine(StateConfig(), port=port):
            assert (await until_ok({"scope": "s", "key": "k", "value": 2}))["new_value"] == 2
            assert await b.trigger("state::get", {"scope": "s", "key": "k"}) == 2
