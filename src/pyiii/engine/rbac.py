"""Access control of a worker listener (``rbac:``): pure decisions, no I/O.

A listener with an ``rbac`` block (or a ``middleware_function_id``) gives
each of its connections a :class:`Session`: the listener's
:class:`RbacPolicy` plus the :class:`Grants` its auth function returned.
Everything here is plain data in, verdict out; the engine (``access.py``)
does the calling and the waiting.

Decision order for a call (the reference engine's):

1. ``forbidden_functions`` names it -> denied (wins over everything);
2. a grant names it (``allowed_functions`` in ``default``, or a
   ``namespaces`` grant of its namespace) -> allowed;
3. it is one of :data:`INFRASTRUCTURE_FUNCTIONS` -> allowed;
4. an ``expose_functions`` filter matches -> allowed;
5. otherwise denied.

Filters are compiled once (a glob becomes an anchored regex), and a
session remembers its verdicts per function, so the per-call cost on a hot
path is one dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import msgspec
from msgspec import Raw, UnsetType

# Always callable through an RBAC listener: connection setup, logging and
# baggage must work whatever the operator exposes (the reference's list).
INFRASTRUCTURE_FUNCTIONS = frozenset(
    {
        "engine::channels::create",
        "engine::workers::register",
        "engine::log::info",
        "engine::log::warn",
        "engine::log::error",
        "engine::log::debug",
        "engine::log::trace",
        "engine::baggage::get",
        "engine::baggage::set",
        "engine::baggage::get_all",
    }
)
DEFAULT_NS = "default"
DEFAULT_AUTH_TIMEOUT_MS = 5_000
# Verdicts a session remembers before it starts over (calls to ever-new ids
# must not grow memory without bound).
VERDICT_CACHE_SIZE = 4096

FORBIDDEN = "FORBIDDEN"


class RbacError(ValueError):
    """A filter or auth result that cannot be used; the message says what to fix."""


# --------------------------------------------------------------------------- filters


def compile_glob(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters (``::`` included); anchored at both ends."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def unwrap_match(text: str) -> str | None:
    """The pattern of ``match("p")`` / ``match('p')``, or None for any other string."""
    t = text.strip()
    if len(t) >= 9 and t.startswith("match(") and t.endswith(")") and t[6] == t[-2] and t[6] in "\"'":
        return t[7:-2]
    return None


@dataclass(frozen=True, slots=True)
class FunctionFilter:
    """One ``expose_functions`` entry: an id glob or metadata conditions, in one namespace."""

    source: str
    pattern: re.Pattern[str] | None = None
    # key -> exact JSON value, or a compiled glob for string values
    metadata: tuple[tuple[str, Any, re.Pattern[str] | None], ...] = ()
    namespace: str = DEFAULT_NS

    def matches(self, function_id: str, namespace: str, metadata: Any) -> bool:
        if namespace != self.namespace:
            return False
        if self.pattern is not None:
            return self.pattern.fullmatch(function_id) is not None
        if not isinstance(metadata, dict):
            return False
        for key, exact, glob in self.metadata:
            if key not in metadata:
                return False
            value = metadata[key]
            if glob is not None:
                if not isinstance(value, str) or glob.fullmatch(value) is None:
                    return False
            elif not _same_json(value, exact):
                return False
        return True


def _same_json(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


_FILTER_KEYS = ("match", "metadata", "namespace")


def parse_filter(value: object) -> FunctionFilter:
    """A filter from config: ``match("api::*")``, ``{match: "api::*"}`` or ``{metadata: {...}}``."""
    if isinstance(value, str):
        pattern = unwrap_match(value)
        if pattern is None:
            raise RbacError(f"expected match(\"pattern\") or a mapping with 'metadata', found {value!r}")
        return FunctionFilter(source=value.strip(), pattern=compile_glob(pattern))
    if not isinstance(value, Mapping):
        raise RbacError(f"expected match(\"pattern\") or a mapping with 'metadata', found {value!r}")
    unknown = [str(k) for k in value if k not in _FILTER_KEYS]
    if unknown:
        raise RbacError(f"unknown key '{unknown[0]}' in a filter; valid: {', '.join(_FILTER_KEYS)}")
    namespace = value.get("namespace", DEFAULT_NS)
    if not isinstance(namespace, str) or not namespace.strip():
        raise RbacError(f"namespace must be a non-empty string, found {namespace!r}")
    has_match, has_meta = value.get("match") is not None, value.get("metadata") is not None
    if has_match == has_meta:
        raise RbacError("a filter has exactly one of 'match' or 'metadata'")
    if has_match:
        raw = value["match"]
        if not isinstance(raw, str):
            raise RbacError(f"'match' must be a string pattern, found {raw!r}")
        pattern = unwrap_match(raw)
        return FunctionFilter(
            source=f"match({raw!r})",
            pattern=compile_glob(raw if pattern is None else pattern),
            namespace=namespace,
        )
    meta = value["metadata"]
    if not isinstance(meta, Mapping) or not meta:
        raise RbacError("'metadata' must be a non-empty mapping of key: value")
    conditions = []
    for key, expected in meta.items():
        glob = unwrap_match(expected) if isinstance(expected, str) else None
        conditions.append((str(key), expected, compile_glob(glob) if glob is not None else None))
    return FunctionFilter(source=f"metadata {dict(meta)!r}", metadata=tuple(conditions), namespace=namespace)


# --------------------------------------------------------------------------- policy and grants


@dataclass(frozen=True, slots=True, kw_only=True)
class RbacPolicy:
    """A listener's ``rbac:`` block, compiled."""

    auth_function_id: str | None = None
    expose_functions: tuple[FunctionFilter, ...] = ()
    on_function_registration_function_id: str | None = None
    on_trigger_registration_function_id: str | None = None
    on_trigger_type_registration_function_id: str | None = None
    auth_timeout_ms: int = DEFAULT_AUTH_TIMEOUT_MS

    def exposes(self, function_id: str, namespace: str, metadata: Any) -> bool:
        return any(f.matches(function_id, namespace, metadata) for f in self.expose_functions)


@dataclass(frozen=True, slots=True, kw_only=True)
class Grants:
    """What the auth function granted one connection (its ``AuthResult``)."""

    allowed_functions: frozenset[str] = frozenset()
    forbidden_functions: frozenset[str] = frozenset()
    namespaces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allowed_trigger_types: frozenset[str] | None = None  # None: any type
    allow_trigger_type_registration: bool = True
    allow_function_registration: bool = True
    function_registration_prefix: str | None = None
    context: Any = field(default_factory=dict)


# Grants of a listener without an auth function: only the filters gate calls.
OPEN_GRANTS = Grants()


def _str_list(result: Mapping[str, Any], key: str) -> frozenset[str]:
    value = result.get(key)
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RbacError(f"AuthResult.{key} must be a list of function ids (strings), found {value!r}"[:300])
    return frozenset(value)


def _flag(result: Mapping[str, Any], key: str, default: bool) -> bool:
    value = result.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RbacError(f"AuthResult.{key} must be true or false, found {value!r}"[:300])
    return value


def parse_auth_result(result: object) -> Grants:
    """The grants of an auth function's answer; RbacError if it is not an ``AuthResult``."""
    if not isinstance(result, Mapping):
        raise RbacError(f"expected an AuthResult object, got {type(result).__name__}")
    types = result.get("allowed_trigger_types")
    allowed_types = None if types is None else _str_list(result, "allowed_trigger_types")
    prefix = result.get("function_registration_prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix.strip() or "*" in prefix):
        raise RbacError(f"AuthResult.function_registration_prefix must be a non-empty id, found {prefix!r}")
    raw_ns = result.get("namespaces") or {}
    if not isinstance(raw_ns, Mapping):
        raise RbacError("AuthResult.namespaces must map a namespace to a list of function ids")
    namespaces: dict[str, tuple[str, ...]] = {}
    for ns, ids in raw_ns.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise RbacError(f"AuthResult.namespaces.{ns} must be a list of function ids")
        namespaces[str(ns)] = tuple(ids)
    context = result.get("context")
    return Grants(
        allowed_functions=_str_list(result, "allowed_functions"),
        forbidden_functions=_str_list(result, "forbidden_functions"),
        namespaces=namespaces,
        allowed_trigger_types=allowed_types,
        # An authenticated session must be granted trigger type registration explicitly.
        allow_trigger_type_registration=_flag(result, "allow_trigger_type_registration", False),
        allow_function_registration=_flag(result, "allow_function_registration", True),
        function_registration_prefix=prefix.strip() if isinstance(prefix, str) else None,
        context={} if context is None else context,
    )


def _grant_covers(grant: str, function_id: str) -> bool:
    pattern = unwrap_match(grant)
    raw = grant if pattern is None else pattern
    return raw == function_id or ("*" in raw and compile_glob(raw).fullmatch(function_id) is not None)


# --------------------------------------------------------------------------- session


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a call is refused; ``message`` is all the caller learns."""

    function_id: str
    explicit: bool  # named by forbidden_functions (vs merely not exposed)

    @property
    def message(self) -> str:
        hint = (
            "in this connection's forbidden_functions"
            if self.explicit
            else "not in this listener's rbac.expose_functions"
        )
        return f"function '{self.function_id}' not allowed ({hint})"


class Session:
    """One connection's access: the listener's policy, its grants, remembered verdicts.

    ``policy`` is None on a listener that has a middleware but no ``rbac``:
    then every call is allowed and only the middleware applies.
    """

    __slots__ = ("_verdicts", "cleared", "grants", "listener", "middleware_function_id", "policy", "renamed")

    def __init__(
        self,
        policy: RbacPolicy | None,
        grants: Grants = OPEN_GRANTS,
        *,
        middleware_function_id: str | None = None,
        listener: str = "",
    ) -> None:
        self.policy = policy
        self.grants = grants
        self.middleware_function_id = middleware_function_id
        self.listener = listener
        # id the worker registered -> id it got (prefix, hook rewrite)
        self.renamed: dict[str, str] = {}
        # (namespace, function id) -> (the Function record judged, verdict); a
        # re-registered function is a new record, so its verdict is redone.
        self._verdicts: dict[tuple[str, str], tuple[object, Denial | None]] = {}
        # default-namespace function id -> the record it was allowed for (the
        # engine's per-call fast path; same bound as the verdicts)
        self.cleared: dict[str, object] = {}

    @property
    def context(self) -> Any:
        return self.grants.context

    def check(
        self, function_id: str, namespace: str, function: object, metadata: Raw | UnsetType | Any
    ) -> Denial | None:
        """None if the call may go ahead, else the Denial. ``function`` is the
        record it would reach (None if none), ``metadata`` that record's metadata."""
        key = (namespace, function_id)
        hit = self._verdicts.get(key)
        if hit is not None and hit[0] is function:
            return hit[1]
        verdict = self._judge(function_id, namespace, metadata)
        if len(self._verdicts) >= VERDICT_CACHE_SIZE:
            self._verdicts.clear()
            self.cleared.clear()
        self._verdicts[key] = (function, verdict)
        if namespace == DEFAULT_NS and function is not None:
            if verdict is None:
                self.cleared[function_id] = function
            else:
                self.cleared.pop(function_id, None)
        return verdict

    def _judge(self, function_id: str, namespace: str, metadata: Any) -> Denial | None:
        grants = self.grants
        if function_id in grants.forbidden_functions:
            return Denial(function_id, explicit=True)
        if self.policy is None:
            return None
        scoped = grants.namespaces.get(namespace)
        if scoped is not None and any(_grant_covers(g, function_id) for g in scoped):
            return None
        if namespace == DEFAULT_NS and function_id in grants.allowed_functions:
            return None
        if function_id in INFRASTRUCTURE_FUNCTIONS:
            return None
        if self.policy.exposes(function_id, namespace, decode_metadata(metadata)):
            return None
        return Denial(function_id, explicit=False)

    def may_register_trigger_type(self) -> bool:
        return self.grants.allow_trigger_type_registration

    def may_bind(self, trigger_type: str) -> bool:
        allowed = self.grants.allowed_trigger_types
        return allowed is None or trigger_type in allowed

    def registered_id(self, function_id: str) -> str:
        """The id a function registered by this connection gets (prefixed if granted)."""
        prefix = self.grants.function_registration_prefix
        return f"{prefix}::{function_id}" if prefix else function_id


def decode_metadata(metadata: Any) -> Any:
    if isinstance(metadata, Raw):
        try:
            return msgspec.json.decode(metadata)
        except msgspec.DecodeError:
            return None
    return metadata if isinstance(metadata, dict) else None


# --------------------------------------------------------------------------- inputs and hook results


def auth_input(headers: Mapping[str, str], query: str, ip_address: str) -> dict[str, Any]:
    """``AuthInput``: lower-case header names, every query key to its list of values."""
    return {
        "headers": {k.lower(): v for k, v in headers.items()},
        "query_params": parse_qs(query, keep_blank_values=True),
        "ip_address": ip_address,
    }


def _mapped_str(result: Mapping[str, Any], key: str, current: str) -> str:
    value = result.get(key)
    return value if isinstance(value, str) and value else current


@dataclass(frozen=True, slots=True)
class FunctionRegistration:
    function_id: str
    description: str | None
    metadata: Any


def apply_function_hook(result: object, current: FunctionRegistration) -> FunctionRegistration | None:
    """The registration after the hook's answer; None (denied) unless it answered an object."""
    if not isinstance(result, Mapping):
        return None
    desc = result.get("description")
    return FunctionRegistration(
        function_id=_mapped_str(result, "function_id", current.function_id),
        description=desc if isinstance(desc, str) else current.description,
        metadata=result["metadata"] if result.get("metadata") is not None else current.metadata,
    )


@dataclass(frozen=True, slots=True)
class TriggerRegistration:
    trigger_id: str
    trigger_type: str
    function_id: str
    config: Any


def apply_trigger_hook(result: object, current: TriggerRegistration) -> TriggerRegistration | None:
    if not isinstance(result, Mapping):
        return None
    return TriggerRegistration(
        trigger_id=_mapped_str(result, "trigger_id", current.trigger_id),
        trigger_type=_mapped_str(result, "trigger_type", current.trigger_type),
        function_id=_mapped_str(result, "function_id", current.function_id),
        config=result.get("config", current.config),
    )


def apply_trigger_type_hook(result: object, type_id: str, description: str) -> tuple[str, str] | None:
    if not isinstance(result, Mapping):
        return None
    return _mapped_str(result, "trigger_type_id", type_id), _mapped_str(result, "description", description)
