"""The route table: ``http`` trigger configs in, (route, path params) out. No I/O.

A route is a method plus a path pattern whose ``:name`` (or ``{name}``)
segments are parameters. Matching prefers a literal segment over a parameter
at each step (``/users/me`` wins over ``/users/:id``) and backtracks when a
literal leads nowhere. Two patterns of the same shape on the same method
(``/a/:x`` and ``/a/:y``) cannot both be served, so the second registration
is refused with an error naming both; the same pattern bound to the same
function again (a worker registering its route twice) shares the route, which
stays until its last binding goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from msgspec import UNSET, Raw, UnsetType

from pyiii.modules.http.config import HTTP_METHODS


class RouteError(ValueError):
    """A trigger config that cannot become a route; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One ``http`` trigger's config, validated."""

    method: str
    api_path: str  # as registered; handed to the function as ``path``
    segments: tuple[str, ...]  # literal segments, or ":name" for a parameter
    function_id: str
    namespace: str = "default"
    condition_function_id: str | None = None
    middleware_function_ids: tuple[str, ...] = ()
    metadata: Raw | UnsetType = UNSET
    # (position, name) of each parameter segment, for ``RouteTable.match``.
    params: tuple[tuple[int, str], ...] = ()

    @property
    def pattern(self) -> str:
        return "/" + "/".join(self.segments)

    @property
    def shape(self) -> tuple[str, ...]:
        return tuple(":" if s.startswith(":") else s for s in self.segments)


@dataclass(slots=True)
class Route:
    spec: RouteSpec
    trigger_ids: list[str] = field(default_factory=list)


def _segment(raw: str, api_path: str, seen: set[str]) -> str:
    name: str | None = None
    if raw.startswith(":"):
        name = raw[1:]
    elif raw.startswith("{") and raw.endswith("}"):
        name = raw[1:-1]
    if name is None:
        return unquote(raw)
    if not name or not name.replace("_", "a").replace("-", "a").isalnum():
        raise RouteError(
            f"api_path {api_path!r}: parameter segment {raw!r} needs a name of letters, digits, '_' or '-' "
            "(e.g. ':id')"
        )
    if name in seen:
        raise RouteError(f"api_path {api_path!r}: parameter ':{name}' appears twice")
    seen.add(name)
    return ":" + name


def parse_spec(
    config: Any, function_id: str, *, namespace: str = "default", metadata: Raw | UnsetType = UNSET
) -> RouteSpec:
    """Validate an ``http`` trigger config ``{api_path, http_method?, condition_function_id?, ...}``.

    Keys other than the four it reads (Motia adds ``metadata``, others a
    ``description``) are ignored, as the reference does.
    """
    if not isinstance(config, dict):
        raise RouteError(
            f"http trigger config must be an object like {{api_path: '/todos', http_method: 'GET'}}, "
            f"got {type(config).__name__}"
        )
    api_path = config.get("api_path")
    if not isinstance(api_path, str) or not api_path.strip():
        raise RouteError("http trigger config needs api_path, a non-empty string such as '/todos/:id'")
    if "?" in api_path or "#" in api_path:
        raise RouteError(f"api_path {api_path!r} must be a path only, without '?' or '#'")
    method = config.get("http_method", "GET")
    if not isinstance(method, str) or method.strip().upper() not in HTTP_METHODS:
        raise RouteError(f"http_method {method!r} is not one of {', '.join(HTTP_METHODS)}")
    condition = config.get("condition_function_id")
    if condition is not None and (not isinstance(condition, str) or not condition.strip()):
        raise RouteError("condition_function_id must be a non-empty string (a function id)")
    middleware = config.get("middleware_function_ids")
    if middleware is None:
        middleware = []
    if not isinstance(middleware, list) or not all(isinstance(m, str) and m.strip() for m in middleware):
        raise RouteError("middleware_function_ids must be a list of function ids (non-empty strings)")
    seen: set[str] = set()
    segments = tuple(_segment(s, api_path, seen) for s in api_path.strip().split("/") if s)
    return RouteSpec(
        method=method.strip().upper(),
        api_path=api_path,
        segments=segments,
        function_id=function_id,
        namespace=namespace,
        condition_function_id=condition or None,
        middleware_function_ids=tuple(middleware),
        metadata=metadata,
        params=tuple((i, seg[1:]) for i, seg in enumerate(segments) if seg.startswith(":")),
    )


class _Node:
    __slots__ = ("literal", "param", "routes")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: dict[str, Route] = {}  # by method


class RouteTable:
    """Routes by method and path; owned by the HTTP module, read on every request."""

    def __init__(self) -> None:
        self._root = _Node()
        self._by_trigger: dict[str, Route] = {}

    def __len__(self) -> int:
        return len({id(r) for r in self._by_trigger.values()})

    def routes(self) -> list[Route]:
        unique = {id(r): r for r in self._by_trigger.values()}
        return list(unique.values())

    def _node(self, shape: tuple[str, ...], create: bool) -> _Node | None:
        node = self._root
        for seg in shape:
            if seg == ":":
                if node.param is None:
                    if not create:
                        return None
                    node.param = _Node()
                node = node.param
            else:
                child = node.literal.get(seg)
                if child is None:
                    if not create:
                        return None
                    child = node.literal[seg] = _Node()
                node = child
        return node

    def add(self, trigger_id: str, spec: RouteSpec) -> Route:
        """Bind ``trigger_id``; RouteError if another function holds the same method and shape."""
        self.remove(trigger_id)
        node = self._node(spec.shape, create=True)
        assert node is not None
        existing = node.routes.get(spec.method)
        if existing is not None:
            old = existing.spec
            same = (
                old.segments == spec.segments
                and old.function_id == spec.function_id
                and old.namespace == spec.namespace
            )
            if not same:
                raise RouteError(
                    # "conflicts with already-registered route" is the reference's wording,
                    # which the official SDKs' suites look for in the log.
                    f"route {spec.method} {spec.pattern} (function {spec.function_id}) conflicts with "
                    f"already-registered route {old.method} {old.pattern} (function {old.function_id}): "
                    "both match the same requests; use another path or method, or unregister the first"
                )
            # Same route, same function: the newest binding's settings apply.
            existing.spec = spec
            existing.trigger_ids.append(trigger_id)
            self._by_trigger[trigger_id] = existing
            return existing
        route = Route(spec, [trigger_id])
        node.routes[spec.method] = route
        self._by_trigger[trigger_id] = route
        return route

    def remove(self, trigger_id: str) -> bool:
        """Unbind ``trigger_id``; the route goes with its last binding. False if unknown."""
        route = self._by_trigger.pop(trigger_id, None)
        if route is None:
            return False
        route.trigger_ids.remove(trigger_id)
        if not route.trigger_ids:
            node = self._node(route.spec.shape, create=False)
            if node is not None and node.routes.get(route.spec.method) is route:
                del node.routes[route.spec.method]
                self._prune(self._root, route.spec.shape, 0)
        return True

    def _prune(self, node: _Node, shape: tuple[str, ...], i: int) -> bool:
        """Drop the empty nodes along ``shape``; True if ``node`` itself is now empty."""
        if i < len(shape):
            seg = shape[i]
            child = node.param if seg == ":" else node.literal.get(seg)
            if child is not None and self._prune(child, shape, i + 1):
                if seg == ":":
                    node.param = None
                else:
                    del node.literal[seg]
        return not node.routes and not node.literal and node.param is None

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route serving ``method path`` (a raw URL path) and its decoded parameters."""
        if "%" in path:
            parts = [unquote(p) for p in path.split("/") if p]
        else:
            parts = [p for p in path.split("/") if p]
        found = self._walk(self._root, parts, 0, method)
        if found is None and method == "HEAD":
            found = self._walk(self._root, parts, 0, "GET")
        if found is None:
            return None
        return found, {name: parts[i] for i, name in found.spec.params}

    def _walk(self, node: _Node, parts: list[str], i: int, method: str) -> Route | None:
        if i == len(parts):
            return node.routes.get(method)
        child = node.literal.get(parts[i])
        if child is not None:
            found = self._walk(child, parts, i + 1, method)
            if found is not None:
                return found
        if node.param is not None:
            return self._walk(node.param, parts, i + 1, method)
        return None
