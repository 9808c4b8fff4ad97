"""The RBAC decisions (engine/rbac.py): filters, grants, the decision order, hook answers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pyiii.engine import rbac
from pyiii.engine.rbac import (
    INFRASTRUCTURE_FUNCTIONS,
    FunctionRegistration,
    Grants,
    RbacError,
    RbacPolicy,
    Session,
    TriggerRegistration,
    parse_auth_result,
    parse_filter,
)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("api::*", ["api::x", "api::a::b", "api::"], ["xapi::x", "ap::x"]),
        ("*::public", ["a::public", "a::b::public"], ["a::public2", "public"]),
        ("api::*::read", ["api::u::read", "api::a::b::read"], ["api::u::write", "api::read"]),
        ("*pub*", ["pub", "mypublic"], ["private"]),
        ("*", ["", "anything"], []),
        ("a.b", ["a.b"], ["axb"]),  # regex characters are literal
        ("exact::id", ["exact::id"], ["exact::idx", "xexact::id"]),
    ],
)
def test_glob_is_anchored_at_both_ends(pattern: str, yes: list[str], no: list[str]) -> None:
    f = parse_filter(f'match("{pattern}")')
    assert all(f.matches(v, "default", None) for v in yes)
    assert not any(f.matches(v, "default", None) for v in no)


def test_metadata_filter_is_and_within_and_typed() -> None:
    f = parse_filter({"metadata": {"public": True, "tier": "match('free*')"}})
    assert f.matches("x", "default", {"public": True, "tier": "free-1", "other": 1})
    assert not f.matches("x", "default", {"public": True, "tier": "paid"})
    assert not f.matches("x", "default", {"public": 1, "tier": "free"})  # true is not 1
    assert not f.matches("x", "default", {"tier": "free"})
    assert not f.matches("x", "default", None)
    assert not f.matches("x", "default", {"public": True, "tier": 5})  # glob needs a string


def test_filters_are_or_across_and_namespaced() -> None:
    policy = RbacPolicy(
        expose_functions=(
            parse_filter('match("a::*")'),
            parse_filter({"metadata": {"p": True}, "namespace": "ns"}),
        )
    )
    assert policy.exposes("a::1", "default", None)
    assert not policy.exposes("a::1", "ns", None)  # a filter without a namespace is for default only
    assert policy.exposes("b", "ns", {"p": True})
    assert not policy.exposes("b", "default", {"p": True})


@pytest.mark.parametrize(
    "bad",
    ['mtch("x")', "api::*", 5, {"metadata": {}}, {"match": "a", "metadata": {"x": 1}}, {"nope": 1}, {}],
)
def test_bad_filters(bad: Any) -> None:
    with pytest.raises(RbacError):
        parse_filter(bad)


def test_auth_result_defaults_and_types() -> None:
    g = parse_auth_result({})
    assert g.allowed_functions == frozenset() and g.allowed_trigger_types is None
    assert g.allow_trigger_type_registration is False and g.allow_function_registration is True
    assert g.context == {} and g.function_registration_prefix is None
    g = parse_auth_result(
        {
            "allowed_functions": ["a"],
            "forbidden_functions": ["b"],
            "allowed_trigger_types": ["cron"],
            "allow_trigger_type_registration": True,
            "allow_function_registration": False,
            "function_registration_prefix": "t1",
            "context": {"u": 1},
            "namespaces": {"orders": ["svc::*"]},
        }
    )
    assert g.allowed_trigger_types == frozenset({"cron"}) and g.namespaces == {"orders": ("svc::*",)}
    for bad in (
        [],
        {"allowed_functions": "a"},
        {"forbidden_functions": [1]},
        {"allow_trigger_type_registration": "yes"},
        {"function_registration_prefix": ""},
        {"namespaces": {"x": "y"}},
    ):
        with pytest.raises(RbacError):
            parse_auth_result(bad)


def _session(grants: Grants, *filters: str) -> Session:
    return Session(RbacPolicy(expose_functions=tuple(parse_filter(f) for f in filters)), grants)


def test_decision_order() -> None:
    s = _session(
        Grants(
            allowed_functions=frozenset({"priv::ok"}),
            forbidden_functions=frozenset({"pub::no", "engine::log::info"}),
        ),
        'match("pub::*")',
    )
    assert s.check("pub::yes", "default", None, None) is None
    denial = s.check("pub::no", "default", None, None)
    assert denial is not None and denial.explicit  # forbidden wins over expose
    assert s.check("priv::ok", "default", None, None) is None  # granted beyond expose
    assert s.check("priv::ok", "other", None, None) is not None  # allowed_functions: default namespace only
    not_exposed = s.check("priv::other", "default", None, None)
    assert not_exposed is not None and not not_exposed.explicit
    assert "priv::other" in not_exposed.message and "not allowed" in not_exposed.message
    # infrastructure is always allowed, unless forbidden
    assert all(
        s.check(f, "default", None, None) is None for f in INFRASTRUCTURE_FUNCTIONS - {"engine::log::info"}
    )
    assert s.check("engine::log::info", "default", None, None) is not None
    assert s.check("engine::functions::list", "default", None, None) is not None  # discovery is gated


def test_namespace_grants() -> None:
    s = _session(Grants(namespaces={"orders": ("svc::*", 'match("x::get")')}))
    assert s.check("svc::a", "orders", None, None) is None
    assert s.check("x::get", "orders", None, None) is None
    assert s.check("svc::a", "default", None, None) is not None


def test_no_policy_allows_all_but_forbidden() -> None:
    s = Session(None, Grants(forbidden_functions=frozenset({"x"})), middleware_function_id="mw")
    assert s.check("anything", "default", None, None) is None
    assert s.check("x", "default", None, None) is not None


def test_verdicts_are_cached_per_function_record() -> None:
    s = Session(
        RbacPolicy(expose_functions=(parse_filter({"metadata": {"public": True}}),)), rbac.OPEN_GRANTS
    )
    record_a, record_b = object(), object()
    meta = msgspec.Raw(b'{"public": true}')
    assert s.check("f", "default", record_a, meta) is None
    # Same record: the cached verdict (the metadata is not even looked at again).
    assert s.check("f", "default", record_a, msgspec.Raw(b"{}")) is None
    # Re-registered (a new record) without the metadata: judged again.
    assert s.check("f", "default", record_b, msgspec.Raw(b"{}")) is not None
    for i in range(rbac.VERDICT_CACHE_SIZE + 10):
        s.check(f"gone::{i}", "default", None, None)
    assert len(s._verdicts) <= rbac.VERDICT_CACHE_SIZE


def test_prefix() -> None:
    s = _session(Grants(function_registration_prefix="t"))
    assert s.registered_id("echo") == "t::echo"
    assert _session(rbac.OPEN_GRANTS).registered_id("echo") == "echo"


def test_hook_answers() -> None:
    cur = FunctionRegistration("a", "d", {"m": 1})
    assert rbac.apply_function_hook(None, cur) is None
    assert rbac.apply_function_hook("yes", cur) is None
    assert rbac.apply_function_hook({}, cur) == cur
    assert rbac.apply_function_hook({"function_id": "b", "metadata": {"n": 2}}, cur) == FunctionRegistration(
        "b", "d", {"n": 2}
    )
    trig = TriggerRegistration("t1", "cron", "f", {"c": 1})
    assert rbac.apply_trigger_hook([], trig) is None
    assert rbac.apply_trigger_hook({"config": {"c": 2}}, trig) == TriggerRegistration(
        "t1", "cron", "f", {"c": 2}
    )
    assert rbac.apply_trigger_type_hook({}, "tt", "desc") == ("tt", "desc")
    assert rbac.apply_trigger_type_hook({"trigger_type_id": "x"}, "tt", "desc") == ("x", "desc")
    assert rbac.apply_trigger_type_hook(None, "tt", "desc") is None


def test_auth_input_shape() -> None:
    got = rbac.auth_input({"X-Token": "a", "Host": "h"}, "a=1&a=2&b=", "127.0.0.1")
    assert got == {
        "headers": {"x-token": "a", "host": "h"},
        "query_params": {"a": ["1", "2"], "b": [""]},
        "ip_address": "127.0.0.1",
    }
