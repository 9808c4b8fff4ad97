"""The ``state::update`` op engine (docs/state.md §4): pure, no I/O.

Two steps, so the State module can fail a malformed request before touching
storage and then run the (possibly retried) mutation cheaply:

* :func:`parse_ops` strictly decodes the raw ``ops`` array into :class:`Op`
  objects, raising :class:`OpsDecodeError` for anything the reference would
  refuse to deserialize. Checks that depend only on the op itself (path
  limits, merge-value limits) are evaluated here once and stored on the op.
* :func:`apply_ops` runs the ops in order against a value and returns the new
  value plus the per-op errors.

``apply_ops`` never mutates its inputs. It works copy-on-write: a container is
shallow-copied the first time an op changes it, so an update touching one key
costs a copy of the root dict (plus the dicts along the touched path), not a
deep copy of the value. The result may therefore share untouched sub-values
with ``current`` and with the ops' values; that is safe as long as callers
treat JSON values as immutable, which the State module does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

__all__ = ["DOC_URL", "Op", "OpsDecodeError", "apply_ops", "parse_ops"]

DOC_URL: Final = "https://iii.dev/docs/workers/iii-state#error-codes"

MAX_PATH_DEPTH: Final = 32
MAX_SEGMENT_BYTES: Final = 256
MAX_VALUE_DEPTH: Final = 16
MAX_VALUE_KEYS: Final = 1024
# Listed in byte order: the reference reports the first offending merge key of
# its sorted map, so checking sinks in this order names the same key.
PROTO_KEYS: Final = ("__proto__", "constructor", "prototype")
_PROTO_SET: Final = frozenset(PROTO_KEYS)

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_U64_MAX: Final = 2**64 - 1

_OP_TYPES: Final = ("set", "merge", "increment", "decrement", "append", "remove")
_MISSING: Final[Any] = object()


class OpsDecodeError(Exception):
    """The ``ops`` array cannot be decoded; the whole call fails.

    The caller maps it to ``deserialization_error``. ``message`` mimics the
    reference's serde wording (e.g. ``missing field `by```).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# gc=False: an Op only holds JSON values and strings, so it can never be part
# of a reference cycle; skipping GC tracking makes building many of them cheaper.
class Op(msgspec.Struct, frozen=True, gc=False):
    """One decoded update op.

    ``path`` is the literal key of set/increment/decrement/remove (``""`` =
    root; always ``""`` for merge/append). ``segments`` is the normalised path
    used for validation and traversal (``()`` = root). ``invalid`` holds the
    precomputed ``(code, message)`` when the op fails its own validation.
    """

    kind: str
    path: str
    segments: tuple[str, ...]
    value: Any = None
    by: int = 0
    invalid: tuple[str, str] | None = None


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _unexpected(value: object) -> str:
    """Describe a JSON value the way serde's ``Unexpected`` does."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean `{'true' if value else 'false'}`"
    if type(value) is int:
        return f"integer `{value}`"
    if type(value) is float:
        return f"floating point `{value!r}`"
    if type(value) is str:
        return f'string "{value}"'
    if type(value) is list:
        return "sequence"
    return "map"


def _field_path(raw: dict[str, Any]) -> str:
    """The required single-key ``path`` of set/increment/decrement/remove."""
    path = raw.get("path", _MISSING)
    if path is _MISSING:
        raise OpsDecodeError("missing field `path`")
    if type(path) is not str:
        raise OpsDecodeError(f"invalid type: {_unexpected(path)}, expected a string")
    return path


def _merge_path(raw: dict[str, Any]) -> tuple[str, ...]:
    """The optional merge/append path, normalised to segments (``()`` = root)."""
    path = raw.get("path")
    if path is None:
        return ()
    if type(path) is str:
        return (path,) if path else ()
    if type(path) is list and all(type(seg) is str for seg in path):
        return tuple(path)
    raise OpsDecodeError("data did not match any variant of untagged enum MergePath")


def _required_value(raw: dict[str, Any]) -> Any:
    value = raw.get("value", _MISSING)
    if value is _MISSING:
        raise OpsDecodeError("missing field `value`")
    return value


def _by(raw: dict[str, Any]) -> int:
    """``by`` must be a JSON integer in i64 range (no bools, no 2.0)."""
    by = raw.get("by", _MISSING)
    if by is _MISSING:
        raise OpsDecodeError("missing field `by`")
    if type(by) is not int:
        raise OpsDecodeError(f"invalid type: {_unexpected(by)}, expected i64")
    if not _I64_MIN <= by <= _I64_MAX:
        raise OpsDecodeError(f"invalid value: integer `{by}`, expected i64")
    return by


def _path_error(kind: str, segments: tuple[str, ...]) -> tuple[str, str] | None:
    """§4.4 path checks, in order; the first failure wins."""
    if len(segments) > MAX_PATH_DEPTH:
        return (
            f"{kind}.path.too_deep",
            f"Path depth {len(segments)} exceeds maximum of {MAX_PATH_DEPTH}",
        )
    for seg in segments:
        if not seg:
            return f"{kind}.path.empty_segment", "Path contains an empty segment"
        # A UTF-8 char is at most 4 bytes, so short strings need no encoding.
        if len(seg) * 4 > MAX_SEGMENT_BYTES:
            size = len(seg.encode("utf-8", "surrogatepass"))
            if size > MAX_SEGMENT_BYTES:
                return (
                    f"{kind}.path.segment_too_long",
                    f"Path segment of {size} bytes exceeds maximum of {MAX_SEGMENT_BYTES}",
                )
        if seg in _PROTO_SET:
            return (
                f"{kind}.path.proto_polluted",
                f"Path segment '{seg}' is not allowed (prototype pollution).",
            )
    return None


def _json_depth(value: Any) -> int:
    """Nesting depth: scalar 0, ``{}``/``[]`` 1, containers 1 + deepest child.

    Iterative so that hostile, deeply nested values cannot hit the recursion
    limit.
    """
    if type(value) is not dict and type(value) is not list:
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return deepest


def _merge_value_error(value: Any) -> tuple[str, str] | None:
    """§4.4 merge value checks, in order; the first failure wins."""
    if type(value) is not dict:
        return "merge.value.not_an_object", "Merge value must be a JSON object"
    if len(value) > MAX_VALUE_KEYS:
        return (
            "merge.value.too_many_keys",
            f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}",
        )
    for sink in PROTO_KEYS:
        if sink in value:
            return (
                "merge.value.proto_polluted",
                f'Merge value top-level key "{sink}" is a prototype-pollution sink',
            )
    depth = _json_depth(value)
    if depth > MAX_VALUE_DEPTH:
        return (
            "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}",
        )
    return None


def _field_op(kind: str, path: str, value: Any = None, by: int = 0) -> Op:
    segments = (path,) if path else ()
    return Op(kind, path, segments, value, by, _path_error(kind, segments))


def _parse_set(raw: dict[str, Any]) -> Op:
    # A missing and an explicit null value both mean JSON null.
    return _field_op("set", _field_path(raw), raw.get("value"))


def _parse_merge(raw: dict[str, Any]) -> Op:
    segments = _merge_path(raw)
    value = _required_value(raw)
    invalid = _path_error("merge", segments) or _merge_value_error(value)
    return Op("merge", "", segments, value, 0, invalid)


def _parse_increment(raw: dict[str, Any]) -> Op:
    return _field_op("increment", _field_path(raw), by=_by(raw))


def _parse_decrement(raw: dict[str, Any]) -> Op:
    return _field_op("decrement", _field_path(raw), by=_by(raw))


def _parse_append(raw: dict[str, Any]) -> Op:
    segments = _merge_path(raw)
    value = _required_value(raw)
    return Op("append", "", segments, value, 0, _path_error("append", segments))


def _parse_remove(raw: dict[str, Any]) -> Op:
    return _field_op("remove", _field_path(raw))


_PARSERS: Final[dict[str, Callable[[dict[str, Any]], Op]]] = {
    "set": _parse_set,
    "merge": _parse_merge,
    "increment": _parse_increment,
    "decrement": _parse_decrement,
    "append": _parse_append,
    "remove": _parse_remove,
}


def _parse_op(raw: object) -> Op:
    if type(raw) is not dict:
        raise OpsDecodeError(f"invalid type: {_unexpected(raw)}, expected internally tagged enum UpdateOp")
    kind = raw.get("type", _MISSING)
    if kind is _MISSING:
        raise OpsDecodeError("missing field `type`")
    if type(kind) is not str:
        raise OpsDecodeError(f"invalid type: {_unexpected(kind)}, expected variant identifier")
    parser = _PARSERS.get(kind)
    if parser is None:
        expected = ", ".join(f"`{name}`" for name in _OP_TYPES)
        raise OpsDecodeError(f"unknown variant `{kind}`, expected one of {expected}")
    return parser(raw)


def parse_ops(raw_ops: object) -> list[Op]:
    """Strictly decode the request's ``ops`` value (§4.1).

    Raises :class:`OpsDecodeError` if it is not an array or if any op is
    malformed (one bad op rejects the whole request). Unknown fields are ignored.
    """
    if type(raw_ops) is not list:
        raise OpsDecodeError(f"invalid type: {_unexpected(raw_ops)}, expected a sequence")
    return [_parse_op(raw) for raw in raw_ops]


# --------------------------------------------------------------------------
# Application
# --------------------------------------------------------------------------


class _OpFailed(Exception):
    """Raised by an op handler: record (code, message) and skip the op."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


def _type_name(value: object) -> str:
    """The JSON type name used in error messages."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    kind = type(value)
    if kind is int or kind is float:
        return "number"
    if kind is str:
        return "string"
    if kind is list:
        return "array"
    return "object"


class _Work(msgspec.Struct):
    """The working value plus copy-on-write bookkeeping for one apply_ops call.

    A Struct: one is built per update, and its constructor runs in C.
    """

    root: Any
    # While set, root-targeting increment/decrement/append treat the root
    # as missing (§4.2 point 4).
    absent: bool
    # Containers created during this call, by id. Only these may be mutated
    # in place; holding the objects keeps their ids from being reused while
    # the call runs. (msgspec gives every instance its own empty dict.)
    owned: dict[int, object] = {}

    def adopt(self, container: Any) -> Any:
        """Register a container created during this call as mutable."""
        self.owned[id(container)] = container
        return container

    def writable(self, container: Any) -> Any:
        """``container`` itself if owned, else an owned shallow copy of it."""
        if id(container) in self.owned:
            return container
        return self.adopt(container.copy())

    def root_dict(self) -> dict[str, Any]:
        """The root as a mutable dict; the caller checked it is an object."""
        root: dict[str, Any] = self.root
        if id(root) not in self.owned:  # writable(), inlined: every op on a key's field comes here
            root = self.root = root.copy()
            self.owned[id(root)] = root
        return root

    def child_dict(self, parent: dict[str, Any], key: str) -> dict[str, Any]:
        """Mutable ``parent[key]``, created or replacing a non-object as ``{}``."""
        child = parent.get(key)
        writable: dict[str, Any] = self.writable(child) if type(child) is dict else self.adopt({})
        parent[key] = writable
        return writable


def _not_object(kind: str, label: str, target: object) -> _OpFailed:
    return _OpFailed(
        f"{kind}.target_not_object",
        f"Cannot {kind} at path '{label}': target is {_type_name(target)}, expected object.",
    )


def _apply_set(work: _Work, op: Op) -> None:
    if not op.path:
        work.root = op.value
    elif type(work.root) is dict:
        work.root_dict()[op.path] = op.value
    else:
        raise _not_object("set", op.path, work.root)


def _apply_merge(work: _Work, op: Op) -> None:
    if not op.segments:
        # The reference silently skips a root merge onto a non-object.
        if type(work.root) is dict:
            work.root_dict().update(op.value)
        return
    # A path merge replaces a non-object root (and intermediates) with {}.
    target = work.root_dict() if type(work.root) is dict else work.adopt({})
    work.root = target
    for seg in op.segments:
        target = work.child_dict(target, seg)
    target.update(op.value)


def _add(number: object, delta: int) -> object | None:
    """``number + delta`` per the reference's i64/u64/f64 rules; None if impossible."""
    if type(number) is int:
        if _I64_MIN <= number <= _U64_MAX:
            result = number + delta
            # The reference only holds integers that fit i64 or u64.
            return result if _I64_MIN <= result <= _U64_MAX else None
        # Out-of-range integers are doubles in the reference.
        try:
            number = float(number)
        except OverflowError:
            return None
    if type(number) is float:
        result_f = number + float(delta)
        return result_f if math.isfinite(result_f) else None
    return None


def _apply_numeric(work: _Work, op: Op) -> None:
    """increment (adds ``by``) and decrement (adds ``-by``)."""
    kind = op.kind
    # -by is exact in Python (-i64::MIN = 2^63, as in the reference).
    delta = op.by if kind == "increment" else -op.by
    if not op.path:
        if work.absent:
            work.root = delta
            return
        result = _add(work.root, delta)
        if result is None:
            raise _OpFailed(
                f"{kind}.not_number",
                f"Expected number at path 'root', got {_type_name(work.root)}.",
            )
        work.root = result
        return
    root = work.root
    if type(root) is not dict:
        raise _not_object(kind, op.path, root)
    current = root.get(op.path, _MISSING)
    if current is _MISSING:
        work.root_dict()[op.path] = delta
        return
    result = _add(current, delta)
    if result is None:
        raise _OpFailed(
            f"{kind}.not_number",
            f"Expected number at path '{op.path}', got {_type_name(current)}.",
        )
    work.root_dict()[op.path] = result


def _first_append(work: _Work, value: Any) -> Any:
    """What appending ``value`` to null/missing yields: a string stays a string."""
    return value if type(value) is str else work.adopt([value])


def _appended(work: _Work, target: Any, value: Any, label: str) -> Any:
    """The result of appending ``value`` to an existing ``target``."""
    if type(target) is list:
        items = work.writable(target)
        items.append(value)
        return items
    if type(target) is str:
        if type(value) is not str:
            raise _OpFailed(
                "append.type_mismatch",
                f"Expected string append value at path '{label}', got {_type_name(value)}.",
            )
        return target + value
    if target is None:
        return _first_append(work, value)
    raise _OpFailed(
        "append.type_mismatch",
        f"Cannot append at path '{label}': target is {_type_name(target)}, "
        "expected array, string, null, or missing field.",
    )


def _apply_append(work: _Work, op: Op) -> None:
    segments = op.segments
    value = op.value
    if not segments:
        # On an absent key the root counts as null, not as the default {}.
        target = None if work.absent else work.root
        work.root = _appended(work, target, value, "root")
        return
    if type(work.root) is not dict:
        raise _not_object("append", f"[{', '.join(segments)}]", work.root)
    *parents, leaf = segments
    if parents:
        parent = work.root_dict()
        for seg in parents:
            parent = work.child_dict(parent, seg)
        current = parent.get(leaf, _MISSING)
        if current is _MISSING:
            # A missing nested leaf always becomes an array, even for strings.
            parent[leaf] = work.adopt([value])
        else:
            parent[leaf] = _appended(work, current, value, leaf)
        return
    current = work.root.get(leaf, _MISSING)
    new = _first_append(work, value) if current is _MISSING else _appended(work, current, value, leaf)
    work.root_dict()[leaf] = new


def _apply_remove(work: _Work, op: Op) -> None:
    if not op.path:
        # The key keeps existing, holding null.
        work.root = None
        return
    root = work.root
    if type(root) is not dict:
        raise _not_object("remove", op.path, root)
    if op.path in root:
        del work.root_dict()[op.path]


_HANDLERS: Final[dict[str, Callable[[_Work, Op], None]]] = {
    "set": _apply_set,
    "merge": _apply_merge,
    "increment": _apply_numeric,
    "decrement": _apply_numeric,
    "append": _apply_append,
    "remove": _apply_remove,
}


def apply_ops(current: object, exists: bool, ops: Sequence[Op]) -> tuple[object, list[dict[str, Any]]]:
    """Apply ``ops`` in order (§4.2) and return ``(new_value, errors)``.

    ``current`` is the stored value, ignored when ``exists`` is False (the
    start value is then ``{}`` with the absent-default flag set). A failing op
    records one error and is skipped; the others still apply. Neither
    ``current`` nor the ops are mutated.
    """
    work = _Work(current, False) if exists else _Work(None, True)
    if not exists:
        work.root = work.adopt({})
    errors: list[dict[str, Any]] = []
    for index, op in enumerate(ops):
        failure = op.invalid
        if failure is None:
            try:
                _HANDLERS[op.kind](work, op)
            except _OpFailed as exc:
                failure = (exc.code, exc.message)
            else:
                # Any op that completes, even as a silent no-op, ends the
                # absent-default behaviour.
                work.absent = False
                continue
        errors.append({"op_index": index, "code": failure[0], "message": failure[1], "doc_url": DOC_URL})
    return work.root, errors
