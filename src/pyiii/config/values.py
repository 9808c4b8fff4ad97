"""Readers for config values that name the file and the entry in every error.

A module validates its own ``config:`` block through :class:`Block`: each
reader checks one key and raises :class:`~pyiii.errors.ConfigError` with a
one-line message (file, location, what was found, what would be valid).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, TypeAlias, TypeVar

from pyiii.errors import ConfigError

T = TypeVar("T")
# Block has readers named int/str/bool/list; these keep the builtins nameable there.
Int: TypeAlias = int
Str: TypeAlias = str
Bool: TypeAlias = bool
List: TypeAlias = list

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
WS_SCHEMES = ("ws://", "wss://")


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def found(value: object) -> str:
    """How a value is shown in a message: ``'abc' (string)``, ``a mapping``."""
    if isinstance(value, Mapping | list):
        return f"a {type_name(value)}"
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    if value is None:
        text = "null"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type_name(value)})"


def suggest(word: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


class Ctx:
    """Carries the file name so every error can name it, and collects warnings."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def fail(self, where: str, message: str) -> NoReturn:
        prefix = f"{self.source}: {where}: " if where else f"{self.source}: "
        raise ConfigError(prefix + message)

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {where}: {message}")

    def bad_name(self, where: str, kind: str, name: str, valid: Iterable[str]) -> NoReturn:
        valid = list(valid)
        self.fail(where, f"unknown {kind} '{name}'; {suggest(name, valid)}valid: {', '.join(valid)}")

    def check_keys(self, where: str, mapping: Mapping[str, Any], valid: Iterable[str]) -> None:
        valid = tuple(valid)
        for key in mapping:
            if key not in valid:
                at = f"{where}.{key}" if where else "top level"
                self.bad_name(at, "key", str(key), valid)


def as_mapping(ctx: Ctx, where: str, value: object) -> dict[str, Any]:
    """A mapping with string keys; ``null`` (an empty ``config:``) reads as ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.fail(where, f"expected a mapping, found {found(value)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            ctx.fail(where, f"keys must be strings, found key {found(key)}")
        out[key] = item
    return out


_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def as_int(
    ctx: Ctx, where: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer; numeric strings (``"49134"``) are accepted, booleans are not."""
    result: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        result = int(value.strip())
    if result is None:
        ctx.fail(where, f"expected an integer, found {found(value)}")
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        if maximum is None:
            valid = f"an integer >= {minimum}"
        elif minimum is None:
            valid = f"an integer <= {maximum}"
        else:
            valid = f"an integer in {minimum}..{maximum}"
        ctx.fail(where, f"{result} is out of range; valid: {valid}")
    return result


def as_bool(ctx: Ctx, where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    ctx.fail(where, f"expected a boolean, found {found(value)}; valid: true, false")


def as_str(ctx: Ctx, where: str, value: object, *, nonempty: bool = True) -> str:
    if not isinstance(value, str):
        ctx.fail(where, f"expected a string, found {found(value)}")
    if nonempty and not value.strip():
        ctx.fail(where, "expected a non-empty string, found ''")
    return value


def as_url(ctx: Ctx, where: str, value: object, schemes: tuple[str, ...]) -> str:
    url = as_str(ctx, where, value).strip()
    if not url.startswith(schemes):
        ctx.fail(where, f"expected a URL, found {found(value)}; valid schemes: {', '.join(schemes)}")
    return url


class Block:
    """One mapping of the config file, with its location for messages.

    Readers return the default when a key is absent or ``null``.
    """

    def __init__(self, ctx: Ctx, where: Str, data: object) -> None:
        self.ctx = ctx
        self.where = where
        self.data = as_mapping(ctx, where, data)

    def at(self, key: Str) -> Str:
        return f"{self.where}.{key}" if self.where else key

    def __contains__(self, key: Str) -> Bool:
        return self.data.get(key) is not None

    def get(self, key: Str) -> Any:
        return self.data.get(key)

    def keys(self, valid: Iterable[Str]) -> None:
        """Refuse any key not in ``valid`` (with a did-you-mean)."""
        self.ctx.check_keys(self.where, self.data, valid)

    def fail(self, message: Str, key: Str | None = None) -> NoReturn:
        self.ctx.fail(self.at(key) if key else self.where, message)

    def warn(self, message: Str, key: Str | None = None) -> None:
        self.ctx.warn(self.at(key) if key else self.where, message)

    def int(self, key: Str, default: Int, *, minimum: Int | None = None, maximum: Int | None = None) -> Int:
        value = self.opt_int(key, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def opt_int(self, key: Str, *, minimum: Int | None = None, maximum: Int | None = None) -> Int | None:
        if key not in self:
            return None
        return as_int(self.ctx, self.at(key), self.data[key], minimum=minimum, maximum=maximum)

    def bool(self, key: Str, default: Bool) -> Bool:
        return default if key not in self else as_bool(self.ctx, self.at(key), self.data[key])

    def str(self, key: Str, default: Str, *, nonempty: Bool = True) -> Str:
        value = self.opt_str(key, nonempty=nonempty)
        return default if value is None else value

    def opt_str(self, key: Str, *, nonempty: Bool = True) -> Str | None:
        if key not in self:
            return None
        return as_str(self.ctx, self.at(key), self.data[key], nonempty=nonempty)

    def url(self, key: Str, default: Str, schemes: tuple[Str, ...]) -> Str:
        return default if key not in self else as_url(self.ctx, self.at(key), self.data[key], schemes)

    def choice(self, key: Str, default: T, valid: Mapping[Str, T], *, kind: Str | None = None) -> T:
        """One of the names in ``valid`` (mapped to its value); ``kind`` names it in errors."""
        if key not in self:
            return default
        value = self.data[key]
        if not isinstance(value, Str) or value.strip() not in valid:
            name = value if isinstance(value, Str) else found(value)
            self.ctx.bad_name(self.at(key), kind or key, name, valid)
        return valid[value.strip()]

    def block(self, key: Str) -> Block:
        """A nested mapping (absent or ``null`` reads as empty)."""
        return Block(self.ctx, self.at(key), self.data.get(key))

    def list(self, key: Str) -> List[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, List):
            self.fail(f"expected a list, found {found(value)}", key)
        return value

    def blocks(self, key: Str) -> List[Block]:
        """A list of mappings."""
        return [Block(self.ctx, f"{self.at(key)}[{i}]", item) for i, item in enumerate(self.list(key))]
