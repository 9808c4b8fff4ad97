"""The ``state`` trigger type, observed by a worker (docs/state.md §5).

Events are delivered as ``invokefunction`` frames to the bound function with
the exact payload ``{type, event_type, scope, key, old_value, new_value}`` and
the trigger's ``metadata``. Beyond the reference (whose delivery is unordered
and sequential per event, §9.11) pyiii promises that events of one key reach a
binding in write order and that a slow handler delays nobody else
(src/pyiii/modules/state/triggers.py); both are tested here.
Every test runs once per State adapter.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest


def ev(event_type: str, scope: str, key: str, old: Any, new: Any) -> dict[str, Any]:
    return {
        "type": "state",
        "event_type": f"state:{event_type}",
        "scope": scope,
        "key": key,
        "old_value": old,
        "new_value": new,
    }


def by_key(events: list[Any]) -> dict[tuple[str, str], list[Any]]:
    out: dict[tuple[str, str], list[Any]] = {}
    for e in events:
        out.setdefault((e["scope"], e["key"]), []).append(e)
    return out


async def settle(*sinks: Any, quiet: float = 0.15) -> None:
    """Give stray deliveries a chance to show up."""
    await asyncio.sleep(quiet)


# --------------------------------------------------------------------------- payloads


async def test_events_have_the_exact_payload_and_the_trigger_metadata(state_engine: Any) -> None:
    listener = await state_engine.client()
    writer = await state_engine.client()
    meta = {"team": "billing", "n": 1, "nested": {"x": [1, None]}}
    with_meta = await listener.sink("t::with-meta")
    await listener.register_trigger("state", "t::with-meta", {}, metadata=meta)
    plain = await listener.sink("t::plain")
    await listener.register_trigger("state", "t::plain", {"scope": "s"})
    assert listener.trigger_results == [], "a successful registration gets no reply"

    await writer.ok("state::set", {"scope": "s", "key": "k", "value": {"v": 1}})
    await writer.ok("state::set", {"scope": "s", "key": "k", "value": {"v": 1}})
    await writer.ok(
        "state::update",
        {
            "scope": "s",
            "key": "k",
            "ops": [{"type": "increment", "path": "v", "by": 2}, {"type": "set", "path": "w", "value": "x"}],
        },
    )
    await writer.ok("state::update", {"scope": "s", "key": "k", "ops": [{"type": "merge", "value": 7}]})
    await writer.ok("state::delete", {"scope": "s", "key": "k"})
    await writer.ok("state::delete", {"scope": "s", "key": "k"})
    await writer.ok("state::update", {"scope": "s", "key": "u", "ops": []})
    await writer.ok("state::set", {"scope": "s", "key": "n", "value": None})
    await writer.ok("state::set", {"scope": "s", "key": "n", "data": 1.0})
    await writer.ok("state::get", {"scope": "s", "key": "n"})
    await writer.ok("state::list", {"scope": "s"})
    await writer.ok("state::list_groups", {})

    expected = {
        ("s", "k"): [
            ev("created", "s", "k", None, {"v": 1}),
            ev("updated", "s", "k", {"v": 1}, {"v": 1}),
            ev("updated", "s", "k", {"v": 1}, {"v": 3, "w": "x"}),
            ev("updated", "s", "k", {"v": 3, "w": "x"}, {"v": 3, "w": "x"}),  # every op failed: still fires
            ev("deleted", "s", "k", {"v": 3, "w": "x"}, None),
            # Deleting the now missing key fires nothing: a pyiii decision
            # (docs/decisions.md); the reference fires state:deleted with old_value null.
        ],
        ("s", "u"): [ev("created", "s", "u", None, {})],
        ("s", "n"): [ev("created", "s", "n", None, None), ev("updated", "s", "n", None, 1.0)],
    }
    for sink in (with_meta, plain):
        await sink.wait_for(8)
        await settle()
        assert by_key(sink.events) == expected, sink.function_id
        float_event = by_key(sink.events)[("s", "n")][1]
        assert type(float_event["new_value"]) is float
    assert with_meta.metadata == [meta] * 8
    assert plain.metadata == [listener.MISSING] * 8, "a trigger without metadata sends none"


async def test_scope_and_key_filters_match_exactly(state_engine: Any) -> None:
    c = await state_engine.client()
    sinks = {}
    for name, config in [
        ("scope-a", {"scope": "a"}),
        ("key-k1", {"key": "k1"}),
        ("both", {"scope": "a", "key": "k1"}),
        ("empty-scope", {"scope": ""}),
        ("all", {}),
        ("null-config", None),
        ("unknown-fields", {"prefix": "zzz", "event_types": ["state:deleted"]}),
    ]:
        sinks[name] = await c.sink(f"t::{name}")
        await c.register_trigger("state", f"t::{name}", config)
    # A registertrigger frame with no config at all (the Python SDK drops a None config).
    sinks["no-config"] = await c.sink("t::no-config")
    await c.send_text(
        json.dumps(
            {
                "type": "registertrigger",
                "id": "no-config",
                "trigger_type": "state",
                "function_id": "t::no-config",
            }
        )
    )
    await c.sync()
    assert c.trigger_results == []

    writes = [
        ("a", "k1"),
        ("a", "k2"),
        ("b", "k1"),
        ("b", "k2"),
        ("A", "k1"),
        ("a ", "k1"),
        ("", "k1"),
        ("a", "K1"),
        ("a", ""),
    ]
    for scope, key in writes:
        await c.ok("state::set", {"scope": scope, "key": key, "value": 1})
    await sinks["all"].wait_for(len(writes))
    for name in ("null-config", "no-config", "unknown-fields"):
        await sinks[name].wait_for(len(writes))
    await settle()

    def seen(name: str) -> set[tuple[str, str]]:
        return {(e["scope"], e["key"]) for e in sinks[name].events}

    everything = set(writes)
    assert seen("all") == everything
    assert seen("null-config") == everything
    assert seen("no-config") == everything
    assert seen("unknown-fields") == everything
    assert seen("scope-a") == {("a", "k1"), ("a", "k2"), ("a", "K1"), ("a", "")}
    assert seen("key-k1") == {("a", "k1"), ("b", "k1"), ("A", "k1"), ("a ", "k1"), ("", "k1")}
    assert seen("both") == {("a", "k1")}
    assert seen("empty-scope") == {("", "k1")}
    for name, sink in sinks.items():
        assert len(sink.events) == len(seen(name)), f"{name} got duplicates: {sink.events}"


# --------------------------------------------------------------------------- conditions


VERDICTS: dict[str, Any] = {
    "c-false": False,
    "c-true": True,
    "c-null": None,
    "c-no-result": "MISSING",
    "c-zero": 0,
    "c-string-false": "false",
    "c-object": {"pass": False},
    "c-empty-list": [],
    "c-error": "ERROR",
}
PASSING = {k for k in VERDICTS if k not in ("c-false", "c-error")}


async def test_condition_function_decides_delivery(state_engine: Any) -> None:
    c = await state_engine.client()
    meta = {"rule": 7}
    calls: list[tuple[Any, Any]] = []

    async def condition(data: Any, metadata: Any) -> Any:
        calls.append((data, metadata))
        verdict = VERDICTS[data["key"]]
        if verdict == "ERROR":
            raise c.HandlerError("condition_failed", "cannot decide")
        if verdict == "MISSING":
            return c.MISSING
        return verdict

    await c.register_function("t::cond", condition)
    handler = await c.sink("t::handler")
    await c.register_trigger(
        "state", "t::handler", {"scope": "cond", "condition_function_id": "t::cond"}, metadata=meta
    )
    # A condition that does not exist is a condition error: never delivered.
    orphan = await c.sink("t::orphan")
    await c.register_trigger("state", "t::orphan", {"scope": "cond", "condition_function_id": "t::nobody"})
    assert c.trigger_results == []

    for key in VERDICTS:
        await c.ok("state::set", {"scope": "cond", "key": key, "value": {"k": key}})
    await handler.wait_for(len(PASSING))
    deadline = time.monotonic() + 5
    while len(calls) < len(VERDICTS) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await settle()

    assert sorted(e["key"] for e in handler.events) == sorted(PASSING)
    for e in handler.events:
        assert e == ev("created", "cond", e["key"], None, {"k": e["key"]})
    assert handler.metadata == [meta] * len(PASSING)
    # The condition saw every event, with the same payload and metadata as the handler.
    assert sorted(d["key"] for d, _ in calls) == sorted(VERDICTS)
    for data, metadata in calls:
        assert data == ev("created", "cond", data["key"], None, {"k": data["key"]})
        assert metadata == meta
    assert orphan.events == []
    # The writes themselves were unaffected.
    assert await c.ok("state::list", {"scope": "cond"}) == [{"k": k} for k in VERDICTS]


# --------------------------------------------------------------------------- ordering


async def test_events_of_one_key_arrive_in_write_order(state_engine: Any) -> None:
    listener = await state_engine.client()
    writer = await state_engine.client()
    sink = await listener.sink("t::order", delay=0.001)
    await listener.register_trigger("state", "t::order", {"scope": "ord"})

    expected = []
    for i in range(100):
        if i % 10 == 9:
            old = await writer.ok("state::delete", {"scope": "ord", "key": "k"})
            expected.append(ev("deleted", "ord", "k", None if old is writer.MISSING else old, None))
        elif i % 10 == 5:
            r = await writer.ok(
                "state::update",
                {"scope": "ord", "key": "k", "ops": [{"type": "set", "path": "", "value": i}]},
            )
            expected.append(
                ev("created" if r["old_value"] is None else "updated", "ord", "k", r["old_value"], i)
            )
        else:
            r = await writer.ok("state::set", {"scope": "ord", "key": "k", "value": i})
            expected.append(
                ev("created" if r["old_value"] is None else "updated", "ord", "k", r["old_value"], i)
            )
    await sink.wait_for(100, timeout=20)
    assert sink.events == expected


async def test_pipelined_writes_from_two_clients_are_delivered_in_commit_order(state_engine: Any) -> None:
    listener = await state_engine.client()
    w1 = await state_engine.client()
    w2 = await state_engine.client()
    sink = await listener.sink("t::pipe")
    await listener.register_trigger("state", "t::pipe", {"scope": "pipe"})

    async def write(client: Any, value: str) -> dict[str, Any]:
        result: dict[str, Any] = await client.ok("state::set", {"scope": "pipe", "key": "k", "value": value})
        return result

    results = await asyncio.gather(
        *(write(w1, f"a{i}") for i in range(50)), *(write(w2, f"b{i}") for i in range(50))
    )
    # Rebuild the order the engine applied the writes in from the old_value links.
    successor = {r["old_value"]: r["new_value"] for r in results}
    assert len(successor) == 100, "two writes reported the same previous value"
    chain, current = [], None
    while current in successor:
        current = successor[current]
        chain.append(current)
    assert len(chain) == 100
    await sink.wait_for(100, timeout=20)
    assert [e["new_value"] for e in sink.events] == chain
    assert [e["old_value"] for e in sink.events] == [None, *chain[:-1]]


# --------------------------------------------------------------------------- isolation


async def test_slow_handler_delays_neither_writer_nor_other_triggers(state_engine: Any) -> None:
    listener = await state_engine.client()
    writer = await state_engine.client()
    slow = await listener.sink("t::slow", delay=3.0)
    fast = await listener.sink("t::fast")
    await listener.register_trigger("state", "t::slow", {})
    await listener.register_trigger("state", "t::fast", {})

    for i in range(5):
        started = time.monotonic()
        await writer.ok("state::set", {"scope": "s", "key": "k" if i < 3 else f"other{i}", "value": i})
        assert time.monotonic() - started < 0.5, "a write waited for a trigger handler"
    started = time.monotonic()
    await fast.wait_for(5, timeout=1.5)
    assert time.monotonic() - started < 1.5
    assert [e["new_value"] for e in fast.events if e["key"] == "k"] == [0, 1, 2]
    assert len(slow.events) >= 1  # the slow handler is still busy with its first event


async def test_failing_handlers_affect_nothing(state_engine: Any) -> None:
    listener = await state_engine.client()
    writer = await state_engine.client()
    failing = await listener.sink("t::failing")
    failing.error = ("boom", "handler refuses")
    crashes: list[Any] = []

    def crashing(data: Any, metadata: Any) -> Any:
        crashes.append(data)
        raise RuntimeError("handler crashed")

    await listener.register_function("t::crashing", crashing)
    good = await listener.sink("t::good")
    for fid in ("t::failing", "t::crashing", "t::good", "t::not-registered"):
        await listener.register_trigger("state", fid, {"scope": "f"})

    # A handler on a worker that disconnects mid-delivery, never answering.
    leaver = await state_engine.client()
    gone = await leaver.sink("t::gone", reply=leaver.NO_REPLY)
    await leaver.register_trigger("state", "t::gone", {"scope": "f"})

    for i in range(5):
        result = await writer.ok("state::set", {"scope": "f", "key": "k", "value": i})
        assert result == {"old_value": None if i == 0 else i - 1, "new_value": i}
        if i == 1:
            await gone.wait_for(1)
            await leaver.close()
    await good.wait_for(5)
    await failing.wait_for(5)
    deadline = time.monotonic() + 5
    while len(crashes) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [e["new_value"] for e in good.events] == [0, 1, 2, 3, 4]
    assert [e["new_value"] for e in failing.events] == [0, 1, 2, 3, 4]
    assert [e["new_value"] for e in crashes] == [0, 1, 2, 3, 4]
    assert await writer.ok("state::get", {"scope": "f", "key": "k"}) == 4
    r = await writer.ok(
        "state::update", {"scope": "f", "key": "k", "ops": [{"type": "increment", "path": "", "by": 1}]}
    )
    assert r == {"old_value": 4, "new_value": 5}
    await good.wait_for(6)


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize(
    "config",
    [
        {"scope": 5},
        {"key": 5},
        {"condition_function_id": 5},
        {"scope": ["a"]},
        {"key": {"k": 1}},
        {"scope": True},
        "scope-a",
        42,
    ],
    ids=json.dumps,
)
async def test_bad_trigger_config_is_refused(state_engine: Any, config: Any) -> None:
    c = await state_engine.client()
    bad = await c.sink("t::bad")
    good = await c.sink("t::good")
    trigger_id = await c.register_trigger("state", "t::bad", config)
    await c.register_trigger("state", "t::good", {})
    assert len(c.trigger_results) == 1, c.trigger_results
    frame = c.trigger_results[0]
    assert frame["type"] == "triggerregistrationresult"
    assert frame["id"] == trigger_id
    assert frame["trigger_type"] == "state"
    assert frame["function_id"] == "t::bad"
    assert frame["error"]["code"] == "trigger_registration_failed", frame
    assert frame["error"]["message"].startswith("Failed to parse trigger config"), frame

    await c.ok("state::set", {"scope": "a", "key": "k", "value": 1})
    await good.wait_for(1)
    await settle()
    assert bad.events == [], "a refused trigger must not be delivered"


async def test_unregistertrigger_stops_delivery(state_engine: Any) -> None:
    c = await state_engine.client()
    watched = await c.sink("t::watched")
    control = await c.sink("t::control")
    trigger_id = await c.register_trigger("state", "t::watched", {})
    await c.register_trigger("state", "t::control", {})

    await c.ok("state::set", {"scope": "u", "key": "k", "value": 1})
    await watched.wait_for(1)
    await c.unregister_trigger(trigger_id, "state")
    await c.ok("state::set", {"scope": "u", "key": "k", "value": 2})
    await c.ok("state::delete", {"scope": "u", "key": "k"})
    await control.wait_for(3)
    await settle()
    assert [e["new_value"] for e in watched.events] == [1]


async def test_unregister_drops_events_still_queued_for_the_trigger(state_engine: Any) -> None:
    c = await state_engine.client()
    slow = await c.sink("t::slow", delay=0.3)
    control = await c.sink("t::control")
    trigger_id = await c.register_trigger("state", "t::slow", {"scope": "q"})
    await c.register_trigger("state", "t::control", {"scope": "q"})
    for i in range(5):
        await c.ok("state::set", {"scope": "q", "key": "k", "value": i})
    await slow.wait_for(1)
    await c.unregister_trigger(trigger_id, "state")
    await control.wait_for(5)
    await asyncio.sleep(0.8)
    assert [e["new_value"] for e in slow.events] == [0], (
        "events queued before unregister were still delivered"
    )


async def test_reregistering_an_id_sends_queued_events_to_the_new_binding_only(state_engine: Any) -> None:
    c = await state_engine.client()
    old = await c.sink("t::old", delay=0.3)
    new = await c.sink("t::new")
    await c.register_trigger("state", "t::old", {"scope": "q"}, trigger_id="swap")
    for i in range(3):
        await c.ok("state::set", {"scope": "q", "key": "k", "value": i})
    await old.wait_for(1)
    await c.register_trigger("state", "t::new", {"scope": "q"}, trigger_id="swap")
    await c.ok("state::set", {"scope": "q", "key": "k", "value": 3})
    await asyncio.sleep(1.2)
    assert [e["new_value"] for e in new.events] == [3], (
        f"new binding got {new.events}; replaced binding got {[e['new_value'] for e in old.events]}"
    )
    assert [e["new_value"] for e in old.events] == [0], "the replaced binding kept receiving events"


async def test_reregistering_a_trigger_id_replaces_it(state_engine: Any) -> None:
    c = await state_engine.client()
    sink = await c.sink("t::re")
    control = await c.sink("t::control")
    await c.register_trigger("state", "t::control", {})
    await c.register_trigger("state", "t::re", {"scope": "first"}, trigger_id="same-id")
    await c.register_trigger("state", "t::re", {"scope": "second"}, trigger_id="same-id")
    await c.ok("state::set", {"scope": "first", "key": "k", "value": 1})
    await c.ok("state::set", {"scope": "second", "key": "k", "value": 2})
    await control.wait_for(2)
    await sink.wait_for(1)
    await settle()
    assert [(e["scope"], e["new_value"]) for e in sink.events] == [("second", 2)]


async def test_triggers_disabled_delivers_nothing(make_state_engine: Any) -> None:
    eng = await make_state_engine(triggers_enabled=False)
    c = await eng.client()
    sink = await c.sink("t::off")
    await c.register_trigger("state", "t::off", {})
    assert await c.ok("state::set", {"scope": "s", "key": "k", "value": 1}) == {
        "old_value": None,
        "new_value": 1,
    }
    await c.ok(
        "state::update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "", "by": 1}]}
    )
    assert await c.ok("state::delete", {"scope": "s", "key": "k"}) == 2
    await asyncio.sleep(0.3)
    assert sink.events == []
