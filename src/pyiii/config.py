"""Load ``iii-config.yaml`` (both shapes) into one typed model.

Two file shapes are accepted (shared/spec/protocol.md §8, state.md §7):

* the current one, a ``workers:`` list (``modules:`` is a legacy alias) of
  ``{name, config?, image?}`` entries, e.g. ``name: iii-state``;
* the old one (docs 0.10, the State guide), a top-level ``port`` and a
  ``modules:`` list of ``{class, config}`` entries, e.g.
  ``class: modules::state::StateModule``.

Both land in :class:`EngineConfig`. Only the WebSocket listener
(``iii-worker-manager``) and the State module (``iii-state``) are implemented by
pyiii; the other known modules are accepted, recorded and reported in
:attr:`EngineConfig.warnings`. Anything unknown, mistyped or ambiguous raises
:class:`~pyiii.errors.ConfigError` with a one-line message naming the file, the
entry, what was found and what would be valid.

``${VAR}`` / ``${VAR:default}`` placeholders are expanded textually before the
YAML is parsed, like the reference engine, except that placeholders inside YAML
comments are left alone. YAML is read with YAML 1.2 scalar rules (only
``true``/``false`` are booleans, ``0755`` is decimal), as the reference engine's
reader does.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from pyiii.errors import ConfigError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EngineConfig",
    "Limits",
    "StateConfig",
    "load_config",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 49134
DEFAULT_FILE_NAMES = ("iii-config.yaml", "config.yaml")

AdapterName = Literal["kv", "redis", "bridge"]
StoreMethod = Literal["in_memory", "file_based"]


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits of the WebSocket listener (``limits:`` under ``iii-worker-manager``).

    ``max_frame_bytes``: largest inbound message (close 1009 beyond it);
    ``max_connections``: worker sockets held at once (more are refused);
    ``max_pending_per_worker``: calls one worker may have waiting on others;
    ``max_nesting_depth``: arrays/objects a payload may nest;
    ``max_send_buffer_bytes``: unsent bytes queued for a worker that does not
    read before it is dropped.
    """

    max_frame_bytes: int = 16 * 1024 * 1024
    max_connections: int = 10_000
    max_pending_per_worker: int = 10_000
    max_nesting_depth: int = 64
    max_send_buffer_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    """Configuration of the State module (``iii-state``).

    ``file_path`` (kv adapter, ``file_based``) is kept exactly as written; a
    relative path is resolved against the process's current working directory
    when the store opens it, not against the config file's directory.
    ``save_interval_ms`` is accepted and recorded but has no effect in pyiii.
    ``max_value_bytes`` is ``None`` for "no limit" (a configured ``0`` also
    means no limit).
    """

    adapter: AdapterName = "kv"
    store_method: StoreMethod = "in_memory"
    file_path: str = "./data/state_store.db"
    save_interval_ms: int | None = None
    triggers_enabled: bool = True
    max_value_bytes: int | None = None
    redis_url: str = "redis://localhost:6379"
    bridge_url: str = "ws://localhost:49134"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Everything the engine needs from the config file.

    ``source`` is the path of the file that was loaded, or ``None`` when no file
    was found and defaults were used. ``state`` is ``None`` when the State
    module is not loaded. ``modules_seen`` lists the canonical names of the
    accepted entries (``iii-state``, ``iii-http#admin``, …) for the startup log;
    ``warnings`` holds one line per accepted-but-ignored setting, to be logged.
    """

    source: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    auth_token: str | None = None
    limits: Limits = field(default_factory=Limits)
    handshake_timeout_ms: int = 10_000
    middleware_function_id: str | None = None
    rbac: dict[str, Any] | None = None
    registration_namespace_grace_ms: int | None = None
    state: StateConfig | None = None
    modules_seen: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- names

WORKER_MANAGER = "iii-worker-manager"
STATE = "iii-state"

# Current names (and their renamed aliases) -> canonical name.
_NAME_TO_CANONICAL: dict[str, str] = {
    "iii-worker-manager": WORKER_MANAGER,
    "iii-state": STATE,
    "state": STATE,
    "iii-http": "iii-http",
    "http": "iii-http",
    "iii-cron": "iii-cron",
    "cron": "iii-cron",
    "iii-queue": "iii-queue",
    "queue": "iii-queue",
    "iii-pubsub": "iii-pubsub",
    "pubsub": "iii-pubsub",
    "iii-stream": "iii-stream",
    "iii-observability": "iii-observability",
    "iii-http-functions": "iii-http-functions",
    "iii-exec": "iii-exec",
    "iii-bridge": "iii-bridge",
    "iii-engine-functions": "iii-engine-functions",
    "configuration": "configuration",
    "iii-telemetry": "iii-telemetry",
}

# Old-shape module classes -> canonical name.
_CLASS_TO_CANONICAL: dict[str, str] = {
    "modules::state::StateModule": STATE,
    "modules::stream::StreamModule": "iii-stream",
    "modules::api::RestApiModule": "iii-http",
    "modules::queue::QueueModule": "iii-queue",
    "modules::cron::CronModule": "iii-cron",
    "modules::pubsub::PubSubModule": "iii-pubsub",
    "modules::observability::OtelModule": "iii-observability",
    "modules::http_functions::HttpFunctionsModule": "iii-http-functions",
    "modules::shell::ExecModule": "iii-exec",
    "modules::bridge_client::BridgeClientModule": "iii-bridge",
    "modules::kv_server::KvServer": "kv_server",
}

_ADAPTER_NAMES: dict[str, AdapterName] = {"kv": "kv", "redis": "redis", "bridge": "bridge"}
_ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::state::adapters::KvStore": "kv",
    "modules::state::adapters::RedisAdapter": "redis",
    "modules::state::adapters::Bridge": "bridge",
    "modules::state::adapters::BridgeAdapter": "bridge",
}
_STORE_METHODS: dict[str, StoreMethod] = {"in_memory": "in_memory", "file_based": "file_based"}

_TOP_LEVEL_KEYS = (
    "workers",
    "modules",
    "registration_namespace_grace_ms",
    "port",
    "host",
    "auth_token",
)
_WORKER_MANAGER_KEYS = (
    "host",
    "port",
    "handshake_timeout_ms",
    "middleware_function_id",
    "rbac",
    "auth_token",
    "limits",
)
_LIMIT_KEYS = (
    "max_frame_bytes",
    "max_connections",
    "max_pending_per_worker",
    "max_nesting_depth",
    "max_send_buffer_bytes",
)
_STATE_KEYS = ("adapter", "triggers_enabled", "max_value_bytes", "save_interval_ms")
_ADAPTER_CONFIG_KEYS: dict[AdapterName, tuple[str, ...]] = {
    "kv": ("store_method", "file_path", "save_interval_ms"),
    "redis": ("redis_url",),
    "bridge": ("bridge_url", "url"),
}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_WS_SCHEMES = ("ws://", "wss://")


# --------------------------------------------------------------------------- errors


def _type_name(value: object) -> str:
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


def _found(value: object) -> str:
    if isinstance(value, Mapping | list):
        return f"a {_type_name(value)}"
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    if value is None:
        text = "null"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_type_name(value)})"


def _suggest(word: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


class _Ctx:
    """Carries the file name so every error can name it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def fail(self, where: str, message: str) -> NoReturn:
        prefix = f"{self.source}: {where}: " if where else f"{self.source}: "
        raise ConfigError(prefix + message)

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {where}: {message}")

    def bad_name(self, where: str, kind: str, found: str, valid: Iterable[str]) -> NoReturn:
        valid = list(valid)
        self.fail(
            where,
            f"unknown {kind} '{found}'; {_suggest(found, valid)}valid: {', '.join(valid)}",
        )

    def check_keys(self, where: str, mapping: Mapping[str, Any], valid: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in valid:
                at = f"{where}.{key}" if where else "top level"
                self.bad_name(at, "key", str(key), valid)


# --------------------------------------------------------------------------- value readers


def _as_mapping(ctx: _Ctx, where: str, value: object) -> dict[str, Any]:
    """A mapping with string keys; ``null`` (an empty ``config:``) reads as ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.fail(where, f"expected a mapping, found {_found(value)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            ctx.fail(where, f"keys must be strings, found key {_found(key)}")
        out[key] = item
    return out


_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def _as_int(
    ctx: _Ctx, where: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer; numeric strings (``"49134"``) are accepted, booleans are not."""
    result: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        result = int(value.strip())
    if result is None:
        ctx.fail(where, f"expected an integer, found {_found(value)}")
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        if maximum is None:
            valid = f"an integer >= {minimum}"
        elif minimum is None:
            valid = f"an integer <= {maximum}"
        else:
            valid = f"an integer in {minimum}..{maximum}"
        ctx.fail(where, f"{result} is out of range; valid: {valid}")
    return result


def _as_bool(ctx: _Ctx, where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    ctx.fail(where, f"expected a boolean, found {_found(value)}; valid: true, false")


def _as_str(ctx: _Ctx, where: str, value: object, *, nonempty: bool = True) -> str:
    if not isinstance(value, str):
        ctx.fail(where, f"expected a string, found {_found(value)}")
    if nonempty and not value.strip():
        ctx.fail(where, "expected a non-empty string, found ''")
    return value


def _as_url(ctx: _Ctx, where: str, value: object, schemes: tuple[str, ...]) -> str:
    url = _as_str(ctx, where, value).strip()
    if not url.startswith(schemes):
        ctx.fail(where, f"expected a URL, found {_found(value)}; valid schemes: {', '.join(schemes)}")
    return url


# --------------------------------------------------------------------------- env placeholders

_PLACEHOLDER = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")
_BLOCK_INDICATOR = re.compile(r"[|>][-+0-9]*\s*(?:#.*)?$")
_ENGINE_VERSION_DEFAULT = "__III_ENGINE_VERSION__"


def _engine_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyiii")
    except Exception:
        return "0.0.0"


def _expand_env(text: str, environ: Mapping[str, str], source: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:default}`` outside YAML comments.

    A ``#`` starts a comment only at the start of a line or after whitespace,
    and never inside a quoted scalar ('...' or "...", which may span lines) or
    inside a block scalar (``|`` / ``>``). Line numbers are preserved.
    """

    def substitute(segment: str, lineno: int) -> str:
        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is None:
                raise ConfigError(
                    f"{source}: line {lineno}: environment variable '{name}' is not set and "
                    f"'{match.group(0)}' has no default; set {name} or write "
                    f"'${{{name}:default}}'"
                )
            if default == _ENGINE_VERSION_DEFAULT:
                return _engine_version()
            return default

        return _PLACEHOLDER.sub(one, segment) if "${" in segment else segment

    out: list[str] = []
    quote: str | None = None  # open quoted scalar carried across lines
    flow_depth = 0  # open [ / { collections, carried across lines
    block_indent: int | None = None  # inside a block scalar whose parent is at this column

    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        body = line.rstrip("\r\n")
        eol = line[len(body) :]
        if block_indent is not None:
            indent = len(body) - len(body.lstrip(" "))
            if not body.strip() or indent > block_indent:
                out.append(substitute(body, lineno) + eol)
                continue
            block_indent = None

        comment_at = len(body)
        prev_sig = ""  # last significant char outside quotes on this line ("" = none yet)
        node_col = len(body) - len(body.lstrip(" "))  # first node after "- " indicators
        seq_col = node_col  # column of the last "- " indicator
        i = 0
        while i < len(body):
            c = body[i]
            if quote is not None:
                if quote == '"' and c == "\\":
                    i += 2
                    continue
                if c == quote:
                    if quote == "'" and body[i + 1 : i + 2] == "'":
                        i += 2  # '' is an escaped quote
                        continue
                    quote = None
                    prev_sig = c
                i += 1
                continue
            if c in " \t":
                i += 1
                continue
            if c == "$" and (placeholder := _PLACEHOLDER.match(body, i)) is not None:
                if prev_sig in ("", "-"):
                    node_col = i
                prev_sig = "}"
                i = placeholder.end()  # its default may hold '#', quotes or braces
                continue
            before = body[i - 1] if i > 0 else " "
            if c == "#" and before in " \t":
                comment_at = i
                break
            if c == "-" and prev_sig in ("", "-") and body[i + 1 : i + 2] in (" ", "\t", ""):
                seq_col, prev_sig = i, "-"
                i += 1
                continue
            if prev_sig in ("", "-"):
                node_col = i
            starts_node = before in " \t[{," and prev_sig in ("", "-", ":", "?", "[", "{", ",")
            if c in "'\"" and starts_node:
                quote = c
            elif c in "[{" and starts_node:
                flow_depth += 1
            elif c in "]}" and flow_depth > 0:
                flow_depth -= 1
            elif c in "|>" and starts_node and flow_depth == 0 and _BLOCK_INDICATOR.match(body, i):
                block_indent = seq_col if prev_sig == "-" else node_col
            prev_sig = c
            i += 1
        out.append(substitute(body[:comment_at], lineno) + body[comment_at:] + eol)
    return "".join(out)


# --------------------------------------------------------------------------- YAML


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and integers (``yes``/``on`` stay strings)."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _INT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Loader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node))
    if text.startswith("0x"):
        return int(text[2:], 16)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 10)


_Yaml12Loader.add_constructor(_INT_TAG, _construct_int)


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # safe: a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{source}: invalid YAML at {where}{problem}") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{source}: invalid YAML: {detail}") from exc


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, *, environ: Mapping[str, str] | None = None) -> EngineConfig:
    """Read the engine config.

    ``path=None`` looks for ``iii-config.yaml``, then ``config.yaml``, in the
    current directory; when neither exists the defaults are used (listener on
    127.0.0.1:49134, State loaded with the kv adapter in memory). An explicit
    ``path`` must exist. ``environ`` (default ``os.environ``) feeds the
    ``${VAR}`` placeholders. Raises :class:`ConfigError` for any problem.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None:
        found = next((Path(n) for n in DEFAULT_FILE_NAMES if Path(n).is_file()), None)
        if found is None:
            return EngineConfig(source=None, state=StateConfig(), modules_seen=[STATE])
        file = found
    else:
        file = Path(path)
        if not file.exists():
            raise ConfigError(f"{file}: config file not found")
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: cannot read config file: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from exc
    return parse_config(text, source=source, environ=env)


def parse_config(
    text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> EngineConfig:
    """Like :func:`load_config` but from text; ``source`` names it in messages."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    ctx = _Ctx(source)
    data = _parse_yaml(_expand_env(text, env, source), source)
    if data is None:
        ctx.warn("", "config file is empty; no modules loaded (iii-state is off)")
        return EngineConfig(source=source, warnings=ctx.warnings)
    if not isinstance(data, Mapping):
        ctx.fail(
            "top level",
            f"expected a mapping, found {_found(data)}; valid keys: {', '.join(_TOP_LEVEL_KEYS)}",
        )
    top = _as_mapping(ctx, "top level", data)
    ctx.check_keys("", top, _TOP_LEVEL_KEYS)
    return _Builder(ctx, top).build()


class _Builder:
    def __init__(self, ctx: _Ctx, top: dict[str, Any]) -> None:
        self.ctx = ctx
        self.top = top
        self.seen: list[str] = []
        self.first_by_canonical: dict[str, str] = {}  # canonical (+suffix) -> name as written
        self.state: StateConfig | None = None
        self.manager: dict[str, Any] | None = None
        self.manager_where = ""

    def build(self) -> EngineConfig:
        ctx, top = self.ctx, self.top
        if "workers" in top and "modules" in top:
            ctx.fail(
                "top level",
                "both 'workers' and 'modules' are present; 'modules' is an alias of 'workers', use only one",
            )
        list_key = "workers" if "workers" in top else "modules"
        entries = top.get(list_key)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            ctx.fail(list_key, f"expected a list of entries, found {_found(entries)}")
        for index, entry in enumerate(entries):
            self._entry(f"{list_key}[{index}]", entry)

        grace: int | None = None
        if top.get("registration_namespace_grace_ms") is not None:
            grace = _as_int(
                ctx,
                "registration_namespace_grace_ms",
                top["registration_namespace_grace_ms"],
                minimum=0,
            )

        manager = self._manager_settings()
        port = DEFAULT_PORT
        if top.get("port") is not None:
            port = _as_int(ctx, "port", top["port"], minimum=1, maximum=65535)
        elif manager.get("port") is not None:
            port = manager["port"]
        host = DEFAULT_HOST
        if top.get("host") is not None:
            host = _as_str(ctx, "host", top["host"]).strip()
        elif manager.get("host") is not None:
            host = manager["host"]
        auth_token: str | None = None
        if top.get("auth_token") is not None:
            auth_token = _as_str(ctx, "auth_token", top["auth_token"], nonempty=False) or None
        elif manager.get("auth_token") is not None:
            auth_token = manager["auth_token"]

        return EngineConfig(
            source=ctx.source,
            host=host,
            port=port,
            auth_token=auth_token,
            limits=manager.get("limits", Limits()),
            handshake_timeout_ms=manager.get("handshake_timeout_ms", 10_000),
            middleware_function_id=manager.get("middleware_function_id"),
            rbac=manager.get("rbac"),
            registration_namespace_grace_ms=grace,
            state=self.state,
            modules_seen=self.seen,
            warnings=ctx.warnings,
        )

    # ----------------------------------------------------------------- entries

    def _entry(self, where: str, entry: object) -> None:
        ctx = self.ctx
        if not isinstance(entry, Mapping):
            ctx.fail(
                where,
                f"expected a mapping like {{name: iii-state, config: {{...}}}}, found {_found(entry)}",
            )
        item = _as_mapping(ctx, where, entry)
        if "class" in item and "name" in item:
            ctx.fail(where, "has both 'class' (old format) and 'name' (new format); use one")
        if "class" in item:
            self._old_entry(where, item)
        elif "name" in item:
            self._new_entry(where, item)
        else:
            ctx.fail(
                where,
                f"entry has no 'name' (found keys: {', '.join(item) or 'none'}); valid: "
                "{name: <worker name>, config: {...}} or {class: modules::..., config: {...}}",
            )

    def _old_entry(self, where: str, item: dict[str, Any]) -> None:
        ctx = self.ctx
        cls = item["class"]
        if not isinstance(cls, str):
            ctx.fail(f"{where}.class", f"expected a module class name, found {_found(cls)}")
        label = f"{where} (class: {cls})"
        ctx.check_keys(label, item, ("class", "config"))
        canonical = _CLASS_TO_CANONICAL.get(cls.strip())
        if canonical is None:
            ctx.bad_name(f"{where}.class", "module class", cls, _CLASS_TO_CANONICAL)
        self._accept(label, cls, canonical, "", item.get("config"))

    def _new_entry(self, where: str, item: dict[str, Any]) -> None:
        ctx = self.ctx
        raw = item["name"]
        if not isinstance(raw, str) or not raw.strip():
            ctx.fail(f"{where}.name", f"expected a worker name, found {_found(raw)}")
        label = f"{where} (name: {raw})"
        ctx.check_keys(label, item, ("name", "config", "image"))
        base, sep, suffix = raw.strip().partition("#")
        if sep and not suffix:
            ctx.fail(f"{where}.name", f"'{raw}' has an empty '#suffix'; valid: <name>#<suffix>")
        canonical = _NAME_TO_CANONICAL.get(base)
        if canonical is None:
            if item.get("image") is not None:
                ctx.warn(
                    label,
                    f"worker '{raw}' runs from image {item['image']!r}; pyiii does not start "
                    "worker images; ignored",
                )
                self.seen.append(raw.strip())
                return
            ctx.bad_name(f"{where}.name", "worker name", base, _NAME_TO_CANONICAL)
        if item.get("image") is not None and canonical in (STATE, WORKER_MANAGER):
            ctx.warn(label, f"'image' is ignored for {canonical} (built into pyiii)")
        self._accept(label, base, canonical, f"#{suffix}" if sep else "", item.get("config"))

    def _accept(self, label: str, written: str, canonical: str, suffix: str, config: object) -> None:
        ctx = self.ctx
        instance = canonical + suffix
        if instance in self.first_by_canonical:
            first = self.first_by_canonical[instance]
            if first != written:
                ctx.fail(
                    label,
                    f"'{written}' and '{first}' name the same module ({canonical}); list only one of them",
                )
            ctx.fail(label, f"'{written}{suffix}' is listed twice; use a '#suffix' for another instance")
        self.first_by_canonical[instance] = written
        if canonical in (STATE, WORKER_MANAGER) and any(
            s == canonical or s.startswith(canonical + "#") for s in self.seen
        ):
            ctx.fail(label, f"{canonical} may be listed only once; pyiii runs a single instance")
        self.seen.append(instance)
        config_where = f"{label}.config"
        if canonical == STATE:
            self.state = self._state(config_where, _as_mapping(ctx, config_where, config))
        elif canonical == WORKER_MANAGER:
            self.manager = _as_mapping(ctx, config_where, config)
            self.manager_where = config_where
        else:
            ctx.warn(label, f"module {instance} is not implemented by pyiii; ignored")

    # ----------------------------------------------------------------- iii-worker-manager

    def _manager_settings(self) -> dict[str, Any]:
        if self.manager is None:
            return {}
        ctx, cfg, where = self.ctx, self.manager, self.manager_where
        ctx.check_keys(where, cfg, _WORKER_MANAGER_KEYS)
        out: dict[str, Any] = {}
        if cfg.get("port") is not None:
            out["port"] = _as_int(ctx, f"{where}.port", cfg["port"], minimum=1, maximum=65535)
        if cfg.get("host") is not None:
            out["host"] = _as_str(ctx, f"{where}.host", cfg["host"]).strip()
        if cfg.get("auth_token") is not None:
            token = _as_str(ctx, f"{where}.auth_token", cfg["auth_token"], nonempty=False)
            out["auth_token"] = token or None
        if cfg.get("handshake_timeout_ms") is not None:
            out["handshake_timeout_ms"] = _as_int(
                ctx, f"{where}.handshake_timeout_ms", cfg["handshake_timeout_ms"], minimum=1
            )
        if cfg.get("middleware_function_id") is not None:
            out["middleware_function_id"] = _as_str(
                ctx, f"{where}.middleware_function_id", cfg["middleware_function_id"]
            )
        if cfg.get("rbac") is not None:
            out["rbac"] = _as_mapping(ctx, f"{where}.rbac", cfg["rbac"])
        if "limits" in cfg:
            lw = f"{where}.limits"
            raw = _as_mapping(ctx, lw, cfg["limits"])
            ctx.check_keys(lw, raw, _LIMIT_KEYS)
            values = {
                key: _as_int(ctx, f"{lw}.{key}", raw[key], minimum=1)
                for key in _LIMIT_KEYS
                if raw.get(key) is not None
            }
            out["limits"] = Limits(**values)
        return out

    # ----------------------------------------------------------------- iii-state

    def _state(self, where: str, cfg: dict[str, Any]) -> StateConfig:
        ctx = self.ctx
        ctx.check_keys(where, cfg, _STATE_KEYS)
        values: dict[str, Any] = {}
        if cfg.get("triggers_enabled") is not None:
            values["triggers_enabled"] = _as_bool(ctx, f"{where}.triggers_enabled", cfg["triggers_enabled"])
        if cfg.get("max_value_bytes") is not None:
            limit = _as_int(ctx, f"{where}.max_value_bytes", cfg["max_value_bytes"], minimum=0)
            values["max_value_bytes"] = limit or None
        adapter: AdapterName = "kv"
        if cfg.get("adapter") is not None:
            adapter = self._adapter(f"{where}.adapter", cfg["adapter"], values)
        values["adapter"] = adapter
        if cfg.get("save_interval_ms") is not None:
            values["save_interval_ms"] = _as_int(ctx, f"{where}.save_interval_ms", cfg["save_interval_ms"])
        return StateConfig(**values)

    def _adapter(self, where: str, raw: object, values: dict[str, Any]) -> AdapterName:
        ctx = self.ctx
        if not isinstance(raw, Mapping):
            ctx.fail(
                where,
                f"expected a mapping like {{name: kv, config: {{...}}}}, found {_found(raw)}; "
                f"valid adapter names: {', '.join(_ADAPTER_NAMES)}",
            )
        spec = _as_mapping(ctx, where, raw)
        ctx.check_keys(where, spec, ("name", "class", "config"))
        adapter: AdapterName
        if "name" in spec and "class" in spec:
            ctx.fail(where, "has both 'name' and 'class'; use one")
        if "class" in spec:
            cls = spec["class"]
            if not isinstance(cls, str) or cls.strip() not in _ADAPTER_CLASSES:
                found = cls if isinstance(cls, str) else _found(cls)
                ctx.bad_name(f"{where}.class", "State adapter class", found, _ADAPTER_CLASSES)
            adapter = _ADAPTER_CLASSES[cls.strip()]
        elif "name" in spec:
            name = spec["name"]
            if not isinstance(name, str) or name.strip() not in _ADAPTER_NAMES:
                found = name if isinstance(name, str) else _found(name)
                ctx.bad_name(f"{where}.name", "State adapter", found, _ADAPTER_NAMES)
            adapter = _ADAPTER_NAMES[name.strip()]
        else:
            ctx.fail(
                where,
                "adapter has no 'name'; valid: {name: kv|redis|bridge, config: {...}}",
            )
        cw = f"{where}.config"
        cfg = _as_mapping(ctx, cw, spec.get("config"))
        ctx.check_keys(cw, cfg, _ADAPTER_CONFIG_KEYS[adapter])
        readers: dict[str, Callable[[str, object], object]] = {
            "store_method": self._store_method,
            "file_path": lambda w, v: _as_str(ctx, w, v),
            "save_interval_ms": lambda w, v: _as_int(ctx, w, v),
            "redis_url": lambda w, v: _as_url(ctx, w, v, _REDIS_SCHEMES),
            "bridge_url": lambda w, v: _as_url(ctx, w, v, _WS_SCHEMES),
            "url": lambda w, v: _as_url(ctx, w, v, _WS_SCHEMES),
        }
        for key, value in cfg.items():
            if value is None:
                continue
            parsed = readers[key](f"{cw}.{key}", value)
            target = "bridge_url" if key == "url" else key
            if target in values and values[target] != parsed:
                ctx.fail(
                    f"{cw}.{key}",
                    f"'url' and 'bridge_url' disagree ({values[target]!r} vs {parsed!r}); give only one",
                )
            values[target] = parsed
        return adapter

    def _store_method(self, where: str, value: object) -> StoreMethod:
        if not isinstance(value, str) or value.strip() not in _STORE_METHODS:
            found = value if isinstance(value, str) else _found(value)
            self.ctx.bad_name(where, "store_method", found, _STORE_METHODS)
        return _STORE_METHODS[value.strip()]
