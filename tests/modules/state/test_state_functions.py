"""The six ``state::*`` functions through a real engine, as a worker sees them.

Spec: docs/state.md (result shapes, input decoding, no event for rejected
calls); docs/protocol.md §3.4, §6 (wire shapes).
Every test runs once per State adapter (fixture ``adapter``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from support.jsonvalues import same_json  # tests/support, on sys.path via tests/conftest.py

DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"


async def watch_all(client: Any, function_id: str = "test::events") -> Any:
    """Register a catch-all state trigger; return the recording sink."""
    sink = await client.sink(function_id)
    await client.register_trigger("state", function_id, {})
    return sink


def event(event_type: str, scope: str, key: str, old: Any, new: Any) -> dict[str, Any]:
    return {
        "type": "state",
        "event_type": f"state:{event_type}",
        "scope": scope,
        "key": key,
        "old_value": old,
        "new_value": new,
    }


# --------------------------------------------------------------------------- set


async def test_set_returns_old_and_new_value(client: Any) -> None:
    frame = await client.call_frame("state::set", {"scope": "users", "key": "u1", "value": {"n": 1}})
    assert "error" not in frame, frame
    assert frame["result"] == {"old_value": None, "new_value": {"n": 1}}
    assert frame["function_id"] == "state::set"

    result = await client.ok("state::set", {"scope": "users", "key": "u1", "value": [1, "two", 3.0]})
    assert same_json(result, {"old_value": {"n": 1}, "new_value": [1, "two", 3.0]})
    # Writing the same value again still reports it as the old one.
    result = await client.ok("state::set", {"scope": "users", "key": "u1", "value": [1, "two", 3.0]})
    assert same_json(result, {"old_value": [1, "two", 3.0], "new_value": [1, "two", 3.0]})
    assert same_json(await client.ok("state::get", {"scope": "users", "key": "u1"}), [1, "two", 3.0])


@pytest.mark.parametrize(
    "value",
    [0, -7, 2.0, 1.5, True, False, "", "text", [], {}, {"a": {"b": [1, None]}}, 18446744073709551615],
    ids=repr,
)
async def test_set_get_round_trips_every_json_type(client: Any, value: Any) -> None:
    result = await client.ok("state::set", {"scope": "types", "key": "k", "value": value})
    assert same_json(result, {"old_value": None, "new_value": value})
    frame = await client.call_frame("state::get", {"scope": "types", "key": "k"})
    assert "result" in frame, f"get of a stored {value!r} has no result field: {frame}"
    assert same_json(frame["result"], value)


async def test_set_accepts_data_as_alias_of_value(client: Any) -> None:
    result = await client.ok("state::set", {"scope": "s", "key": "k", "data": {"via": "data"}})
    assert result == {"old_value": None, "new_value": {"via": "data"}}
    assert await client.ok("state::get", {"scope": "s", "key": "k"}) == {"via": "data"}


async def test_set_with_value_and_data_is_a_decoding_error(client: Any) -> None:
    await client.ok("state::set", {"scope": "s", "key": "k", "value": "before"})
    status, body = await client.call("state::set", {"scope": "s", "key": "k", "value": 1, "data": 2})
    assert status == "error"
    assert body["code"] == "deserialization_error"
    assert body["message"].startswith("Failed to deserialize input for state::set:"), body
    assert "value" in body["message"]
    assert await client.ok("state::get", {"scope": "s", "key": "k"}) == "before"


async def test_set_without_value_is_a_decoding_error(client: Any) -> None:
    status, body = await client.call("state::set", {"scope": "s", "key": "k"})
    assert status == "error"
    assert body["code"] == "deserialization_error"
    assert body["message"].startswith("Failed to deserialize input for state::set:"), body
    assert "value" in body["message"]
    assert await client.call("state::get", {"scope": "s", "key": "k"}) == ("ok", client.MISSING)
    assert await client.ok("state::list_groups", {}) == {"groups": []}


async def test_null_value_is_stored_and_read_back_as_explicit_null(client: Any) -> None:
    result = await client.ok("state::set", {"scope": "s", "key": "nul", "value": None})
    assert result == {"old_value": None, "new_value": None}

    stored = await client.call_frame("state::get", {"scope": "s", "key": "nul"})
    assert "error" not in stored
    assert "result" in stored and stored["result"] is None, f"stored null must come back as null: {stored}"

    missing = await client.call_frame("state::get", {"scope": "s", "key": "never-written"})
    assert "error" not in missing
    assert "result" not in missing, f"a missing key's get must carry no result field: {missing}"

    assert await client.ok("state::list", {"scope": "s"}) == [None]
    # The stored null is an existing key: the next set reports it as old_value null.
    assert await client.ok("state::set", {"scope": "s", "key": "nul", "value": 1}) == {
        "old_value": None,
        "new_value": 1,
    }


# --------------------------------------------------------------------------- get / delete


async def test_delete_returns_previous_value_then_nothing(client: Any) -> None:
    await client.ok("state::set", {"scope": "s", "key": "k", "value": {"keep": [1, 2]}})
    frame = await client.call_frame("state::delete", {"scope": "s", "key": "k"})
    assert "error" not in frame
    assert frame["result"] == {"keep": [1, 2]}
    assert await client.call("state::get", {"scope": "s", "key": "k"}) == ("ok", client.MISSING)
    assert await client.ok("state::list", {"scope": "s"}) == []

    again = await client.call_frame("state::delete", {"scope": "s", "key": "k"})
    assert "error" not in again
    assert "result" not in again, f"deleting a missing key returns no result: {again}"
    never = await client.call_frame("state::delete", {"scope": "nope", "key": "nope"})
    assert "error" not in never and "result" not in never, never


@pytest.mark.parametrize("value", [0, False, "", [], {}, 0.0], ids=repr)
async def test_falsy_values_are_values_not_absence(client: Any, value: Any) -> None:
    await client.ok("state::set", {"scope": "s", "key": "f", "value": value})
    status, got = await client.call("state::get", {"scope": "s", "key": "f"})
    assert status == "ok" and same_json(got, value)
    status, deleted = await client.call("state::delete", {"scope": "s", "key": "f"})
    assert status == "ok" and same_json(deleted, value)
    assert await client.call("state::get", {"scope": "s", "key": "f"}) == ("ok", client.MISSING)


async def test_get_does_not_create_a_scope(client: Any) -> None:
    assert await client.call("state::get", {"scope": "ghost", "key": "k"}) == ("ok", client.MISSING)
    assert await client.ok("state::list", {"scope": "ghost"}) == []
    assert await client.ok("state::list_groups", {}) == {"groups": []}


# --------------------------------------------------------------------------- update


async def test_update_result_omits_errors_when_there_are_none(client: Any) -> None:
    frame = await client.call_frame(
        "state::update", {"scope": "s", "key": "u", "ops": [{"type": "set", "path": "a", "value": 1}]}
    )
    assert frame.get("result") == {"old_value": None, "new_value": {"a": 1}}, frame
    assert "errors" not in frame["result"]

    result = await client.ok(
        "state::update", {"scope": "s", "key": "u", "ops": [{"type": "increment", "path": "a", "by": 2}]}
    )
    assert result == {"old_value": {"a": 1}, "new_value": {"a": 3}}
    assert "errors" not in result

    result = await client.ok("state::update", {"scope": "s", "key": "u", "ops": []})
    assert result == {"old_value": {"a": 3}, "new_value": {"a": 3}}


async def test_update_reports_per_op_errors_and_still_writes(client: Any) -> None:
    # The worked example of docs/state.md §4.7, byte for byte (after decoding).
    await client.ok("state::set", {"scope": "s", "key": "ada", "value": {"name": "Ada"}})
    result = await client.ok(
        "state::update",
        {
            "scope": "s",
            "key": "ada",
            "ops": [{"type": "increment", "path": "name", "by": 1}, {"type": "set", "path": "n", "value": 1}],
        },
    )
    assert result == {
        "old_value": {"name": "Ada"},
        "new_value": {"n": 1, "name": "Ada"},
        "errors": [
            {
                "op_index": 0,
                "code": "increment.not_number",
                "message": "Expected number at path 'name', got string.",
                "doc_url": DOC_URL,
            }
        ],
    }
    assert await client.ok("state::get", {"scope": "s", "key": "ada"}) == {"n": 1, "name": "Ada"}


async def test_update_where_every_op_fails_still_creates_the_key(client: Any) -> None:
    result = await client.ok(
        "state::update",
        {
            "scope": "fresh",
            "key": "k",
            "ops": [{"type": "merge", "value": 1}, {"type": "remove", "path": "__proto__"}],
        },
    )
    assert result["old_value"] is None and result["new_value"] == {}
    assert [(e["op_index"], e["code"]) for e in result["errors"]] == [
        (0, "merge.value.not_an_object"),
        (1, "remove.path.proto_polluted"),
    ]
    for err in result["errors"]:
        assert set(err) == {"op_index", "code", "message", "doc_url"}
        assert isinstance(err["message"], str) and err["message"]
        assert err["doc_url"] == DOC_URL
    assert await client.ok("state::get", {"scope": "fresh", "key": "k"}) == {}
    assert await client.ok("state::list_groups", {}) == {"groups": ["fresh"]}


# --------------------------------------------------------------------------- list / list_groups


async def test_list_returns_values_in_first_insertion_order(client: Any) -> None:
    for key, value in [("a", 1), ("b", 2), ("c", 3)]:
        await client.ok("state::set", {"scope": "ord", "key": key, "value": value})
    assert await client.ok("state::list", {"scope": "ord"}) == [1, 2, 3]

    await client.ok("state::set", {"scope": "ord", "key": "b", "value": 20})  # overwrite keeps position
    await client.ok(
        "state::update", {"scope": "ord", "key": "a", "ops": [{"type": "increment", "path": "", "by": 9}]}
    )
    assert await client.ok("state::list", {"scope": "ord"}) == [10, 20, 3]

    await client.ok("state::delete", {"scope": "ord", "key": "a"})
    await client.ok("state::set", {"scope": "ord", "key": "a", "value": "back"})  # re-insert moves to the end
    await client.ok("state::update", {"scope": "ord", "key": "d", "ops": []})  # update can create, at the end
    assert await client.ok("state::list", {"scope": "ord"}) == [20, 3, "back", {}]
    # Other scopes are separate.
    await client.ok("state::set", {"scope": "other", "key": "a", "value": "x"})
    assert await client.ok("state::list", {"scope": "other"}) == ["x"]


async def test_list_of_unknown_scope_is_an_empty_array(client: Any) -> None:
    frame = await client.call_frame("state::list", {"scope": "no-such-scope"})
    assert "error" not in frame
    assert "result" in frame and frame["result"] == [], frame


async def test_list_groups_is_sorted_and_unique(client: Any) -> None:
    assert await client.ok("state::list_groups", {}) == {"groups": []}
    scopes = ["b", "a", "B", "é", "a.b", "Z", "", "日本", "a"]
    for i, scope in enumerate(scopes):
        for key in ("k1", "k2"):
            await client.ok("state::set", {"scope": scope, "key": key, "value": i})
    await client.ok("state::update", {"scope": "by-update", "key": "k", "ops": []})
    expected = sorted({*scopes, "by-update"})
    assert await client.ok("state::list_groups", {}) == {"groups": expected}
    # Extra fields in the payload are ignored.
    assert await client.ok("state::list_groups", {"prefix": "a", "limit": 1}) == {"groups": expected}


async def test_list_groups_drops_a_scope_once_its_last_key_is_deleted(client: Any) -> None:
    # pyiii follows the reference's documentation here, not its kv store
    # (docs/state.md §3.6 / §9.12, docs/decisions.md).
    await client.ok("state::set", {"scope": "gone", "key": "a", "value": 1})
    await client.ok("state::set", {"scope": "gone", "key": "b", "value": 2})
    await client.ok("state::set", {"scope": "kept", "key": "a", "value": 1})
    await client.ok("state::delete", {"scope": "gone", "key": "a"})
    assert await client.ok("state::list_groups", {}) == {"groups": ["gone", "kept"]}
    await client.ok("state::delete", {"scope": "gone", "key": "b"})
    assert await client.ok("state::list_groups", {}) == {"groups": ["kept"]}
    assert await client.ok("state::list", {"scope": "gone"}) == []
    await client.ok("state::set", {"scope": "gone", "key": "b", "value": 3})
    assert await client.ok("state::list_groups", {}) == {"groups": ["gone", "kept"]}


async def test_list_groups_with_null_payload_is_a_decoding_error(client: Any) -> None:
    status, body = await client.call("state::list_groups", None)
    assert status == "error"
    assert body["code"] == "deserialization_error"
    assert body["message"].startswith("Failed to deserialize input for state::list_groups:"), body


# --------------------------------------------------------------------------- bad input

_INC = {"type": "increment", "path": "n", "by": 1}
BAD_INPUTS: list[tuple[str, Any]] = [
    ("set", {"key": "k", "value": 1}),
    ("set", {"scope": None, "key": "k", "value": 1}),
    ("set", {"scope": 1, "key": "k", "value": 1}),
    ("set", {"scope": "s", "value": 1}),
    ("set", {"scope": "s", "key": 1, "value": 1}),
    ("set", {"scope": "s", "key": None, "value": 1}),
    ("set", {"scope": ["s"], "key": "k", "value": 1}),
    ("set", None),
    ("get", {"key": "k"}),
    ("get", {"scope": None, "key": "k"}),
    ("get", {"scope": 1, "key": "k"}),
    ("get", {"scope": "s"}),
    ("delete", {"key": "k"}),
    ("delete", {"scope": None, "key": "k"}),
    ("delete", {"scope": 1, "key": "k"}),
    ("delete", {"scope": "s"}),
    ("delete", {"scope": "s", "key": True}),
    ("update", {"key": "k", "ops": [_INC]}),
    ("update", {"scope": None, "key": "k", "ops": [_INC]}),
    ("update", {"scope": 1, "key": "k", "ops": [_INC]}),
    ("update", {"scope": "s", "ops": [_INC]}),
    ("update", {"scope": "s", "key": "k"}),
    ("update", {"scope": "s", "key": "k", "ops": None}),
    ("update", {"scope": "s", "key": "k", "ops": _INC}),
    ("update", {"scope": "s", "key": "k", "ops": "increment"}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "multiply", "path": "n", "by": 2}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "Increment", "path": "n", "by": 1}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"path": "n", "by": 1}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 1.5}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 2.0}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "n", "by": "1"}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "n", "by": None}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 2**63}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "set", "value": 1}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "remove", "path": ["n"]}]}),
    ("update", {"scope": "s", "key": "k", "ops": [{"type": "merge", "path": "n"}]}),
    ("update", {"scope": "s", "key": "k", "ops": [_INC, {"type": "set", "path": "n", "value": 9}, 7]}),
    ("list", {}),
    ("list", {"scope": None}),
    ("list", {"scope": 1}),
    ("list_groups", None),
    ("list_groups", "all"),
]


@pytest.mark.parametrize(
    ("fn", "payload"), BAD_INPUTS, ids=lambda v: json.dumps(v) if not isinstance(v, str) else v
)
async def test_bad_input_is_rejected_and_changes_nothing(client: Any, fn: str, payload: Any) -> None:
    sink = await watch_all(client)
    await client.ok("state::set", {"scope": "s", "key": "k", "value": {"n": 1}})
    await sink.wait_for(1)

    status, body = await client.call(f"state::{fn}", payload)
    assert status == "error", f"state::{fn}({payload!r}) was accepted: {body!r}"
    assert body["code"] == "deserialization_error", body
    assert body["message"].startswith(f"Failed to deserialize input for state::{fn}:"), body

    # Nothing stored anywhere ...
    assert await client.ok("state::get", {"scope": "s", "key": "k"}) == {"n": 1}
    assert await client.ok("state::list", {"scope": "s"}) == [{"n": 1}]
    assert await client.ok("state::list_groups", {}) == {"groups": ["s"]}
    # ... and no event: the next write of the same key is the only one after the first.
    await client.ok("state::set", {"scope": "s", "key": "k", "value": "after"})
    await sink.wait_for(2)
    await asyncio.sleep(0.05)
    assert sink.events == [
        event("created", "s", "k", None, {"n": 1}),
        event("updated", "s", "k", {"n": 1}, "after"),
    ]


async def test_unknown_extra_fields_are_ignored(client: Any) -> None:
    result = await client.ok("state::set", {"scope": "s", "key": "k", "value": 1, "ttl": 5, "if_version": 3})
    assert result == {"old_value": None, "new_value": 1}
    result = await client.ok(
        "state::update",
        {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "", "by": 1, "note": "x"}], "x": 1},
    )
    assert result == {"old_value": 1, "new_value": 2}
    assert await client.ok("state::get", {"scope": "s", "key": "k", "default": 0}) == 2


# --------------------------------------------------------------------------- max_value_bytes


async def test_max_value_bytes_rejects_larger_values_only(make_state_engine: Any) -> None:
    eng = await make_state_engine(max_value_bytes=100)
    client = await eng.client()
    sink = await watch_all(client)
    await client.ok("state::set", {"scope": "lim", "key": "k", "value": "small"})

    too_big = "x" * 99  # compact JSON: 101 bytes with the quotes
    assert len(json.dumps(too_big, separators=(",", ":"))) == 101
    status, body = await client.call("state::set", {"scope": "lim", "key": "k", "value": too_big})
    assert status == "error", body
    assert body["code"] == "VALUE_TOO_LARGE"
    assert "101" in body["message"] and "100" in body["message"], body
    assert await client.ok("state::get", {"scope": "lim", "key": "k"}) == "small"
    assert await client.call("state::set", {"scope": "lim", "key": "new", "data": too_big}) == (
        "error",
        {**body},
    )
    assert await client.call("state::get", {"scope": "lim", "key": "new"}) == ("ok", client.MISSING)

    exact = "x" * 98  # exactly 100 bytes: allowed
    assert await client.ok("state::set", {"scope": "lim", "key": "k", "value": exact}) == {
        "old_value": "small",
        "new_value": exact,
    }

    # Only the value counts: a long key and scope with a small value pass.
    long_name = "k" * 300
    await client.ok("state::set", {"scope": long_name, "key": long_name, "value": 1})

    # Whitespace in the frame does not count; the compact form is 100 bytes.
    compact = {"items": ["a" * 20, "b" * 20, "c" * 20], "n": 12345}
    size = len(json.dumps(compact, separators=(",", ":")))
    compact["pad"] = "p" * (100 - size - len(',"pad":""'))
    assert len(json.dumps(compact, separators=(",", ":"))) == 100
    spaced = json.dumps(compact, indent=4)
    assert len(spaced) > 150
    frame = await client.call_raw(
        "state::set", '{ "scope" : "lim" , "key" : "spaced" ,\n "value" :\n' + spaced + "\n }"
    )
    assert "error" not in frame, frame
    assert frame["result"] == {"old_value": None, "new_value": compact}
    assert await client.ok("state::get", {"scope": "lim", "key": "spaced"}) == compact

    # Non-ASCII is measured as UTF-8 bytes, not as the \u escapes in the frame.
    accents = "é" * 49  # 98 UTF-8 bytes + 2 quotes = 100
    frame = await client.call_raw(
        "state::set", json.dumps({"scope": "lim", "key": "utf8", "value": accents}, ensure_ascii=True)
    )
    assert "error" not in frame, frame
    status, body = await client.call("state::set", {"scope": "lim", "key": "utf8", "value": "é" * 50})
    assert status == "error" and body["code"] == "VALUE_TOO_LARGE", body
    assert "102" in body["message"] and "100" in body["message"], body
    assert await client.ok("state::get", {"scope": "lim", "key": "utf8"}) == accents

    # The rejected sets fired nothing: events are exactly those of the accepted writes.
    await client.ok("state::set", {"scope": "lim", "key": "k", "value": "last"})
    await sink.wait_for(6)
    await asyncio.sleep(0.05)
    seen = [(e["scope"], e["key"], e["event_type"], e["new_value"]) for e in sink.events]
    assert sorted(seen, key=repr) == sorted(
        [
            ("lim", "k", "state:created", "small"),
            ("lim", "k", "state:updated", exact),
            (long_name, long_name, "state:created", 1),
            ("lim", "spaced", "state:created", compact),
            ("lim", "utf8", "state:created", accents),
            ("lim", "k", "state:updated", "last"),
        ],
        key=repr,
    )


async def test_max_value_bytes_also_bounds_updates(make_state_engine: Any) -> None:
    # The reference checks the limit on state::set only, so an append loop grows
    # a value without bound; pyiii refuses the update that would cross it.
    eng = await make_state_engine(max_value_bytes=100)
    client = await eng.client()
    sink = await watch_all(client)
    await client.ok("state::set", {"scope": "lim", "key": "log", "value": {"lines": []}})
    grow = {"scope": "lim", "key": "log", "ops": [{"type": "append", "path": "lines", "value": "x" * 30}]}
    await client.ok("state::update", grow)
    await client.ok("state::update", grow)
    before = await client.ok("state::get", {"scope": "lim", "key": "log"})
    status, body = await client.call("state::update", grow)
    assert status == "error" and body["code"] == "VALUE_TOO_LARGE", body
    assert "100" in body["message"], body
    assert await client.ok("state::get", {"scope": "lim", "key": "log"}) == before
    await client.ok("state::set", {"scope": "lim", "key": "after", "value": 1})
    await sink.wait_for(4)
    await asyncio.sleep(0.05)
    assert [e["event_type"] for e in sink.events if e["key"] == "log"] == [
        "state:created",
        "state:updated",
        "state:updated",
    ]


@pytest.mark.parametrize(("token", "count", "compact"), [("1E2", 24, 145), ("1E15", 6, 115)])
async def test_max_value_bytes_measures_the_compact_encoding_not_the_frame_text(
    make_state_engine: Any, token: str, count: int, compact: int
) -> None:
    # docs/state.md §3.1: the limit applies to the compact JSON encoding of the value.
    # 1E2 is 3 bytes in the frame but 100.0 (5 bytes) once encoded; 1E15 grows 4 -> 18.
    eng = await make_state_engine(max_value_bytes=100)
    client = await eng.client()
    frame_text = "[" + ",".join([token] * count) + "]"
    assert len(frame_text) <= 100
    assert len(json.dumps([float(token)] * count, separators=(",", ":"))) == compact
    frame = await client.call_raw("state::set", '{"scope":"lim","key":"exp","value":' + frame_text + "}")
    assert "error" in frame, (
        f"a value of {compact} compact bytes was accepted under a 100-byte limit: {frame}"
    )
    assert frame["error"]["code"] == "VALUE_TOO_LARGE", frame
    assert str(compact) in frame["error"]["message"], frame
    assert await client.call("state::get", {"scope": "lim", "key": "exp"}) == ("ok", client.MISSING)


# A JSON number too large for a double: the reference's decoder rejects it
# ("number out of range"), so it can never be stored (docs/state.md §1, §2).
HUGE_NUMBER_CALLS = [
    ("set", '{"scope":"big","key":"k","value":1e400}'),
    ("set", '{"scope":"big","key":"k","value":{"x":[-1e400]}}'),
    ("update", '{"scope":"big","key":"k","ops":[{"type":"set","path":"x","value":1e400}]}'),
    ("update", '{"scope":"big","key":"k","ops":[{"type":"merge","value":{"x":-1e400}}]}'),
    ("update", '{"scope":"big","key":"k","ops":[{"type":"append","path":"x","value":1e400}]}'),
]


@pytest.mark.parametrize(("fn", "payload"), HUGE_NUMBER_CALLS, ids=[p for _, p in HUGE_NUMBER_CALLS])
async def test_number_beyond_double_range_is_a_decoding_error(client: Any, fn: str, payload: str) -> None:
    frame = await client.call_raw(f"state::{fn}", payload)
    assert "error" in frame, f"state::{fn} accepted a number beyond double range: {frame}"
    assert frame["error"]["code"] == "deserialization_error", frame
    assert frame["error"]["message"].startswith(f"Failed to deserialize input for state::{fn}:"), frame
    assert await client.call("state::get", {"scope": "big", "key": "k"}) == ("ok", client.MISSING)
    # and the key stays usable
    result = await client.ok(
        "state::update", {"scope": "big", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 1}]}
    )
    assert result == {"old_value": None, "new_value": {"n": 1}}


# --------------------------------------------------------------------------- odd names

ODD_NAMES = [
    "ünïcödé-日本語-🎉",
    "a/b",
    "/",
    "..",
    "../../etc/passwd",
    "a\x00b",
    "\x00",
    "",
    " ",
    "x" * 10240,
    "with.dot",
    "a b",
    "a%20b",
    "A",
    "a",
    "tab\tnew\nline",
    '"quoted"\\',
    "\u202etxt.exe",
]


async def test_odd_scope_and_key_strings_round_trip(client: Any) -> None:
    written: dict[tuple[str, str], Any] = {}
    for i, name in enumerate(ODD_NAMES):
        # each name as a scope (with a plain key) and as a key (in a plain scope)
        for scope, key in ((name, "k"), ("odd", name)):
            value = {"i": i, "scope": scope, "key": key}
            await client.ok("state::set", {"scope": scope, "key": key, "value": value})
            written[(scope, key)] = value
    for (scope, key), value in written.items():
        assert await client.ok("state::get", {"scope": scope, "key": key}) == value, (scope[:40], key[:40])
    for name in ODD_NAMES:
        assert await client.ok("state::list", {"scope": name}) == [written[(name, "k")]], name[:40]
    assert await client.ok("state::list", {"scope": "odd"}) == [written[("odd", n)] for n in ODD_NAMES]
    groups = (await client.ok("state::list_groups", {}))["groups"]
    assert groups == sorted({*ODD_NAMES, "odd"})
    # Events carry the names unchanged too.
    sink = await watch_all(client)
    for name in ("a\x00b", "x" * 10240, "../../etc/passwd"):
        await client.ok("state::delete", {"scope": name, "key": "k"})
    events = await sink.wait_for(3)
    assert sorted((e["scope"], e["key"], e["event_type"]) for e in events) == sorted(
        (n, "k", "state:deleted") for n in ("a\x00b", "x" * 10240, "../../etc/passwd")
    )


async def test_odd_names_survive_a_restart(
    adapter: str, tmp_path: Any, running_state_engine_cm: Any, request: pytest.FixtureRequest
) -> None:
    if adapter != "file_based":
        pytest.skip("only file_based keeps state in the engine's own files")
    workdir = tmp_path / "restart"
    async with running_state_engine_cm(adapter, workdir, request) as eng:
        client = await eng.client()
        for i, name in enumerate(ODD_NAMES):
            await client.ok("state::set", {"scope": name, "key": name, "value": i})
    async with running_state_engine_cm(adapter, workdir, request) as eng:
        client = await eng.client()
        for i, name in enumerate(ODD_NAMES):
            assert await client.ok("state::get", {"scope": name, "key": name}) == i, name[:40]
        assert (await client.ok("state::list_groups", {}))["groups"] == sorted(set(ODD_NAMES))
