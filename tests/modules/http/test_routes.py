"""The route table and trigger-config validation (sans-I/O)."""

from __future__ import annotations

import pytest

from pyiii.modules.http.routes import RouteError, RouteTable, parse_spec


def spec(path: str, method: str = "GET", fn: str = "f", **extra: object):  # type: ignore[no-untyped-def]
    return parse_spec({"api_path": path, "http_method": method, **extra}, fn)


def test_literal_beats_parameter_and_backtracks() -> None:
    table = RouteTable()
    table.add("t1", spec("/users/:id", fn="one"))
    table.add("t2", spec("users/me", fn="me"))
    table.add("t3", spec("/users/:id/posts/:post", fn="post"))
    table.add("t4", spec("/users/me/settings", fn="settings"))
    route, params = table.match("GET", "/users/me") or (None, None)
    assert route is not None and route.spec.function_id == "me" and params == {}
    route, params = table.match("GET", "/users/42") or (None, None)
    assert route is not None and route.spec.function_id == "one" and params == {"id": "42"}
    # "me" is a literal at this level, but /users/me/posts/x only exists under :id
    route, params = table.match("GET", "/users/me/posts/7") or (None, None)
    assert route is not None and route.spec.function_id == "post" and params == {"id": "me", "post": "7"}
    assert table.match("POST", "/users/42") is None
    assert table.match("GET", "/users") is None
    assert table.match("GET", "/users/a%20b")[1] == {"id": "a b"}  # type: ignore[index]


def test_head_falls_back_to_get_and_root_route() -> None:
    table = RouteTable()
    table.add("t", spec("/", fn="root"))
    assert table.match("HEAD", "/")[0].spec.function_id == "root"  # type: ignore[index]


def test_same_shape_conflict_names_both_routes() -> None:
    table = RouteTable()
    table.add("a", spec("/lists/:listId/:userId", fn="first"))
    with pytest.raises(RouteError) as err:
        table.add("b", spec("lists/:userId/:listId", fn="second"))
    message = str(err.value)
    assert "conflicts with already-registered route" in message
    assert "/lists/:userId/:listId (function second)" in message
    assert "/lists/:listId/:userId (function first)" in message
    with pytest.raises(RouteError, match="conflicts with"):
        table.add("c", spec("/lists/:listId/:userId", fn="third"))
    # the first route still serves
    assert table.match("GET", "/lists/1/2")[0].spec.function_id == "first"  # type: ignore[index]


def test_same_function_same_route_is_shared_until_its_last_binding_goes() -> None:
    table = RouteTable()
    table.add("a", spec("/x", fn="f"))
    table.add("b", spec("x", fn="f"))
    assert len(table) == 1
    table.remove("a")
    assert table.match("GET", "/x") is not None
    table.remove("b")
    assert table.match("GET", "/x") is None
    assert table._root.literal == {}  # nothing left behind
    assert table.remove("b") is False


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"http_method": "GET"}, "needs api_path"),
        ({"api_path": "", "http_method": "GET"}, "needs api_path"),
        ({"api_path": 5}, "needs api_path"),
        ({"api_path": "/x", "http_method": "FETCH"}, "http_method 'FETCH' is not one of"),
        ({"api_path": "/x/:", "http_method": "GET"}, "needs a name"),
        ({"api_path": "/x/:a/:a"}, "appears twice"),
        ({"api_path": "/x?y=1"}, "without '?'"),
        ({"api_path": "/x", "middleware_function_ids": "auth"}, "must be a list"),
        ({"api_path": "/x", "condition_function_id": 3}, "condition_function_id must be"),
        ("not an object", "must be an object"),
    ],
)
def test_bad_trigger_configs_say_what_to_fix(config: object, needle: str) -> None:
    with pytest.raises(RouteError, match=needle.replace("?", r"\?").replace("(", r"\(")):
        parse_spec(config, "f")


def test_defaults_and_extra_keys() -> None:
    s = parse_spec({"api_path": "todos/{id}", "description": "ignored", "metadata": {"a": 1}}, "f")
    assert (s.method, s.pattern, s.api_path) == ("GET", "/todos/:id", "todos/{id}")


def test_json_body_is_checked_and_passed_on_as_sent() -> None:
    import msgspec

    from pyiii.modules.http.request import parse_body

    sent = b'{ "z": 2,\n  "a": [1, 2.5, null] }'
    body = parse_body(sent, "application/json; charset=utf-8")
    assert isinstance(body, msgspec.Raw) and bytes(body) == sent
    assert msgspec.json.decode(msgspec.json.encode({"body": body})) == {"body": {"z": 2, "a": [1, 2.5, None]}}
    assert parse_body(b'{"a": 1', "application/json") is None  # malformed
    assert parse_body(b'{"a": 1}', "text/plain") is None  # not declared JSON
    assert parse_body(b"", "application/json") is None
    assert parse_body(b'"x"', "application/vnd.api+json") == msgspec.Raw(b'"x"')
