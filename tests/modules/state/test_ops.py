"""Tests for the pure update-op engine (docs/state.md §4)."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyiii.stores.ops import DOC_URL, OpsDecodeError, apply_ops, parse_ops
from support.data import UPDATE_OPS_VECTORS  # tests/support, on sys.path via tests/conftest.py
from support.jsonvalues import same_json  # tests/support, on sys.path via tests/conftest.py

VECTORS: list[dict[str, Any]] = msgspec.json.decode(UPDATE_OPS_VECTORS.read_bytes())

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1


def run(initial: object, raw_ops: list[Any], exists: bool = True) -> tuple[object, list[dict[str, Any]]]:
    return apply_ops(initial, exists, parse_ops(raw_ops))


def codes(errors: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["op_index"], e["code"]) for e in errors]


# --------------------------------------------------------------------------
# Shared vectors
# --------------------------------------------------------------------------


def test_vector_file_is_complete() -> None:
    assert len(VECTORS) == 92
    assert len({v["name"] for v in VECTORS}) == len(VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    expect = vector["expect"]
    exists = vector["initial"] is not None or vector.get("initial_exists", False)
    initial = vector["initial"]
    if "error_code" in expect:
        assert expect["error_code"] == "deserialization_error"
        with pytest.raises(OpsDecodeError) as info:
            parse_ops(vector["ops"])
        assert info.value.message
        return

    before = copy.deepcopy(initial)
    new_value, errors = apply_ops(initial, exists, parse_ops(vector["ops"]))

    assert same_json(new_value, expect["new_value"]), (new_value, expect["new_value"])
    expected_errors = [(e["op_index"], e["code"]) for e in expect.get("errors", [])]
    assert codes(errors) == expected_errors
    for error in errors:
        assert set(error) == {"op_index", "code", "message", "doc_url"}
        assert error["doc_url"] == DOC_URL
        assert isinstance(error["message"], str) and error["message"]
    assert same_json(initial, before), "apply_ops mutated its input"


# --------------------------------------------------------------------------
# Messages (§4.4 / §4.5)
# --------------------------------------------------------------------------


def test_spec_example_message() -> None:
    """§4.7, in full."""
    new_value, errors = run(
        {"name": "Ada"},
        [{"type": "increment", "path": "name", "by": 1}, {"type": "set", "path": "n", "value": 1}],
    )
    assert same_json(new_value, {"n": 1, "name": "Ada"})
    assert errors == [
        {
            "op_index": 0,
            "code": "increment.not_number",
            "message": "Expected number at path 'name', got string.",
            "doc_url": "https://iii.dev/docs/workers/iii-state#error-codes",
        }
    ]


@pytest.mark.parametrize(
    ("initial", "op", "code", "message"),
    [
        (
            5,
            {"type": "set", "path": "a", "value": 1},
            "set.target_not_object",
            "Cannot set at path 'a': target is number, expected object.",
        ),
        (
            [1],
            {"type": "decrement", "path": "a", "by": 1},
            "decrement.target_not_object",
            "Cannot decrement at path 'a': target is array, expected object.",
        ),
        (
            True,
            {"type": "remove", "path": "a"},
            "remove.target_not_object",
            "Cannot remove at path 'a': target is boolean, expected object.",
        ),
        (
            {"a": 1},
            {"type": "increment", "path": "", "by": 1},
            "increment.not_number",
            "Expected number at path 'root', got object.",
        ),
        (
            [1, 2],
            {"type": "append", "path": ["a", "b"], "value": 1},
            "append.target_not_object",
            "Cannot append at path '[a, b]': target is array, expected object.",
        ),
        (
            "s",
            {"type": "append", "path": "f", "value": 1},
            "append.target_not_object",
            "Cannot append at path '[f]': target is string, expected object.",
        ),
        (
            {"e": {"buf": {}}},
            {"type": "append", "path": ["e", "buf"], "value": 1},
            "append.type_mismatch",
            "Cannot append at path 'buf': target is object, expected array, string, null, or missing field.",
        ),
        (
            "abc",
            {"type": "append", "value": None},
            "append.type_mismatch",
            "Expected string append value at path 'root', got null.",
        ),
        (
            {},
            {"type": "merge", "value": [1]},
            "merge.value.not_an_object",
            "Merge value must be a JSON object",
        ),
        (
            {},
            {"type": "set", "path": "prototype"},
            "set.path.proto_polluted",
            "Path segment 'prototype' is not allowed (prototype pollution).",
        ),
        (
            {},
            {"type": "append", "path": ["a", ""], "value": 1},
            "append.path.empty_segment",
            "Path contains an empty segment",
        ),
        (
            {},
            {"type": "merge", "path": [f"k{i}" for i in range(33)], "value": {}},
            "merge.path.too_deep",
            "Path depth 33 exceeds maximum of 32",
        ),
        (
            {},
            {"type": "remove", "path": "é" * 129},
            "remove.path.segment_too_long",
            "Path segment of 258 bytes exceeds maximum of 256",
        ),
    ],
)
def test_error_messages(initial: object, op: dict[str, Any], code: str, message: str) -> None:
    new_value, errors = run(initial, [op])
    assert same_json(new_value, initial)
    assert [(e["code"], e["message"]) for e in errors] == [(code, message)]


def test_segment_length_counts_utf8_bytes() -> None:
    ok, errors = run({}, [{"type": "set", "path": "é" * 128, "value": 1}])  # 256 bytes
    assert errors == [] and same_json(ok, {"é" * 128: 1})
    _, errors = run({}, [{"type": "set", "path": "€" * 86, "value": 1}])  # 258 bytes
    assert codes(errors) == [(0, "set.path.segment_too_long")]


def test_path_checks_first_failure_wins() -> None:
    # Too deep beats a bad segment; segments are checked left to right.
    _, errors = run({}, [{"type": "merge", "path": [""] * 33, "value": {}}])
    assert codes(errors) == [(0, "merge.path.too_deep")]
    _, errors = run({}, [{"type": "merge", "path": ["__proto__", ""], "value": {}}])
    assert codes(errors) == [(0, "merge.path.proto_polluted")]
    # The path is checked before the value.
    _, errors = run({}, [{"type": "merge", "path": ["a", ""], "value": 5}])
    assert codes(errors) == [(0, "merge.path.empty_segment")]


# --------------------------------------------------------------------------
# Merge value limits
# --------------------------------------------------------------------------


def nested(depth: int, leaf: object = None) -> object:
    """A value whose §4.4 depth is ``depth`` (objects wrapping a scalar)."""
    value: object = leaf
    for _ in range(depth):
        value = {"n": value}
    return value


def test_merge_value_depth_limit() -> None:
    _, errors = run({}, [{"type": "merge", "value": nested(16)}])
    assert errors == []
    _, errors = run({}, [{"type": "merge", "value": nested(17)}])
    assert codes(errors) == [(0, "merge.value.too_deep")]
    assert errors[0]["message"] == "Merge value JSON nesting depth 17 exceeds maximum of 16"
    # Arrays count like objects, {} and [] count 1.
    _, errors = run({}, [{"type": "merge", "value": nested(15, [[]])}])
    assert codes(errors) == [(0, "merge.value.too_deep")]
    _, errors = run({}, [{"type": "merge", "value": nested(15, [])}])
    assert errors == []


def test_merge_value_key_limits() -> None:
    _, errors = run({}, [{"type": "merge", "value": {f"k{i}": i for i in range(1024)}}])
    assert errors == []
    _, errors = run({}, [{"type": "merge", "value": {f"k{i}": i for i in range(1025)}}])
    assert codes(errors) == [(0, "merge.value.too_many_keys")]
    # Only top-level sink keys are rejected.
    value, errors = run({}, [{"type": "merge", "value": {"a": {"__proto__": 1}}}])
    assert errors == [] and same_json(value, {"a": {"__proto__": 1}})
    _, errors = run({}, [{"type": "merge", "value": {"z": 1, "constructor": 1}}])
    assert codes(errors) == [(0, "merge.value.proto_polluted")]


def test_set_and_append_values_are_not_inspected() -> None:
    value, errors = run({}, [{"type": "set", "path": "", "value": {"__proto__": 1}}])
    assert errors == [] and same_json(value, {"__proto__": 1})
    value, errors = run([], [{"type": "append", "value": nested(40)}])
    assert errors == [] and same_json(value, [nested(40)])


# --------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------


def test_u64_overflow_is_not_number() -> None:
    value, errors = run({"n": U64_MAX}, [{"type": "increment", "path": "n", "by": 1}])
    assert same_json(value, {"n": U64_MAX})
    assert [(e["code"], e["message"]) for e in errors] == [
        ("increment.not_number", "Expected number at path 'n', got number.")
    ]
    value, errors = run(I64_MIN, [{"type": "decrement", "path": "", "by": 1}])
    assert same_json(value, I64_MIN)
    assert codes(errors) == [(0, "decrement.not_number")]


def test_integer_range_edges() -> None:
    value, errors = run(
        {"a": I64_MAX, "b": U64_MAX, "c": 2**63, "d": -1},
        [
            {"type": "increment", "path": "a", "by": I64_MAX},
            {"type": "decrement", "path": "b", "by": I64_MIN},  # u64::MAX + 2^63
            {"type": "decrement", "path": "c", "by": 2**63 - 1},
            {"type": "increment", "path": "d", "by": I64_MIN},  # i64::MIN - 1
        ],
    )
    assert same_json(value, {"a": 2**64 - 2, "b": U64_MAX, "c": 1, "d": -1})
    assert codes(errors) == [(1, "decrement.not_number"), (3, "increment.not_number")]


def test_float_arithmetic_stays_float() -> None:
    value, errors = run(
        {"f": 2.0, "g": 1.5},
        [
            {"type": "increment", "path": "f", "by": 1},
            {"type": "increment", "path": "g", "by": 2},
            {"type": "decrement", "path": "g", "by": 1},
        ],
    )
    assert errors == [] and same_json(value, {"f": 3.0, "g": 2.5})


def test_booleans_are_not_numbers() -> None:
    value, errors = run({"b": True}, [{"type": "increment", "path": "b", "by": 1}])
    assert same_json(value, {"b": True})
    assert errors[0]["message"] == "Expected number at path 'b', got boolean."


def test_out_of_range_stored_integer_behaves_like_a_double() -> None:
    # The reference would have decoded such an integer as an f64.
    value, errors = run({"n": 2**70}, [{"type": "increment", "path": "n", "by": 1}])
    assert errors == [] and same_json(value, {"n": float(2**70)})
    value, errors = run({"n": 10**400}, [{"type": "increment", "path": "n", "by": 1}])
    assert codes(errors) == [(0, "increment.not_number")]


# --------------------------------------------------------------------------
# Decoding (§4.1)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("by", [True, False, 2.0, 1.5, "1", None, [1], 2**63, I64_MIN - 1], ids=repr)
def test_bad_by_rejects_the_whole_request(by: object) -> None:
    with pytest.raises(OpsDecodeError):
        parse_ops([{"type": "set", "path": "a"}, {"type": "increment", "path": "a", "by": by}])


def test_by_accepts_the_i64_range() -> None:
    ops = parse_ops(
        [
            {"type": "increment", "path": "a", "by": I64_MAX},
            {"type": "decrement", "path": "b", "by": I64_MIN},
        ]
    )
    assert [op.by for op in ops] == [I64_MAX, I64_MIN]


@pytest.mark.parametrize(
    ("raw_ops", "message"),
    [
        (None, "invalid type: null, expected a sequence"),
        ({}, "invalid type: map, expected a sequence"),
        ([1], "invalid type: integer `1`, expected internally tagged enum UpdateOp"),
        ([{"path": "a"}], "missing field `type`"),
        (
            [{"type": "multiply", "path": "a", "by": 2}],
            "unknown variant `multiply`, expected one of "
            "`set`, `merge`, `increment`, `decrement`, `append`, `remove`",
        ),
        ([{"type": "increment", "path": "a"}], "missing field `by`"),
        (
            [{"type": "increment", "path": "a", "by": True}],
            "invalid type: boolean `true`, expected i64",
        ),
        (
            [{"type": "increment", "path": "a", "by": 2.0}],
            "invalid type: floating point `2.0`, expected i64",
        ),
        ([{"type": "remove"}], "missing field `path`"),
        ([{"type": "set", "path": None}], "invalid type: null, expected a string"),
        ([{"type": "merge", "path": "a"}], "missing field `value`"),
    ],
)
def test_decode_error_messages(raw_ops: object, message: str) -> None:
    with pytest.raises(OpsDecodeError) as info:
        parse_ops(raw_ops)
    assert info.value.message == message


@pytest.mark.parametrize(
    "op",
    [
        {"type": "SET", "path": "a"},
        {"type": None, "path": "a"},
        {"type": "set", "path": ["a"]},
        {"type": "increment", "path": None, "by": 1},
        {"type": "decrement", "by": 1},
        {"type": "remove", "path": 1},
        {"type": "merge", "path": ["a", 1], "value": {}},
        {"type": "merge", "path": {"a": 1}, "value": {}},
        {"type": "append", "path": 3, "value": 1},
        {"type": "append"},
    ],
    ids=repr,
)
def test_malformed_ops_are_rejected(op: dict[str, Any]) -> None:
    with pytest.raises(OpsDecodeError):
        parse_ops([op])


def test_lenient_decoding() -> None:
    # Unknown fields are ignored; merge/append value null decodes; set value may be omitted.
    ops = parse_ops(
        [
            {"type": "set", "path": "a", "extra": [1], "by": "x"},
            {"type": "append", "path": None, "value": None},
            {"type": "merge", "path": [], "value": None},
        ]
    )
    assert [op.kind for op in ops] == ["set", "append", "merge"]
    value, errors = apply_ops([], True, ops[1:])
    assert same_json(value, [None])
    assert codes(errors) == [(1, "merge.value.not_an_object")]
    assert parse_ops([]) == []


# --------------------------------------------------------------------------
# Absent-default flag (§4.2 point 4)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_ops", "expected", "expected_codes"),
    [
        (
            [{"type": "set", "path": "a", "value": 1}, {"type": "increment", "path": "", "by": 1}],
            {"a": 1},
            [(1, "increment.not_number")],
        ),
        (
            [{"type": "remove", "path": "x"}, {"type": "increment", "path": "", "by": 2}],
            {},
            [(1, "increment.not_number")],
        ),
        (
            [{"type": "merge", "value": {}}, {"type": "decrement", "path": "", "by": 2}],
            {},
            [(1, "decrement.not_number")],
        ),
        (
            [{"type": "merge", "value": 5}, {"type": "increment", "path": "", "by": 3}],
            3,
            [(0, "merge.value.not_an_object")],
        ),
        (
            [
                {"type": "set", "path": "__proto__", "value": 1},
                {"type": "append", "path": "", "value": "x"},
            ],
            "x",
            [(0, "set.path.proto_polluted")],
        ),
        ([{"type": "remove", "path": "x"}], {}, []),
        ([{"type": "increment", "path": "", "by": I64_MIN}], I64_MIN, []),
        ([{"type": "decrement", "path": "", "by": I64_MIN}], 2**63, []),
        (
            [{"type": "append", "value": "a"}, {"type": "append", "value": "b"}],
            "ab",
            [],
        ),
        (
            [{"type": "append", "value": 1}, {"type": "append", "value": 2}],
            [1, 2],
            [],
        ),
    ],
)
def test_absent_default(raw_ops: list[Any], expected: object, expected_codes: list[tuple[int, str]]) -> None:
    value, errors = run(None, raw_ops, exists=False)
    assert same_json(value, expected), value
    assert codes(errors) == expected_codes


def test_absent_ignores_current_and_stored_null_is_not_absent() -> None:
    value, errors = apply_ops({"ignored": 1}, False, parse_ops([]))
    assert same_json(value, {}) and errors == []
    value, errors = run(None, [{"type": "increment", "path": "", "by": 1}], exists=True)
    assert value is None
    assert errors[0]["message"] == "Expected number at path 'root', got null."


# --------------------------------------------------------------------------
# No mutation / copy-on-write
# --------------------------------------------------------------------------


def test_inputs_are_not_mutated() -> None:
    initial = {
        "a": {"b": {"c": [1, 2]}, "s": "x"},
        "list": [{"k": 1}],
        "n": 1,
        "text": "hi",
        "gone": True,
    }
    raw_ops = [
        {"type": "append", "path": ["a", "b", "c"], "value": 3},
        {"type": "append", "path": "list", "value": {"k": 2}},
        {"type": "merge", "path": ["a", "b"], "value": {"d": 1}},
        {"type": "merge", "value": {"m": {"x": []}}},
        {"type": "append", "path": ["m", "x"], "value": 1},
        {"type": "increment", "path": "n", "by": 1},
        {"type": "append", "path": "text", "value": "!"},
        {"type": "remove", "path": "gone"},
        {"type": "set", "path": "s", "value": {"l": []}},
        {"type": "append", "path": ["s", "l"], "value": 0},
    ]
    before = copy.deepcopy(initial)
    ops_before = copy.deepcopy(raw_ops)
    ops = parse_ops(raw_ops)

    first, errors = apply_ops(initial, True, ops)
    second, _ = apply_ops(initial, True, ops)

    assert errors == []
    assert same_json(initial, before)
    assert same_json(raw_ops, ops_before)
    expected = {
        "a": {"b": {"c": [1, 2, 3], "d": 1}, "s": "x"},
        "list": [{"k": 1}, {"k": 2}],
        "n": 2,
        "text": "hi!",
        "m": {"x": [1]},
        "s": {"l": [0]},
    }
    assert same_json(first, expected)
    # Applying the same parsed ops again gives the same result (ops untouched).
    assert same_json(second, expected)


def test_untouched_subtrees_are_shared_not_copied() -> None:
    big = {"payload": list(range(1000))}
    initial = {"big": big, "n": 1}
    value, _ = run(initial, [{"type": "increment", "path": "n", "by": 1}])
    assert isinstance(value, dict)
    assert value is not initial
    assert value["big"] is big


# --------------------------------------------------------------------------
# Property test
# --------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "", "x.y", "__proto__", "constructor"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=I64_MIN, max_value=U64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
BY = st.integers(min_value=I64_MIN, max_value=I64_MAX) | st.sampled_from([I64_MIN, I64_MAX, 0, 1, -1])
MERGE_PATH = st.none() | KEYS | st.lists(KEYS, max_size=4)


def _field_op(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    if kind in ("increment", "decrement"):
        return st.fixed_dictionaries({"type": st.just(kind), "path": KEYS, "by": BY})
    if kind == "set":
        return st.fixed_dictionaries({"type": st.just(kind), "path": KEYS}, optional={"value": JSON})
    return st.fixed_dictionaries({"type": st.just(kind), "path": KEYS})


RAW_OP = st.one_of(
    _field_op("set"),
    _field_op("increment"),
    _field_op("decrement"),
    _field_op("remove"),
    st.fixed_dictionaries(
        {"type": st.just("merge"), "value": st.dictionaries(KEYS, JSON, max_size=4) | JSON},
        optional={"path": MERGE_PATH},
    ),
    st.fixed_dictionaries({"type": st.just("append"), "value": JSON}, optional={"path": MERGE_PATH}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(current=JSON, exists=st.booleans(), raw_ops=st.lists(RAW_OP, max_size=8))
def test_apply_ops_properties(current: object, exists: bool, raw_ops: list[dict[str, Any]]) -> None:
    current_before = copy.deepcopy(current)
    ops_before = copy.deepcopy(raw_ops)
    ops = parse_ops(raw_ops)

    new_value, errors = apply_ops(current, exists, ops)
    again, errors_again = apply_ops(current, exists, ops)

    assert same_json(current, current_before)
    assert same_json(raw_ops, ops_before)
    assert same_json(new_value, again) and errors == errors_again
    msgspec.json.encode(new_value)
    indexes = [e["op_index"] for e in errors]
    assert indexes == sorted(set(indexes))
    assert all(0 <= i < len(ops) for i in indexes)
    json.dumps(errors)
