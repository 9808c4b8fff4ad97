"""Load ``iii-config.yaml`` (both shapes) into one typed model.

Two file shapes are accepted:

* the current one, a ``workers:`` list (``modules:`` is a legacy alias) of
  ``{name, config?, image?}`` entries, e.g. ``name: iii-state``;
* the old one (docs 0.10, the State guide), a top-level ``port`` and a
  ``modules:`` list of ``{class, config}`` entries, e.g.
  ``class: modules::state::StateModule``.

Both land in :class:`EngineConfig`. The WebSocket listener
(``iii-worker-manager``) is the engine's own and is read here; every other
entry is handed to its module (``pyiii.modules.CATALOG``), which validates its
own ``config:`` block. Names the reference knows but pyiii does not run yet
are accepted, recorded and reported in :attr:`EngineConfig.warnings`. Anything
unknown, mistyped or ambiguous raises :class:`~pyiii.errors.ConfigError` with a
one-line message naming the file, the entry, what was found and what would be
valid.

``${VAR}`` / ``${VAR:default}`` placeholders are expanded textually before the
YAML is parsed (``env.py``), and YAML is read with YAML 1.2 scalar rules
(``yaml12.py``), as the reference engine does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyiii.config.env import expand_env
from pyiii.config.listeners import (
    WORKER_MANAGER_KEYS,
    ListenerConfig,
    check_ports,
    check_secondary,
    parse_rbac,
)
from pyiii.config.values import Block, Ctx, as_int, as_mapping, as_str, found
from pyiii.config.yaml12 import parse_yaml
from pyiii.engine.channels import ChannelSettings
from pyiii.engine.rbac import RbacPolicy
from pyiii.errors import ConfigError

if TYPE_CHECKING:
    from pyiii.engine.module import ModuleSpec

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EngineConfig",
    "Limits",
    "ListenerConfig",
    "ModuleEntry",
    "load_config",
    "parse_config",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 49134
DEFAULT_FILE_NAMES = ("iii-config.yaml", "config.yaml")


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


@dataclass(frozen=True, slots=True)
class ModuleEntry:
    """One module to run: its instance name (``iii-http#admin``), spec and parsed config."""

    instance: str
    spec: ModuleSpec
    config: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Everything the engine needs from the config file.

    ``source`` is the path of the file that was loaded, or ``None`` when no file
    was found and defaults were used. ``modules`` are the modules to run, in
    the file's order. ``modules_seen`` lists the canonical names of all accepted
    entries (``iii-state``, ``iii-http#admin``, …) for the startup log;
    ``warnings`` holds one line per accepted-but-ignored setting, to be logged.
    """

    source: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    auth_token: str | None = None
    limits: Limits = field(default_factory=Limits)
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    handshake_timeout_ms: int = 10_000
    middleware_function_id: str | None = None
    rbac: RbacPolicy | None = None
    # Listeners after the first iii-worker-manager entry (the fields above are the first's).
    extra_listeners: tuple[ListenerConfig, ...] = ()
    registration_namespace_grace_ms: int | None = None
    modules: tuple[ModuleEntry, ...] = ()
    modules_seen: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def main_listener(self) -> ListenerConfig:
        """The first listener (its port is the engine's), as a ListenerConfig."""
        return ListenerConfig(
            name=WORKER_MANAGER,
            host=self.host,
            port=self.port,
            auth_token=self.auth_token,
            handshake_timeout_ms=self.handshake_timeout_ms,
            middleware_function_id=self.middleware_function_id,
            rbac=self.rbac,
        )

    @property
    def listeners(self) -> tuple[ListenerConfig, ...]:
        """Every worker listener, the main one first."""
        return (self.main_listener, *self.extra_listeners)

    def module_config(self, instance: str) -> Any:
        """The parsed config of a module instance (``iii-state``), or None if not loaded."""
        return next((m.config for m in self.modules if m.instance == instance), None)

    @property
    def state(self) -> Any:
        """The State module's config (``StateConfig``), or None when State is off."""
        return self.module_config(STATE)

    def with_module(self, instance: str, config: Any | None) -> EngineConfig:
        """A copy with that module's config replaced, added (at the end) or, for None, removed."""
        base = instance.partition("#")[0]
        spec = _catalog_by_name()[base]
        kept = [m for m in self.modules if m.instance != instance]
        if config is not None:
            at = next((i for i, m in enumerate(self.modules) if m.instance == instance), len(kept))
            kept.insert(at, ModuleEntry(instance, spec, config))
        return dataclasses.replace(self, modules=tuple(kept))


# --------------------------------------------------------------------------- names

WORKER_MANAGER = "iii-worker-manager"
STATE = "iii-state"
# The modules an engine runs when there is no config file (none needs a server).
DEFAULT_MODULES = (STATE, "iii-pubsub", "iii-cron")

_TOP_LEVEL_KEYS = (
    "workers",
    "modules",
    "registration_namespace_grace_ms",
    "port",
    "host",
    "auth_token",
)
_WORKER_MANAGER_KEYS = WORKER_MANAGER_KEYS
_LIMIT_KEYS = (
    "max_frame_bytes",
    "max_connections",
    "max_pending_per_worker",
    "max_nesting_depth",
    "max_send_buffer_bytes",
)


@dataclass(frozen=True, slots=True)
class _Known:
    """A name the config may use: a built module (``spec``) or a planned one (None)."""

    canonical: str
    spec: ModuleSpec | None


def _catalog() -> Sequence[ModuleSpec]:
    # Imported here: the module packages import pyiii.config.values themselves.
    from pyiii.modules import CATALOG

    return CATALOG


def _catalog_by_name() -> dict[str, ModuleSpec]:
    return {spec.name: spec for spec in _catalog()}


def _names() -> tuple[dict[str, _Known], dict[str, _Known]]:
    """(new-shape names, old-shape classes) -> what they name."""
    from pyiii.modules import PLANNED

    by_name: dict[str, _Known] = {WORKER_MANAGER: _Known(WORKER_MANAGER, None)}
    by_class: dict[str, _Known] = {}
    for spec in _catalog():
        known = _Known(spec.name, spec)
        by_name.update({n: known for n in (spec.name, *spec.aliases)})
        by_class.update({c: known for c in spec.classes})
    for canonical, (aliases, classes) in PLANNED.items():
        planned = _Known(canonical, None)
        by_name.update({n: planned for n in (canonical, *aliases) if n not in by_name})
        by_class.update({c: planned for c in classes if c not in by_class})
    return by_name, by_class


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, *, environ: Mapping[str, str] | None = None) -> EngineConfig:
    """Read the engine config.

    ``path=None`` looks for ``iii-config.yaml``, then ``config.yaml``, in the
    current directory; when neither exists the defaults are used (listener on
    127.0.0.1:49134, ``DEFAULT_MODULES`` with their defaults: State in memory,
    pub/sub on this engine, cron with local locks, as the reference enables them). An explicit
    ``path`` must exist. ``environ`` (default ``os.environ``) feeds the
    ``${VAR}`` placeholders. Raises :class:`ConfigError` for any problem.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None:
        found = next((Path(n) for n in DEFAULT_FILE_NAMES if Path(n).is_file()), None)
        if found is None:
            specs = _catalog_by_name()
            defaults = tuple(
                ModuleEntry(name, specs[name], specs[name].parse(Block(Ctx("<defaults>"), "", {})))
                for name in DEFAULT_MODULES
            )
            return EngineConfig(source=None, modules=defaults, modules_seen=list(DEFAULT_MODULES))
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
    ctx = Ctx(source)
    data = parse_yaml(expand_env(text, env, source), source)
    if data is None:
        ctx.warn("", "config file is empty; no modules loaded (iii-state is off)")
        return EngineConfig(source=source, warnings=ctx.warnings)
    if not isinstance(data, Mapping):
        ctx.fail(
            "top level",
            f"expected a mapping, found {found(data)}; valid keys: {', '.join(_TOP_LEVEL_KEYS)}",
        )
    top = as_mapping(ctx, "top level", data)
    ctx.check_keys("", top, _TOP_LEVEL_KEYS)
    return _Builder(ctx, top).build()


class _Builder:
    def __init__(self, ctx: Ctx, top: dict[str, Any]) -> None:
        self.ctx = ctx
        self.top = top
        self.seen: list[str] = []
        self.first_by_canonical: dict[str, str] = {}  # canonical (+suffix) -> name as written
        self.modules: list[ModuleEntry] = []
        self.by_name, self.by_class = _names()
        self.managers: list[tuple[str, dict[str, Any]]] = []  # (where, raw config) per entry

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
            ctx.fail(list_key, f"expected a list of entries, found {found(entries)}")
        for index, entry in enumerate(entries):
            self._entry(f"{list_key}[{index}]", entry)

        grace: int | None = None
        if top.get("registration_namespace_grace_ms") is not None:
            grace = as_int(
                ctx,
                "registration_namespace_grace_ms",
                top["registration_namespace_grace_ms"],
                minimum=0,
            )

        manager = self._manager_settings(0) if self.managers else {}
        extra = [self._listener(i) for i in range(1, len(self.managers))]
        port = DEFAULT_PORT
        if top.get("port") is not None:
            port = as_int(ctx, "port", top["port"], minimum=1, maximum=65535)
        elif manager.get("port") is not None:
            port = manager["port"]
        host = DEFAULT_HOST
        if top.get("host") is not None:
            host = as_str(ctx, "host", top["host"]).strip()
        elif manager.get("host") is not None:
            host = manager["host"]
        auth_token: str | None = None
        if top.get("auth_token") is not None:
            auth_token = as_str(ctx, "auth_token", top["auth_token"], nonempty=False) or None
        elif manager.get("auth_token") is not None:
            auth_token = manager["auth_token"]

        main_where = self.managers[0][0] if self.managers else "top level"
        check_ports(
            ctx,
            [(main_where, host, port)]
            + [(self.managers[i + 1][0], x.host, x.port) for i, x in enumerate(extra)],
        )
        return EngineConfig(
            source=ctx.source,
            extra_listeners=tuple(extra),
            host=host,
            port=port,
            auth_token=auth_token,
            limits=manager.get("limits", Limits()),
            channels=manager.get("channels", ChannelSettings()),
            handshake_timeout_ms=manager.get("handshake_timeout_ms", 10_000),
            middleware_function_id=manager.get("middleware_function_id"),
            rbac=manager.get("rbac"),
            registration_namespace_grace_ms=grace,
            modules=tuple(self.modules),
            modules_seen=self.seen,
            warnings=ctx.warnings,
        )

    # ----------------------------------------------------------------- entries

    def _entry(self, where: str, entry: object) -> None:
        ctx = self.ctx
        if not isinstance(entry, Mapping):
            ctx.fail(
                where,
                f"expected a mapping like {{name: iii-state, config: {{...}}}}, found {found(entry)}",
            )
        item = as_mapping(ctx, where, entry)
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
            ctx.fail(f"{where}.class", f"expected a module class name, found {found(cls)}")
        label = f"{where} (class: {cls})"
        ctx.check_keys(label, item, ("class", "config"))
        known = self.by_class.get(cls.strip())
        if known is None:
            ctx.bad_name(f"{where}.class", "module class", cls, self.by_class)
        self._accept(label, cls, known, "", item.get("config"))

    def _new_entry(self, where: str, item: dict[str, Any]) -> None:
        ctx = self.ctx
        raw = item["name"]
        if not isinstance(raw, str) or not raw.strip():
            ctx.fail(f"{where}.name", f"expected a worker name, found {found(raw)}")
        label = f"{where} (name: {raw})"
        ctx.check_keys(label, item, ("name", "config", "image"))
        base, sep, suffix = raw.strip().partition("#")
        if sep and not suffix:
            ctx.fail(f"{where}.name", f"'{raw}' has an empty '#suffix'; valid: <name>#<suffix>")
        known = self.by_name.get(base)
        if known is None:
            if item.get("image") is not None:
                ctx.warn(
                    label,
                    f"worker '{raw}' runs from image {item['image']!r}; pyiii does not start "
                    "worker images; ignored",
                )
                self.seen.append(raw.strip())
                return
            ctx.bad_name(f"{where}.name", "worker name", base, self.by_name)
        if item.get("image") is not None and (known.spec is not None or known.canonical == WORKER_MANAGER):
            ctx.warn(label, f"'image' is ignored for {known.canonical} (built into pyiii)")
        self._accept(label, base, known, f"#{suffix}" if sep else "", item.get("config"))

    def _accept(self, label: str, written: str, known: _Known, suffix: str, config: object) -> None:
        ctx = self.ctx
        canonical = known.canonical
        instance = canonical + suffix
        if canonical == WORKER_MANAGER:
            # Each entry is a listener of its own (an internal one, a public RBAC one, ...).
            self.seen.append(instance)
            self.managers.append((f"{label}.config", as_mapping(ctx, f"{label}.config", config)))
            return
        if instance in self.first_by_canonical:
            first = self.first_by_canonical[instance]
            if first != written:
                ctx.fail(
                    label,
                    f"'{written}' and '{first}' name the same module ({canonical}); list only one of them",
                )
            ctx.fail(label, f"'{written}{suffix}' is listed twice; use a '#suffix' for another instance")
        self.first_by_canonical[instance] = written
        if (known.spec is not None or canonical == WORKER_MANAGER) and any(
            s == canonical or s.startswith(canonical + "#") for s in self.seen
        ):
            ctx.fail(label, f"{canonical} may be listed only once; pyiii runs a single instance")
        self.seen.append(instance)
        config_where = f"{label}.config"
        if known.spec is not None:
            parsed = known.spec.parse(Block(ctx, config_where, config))
            self.modules.append(ModuleEntry(instance, known.spec, parsed))
        else:
            ctx.warn(label, f"module {instance} is not implemented by pyiii; ignored")

    # ----------------------------------------------------------------- iii-worker-manager

    def _listener(self, index: int) -> ListenerConfig:
        """A listener after the first: its own socket settings, nothing engine-wide."""
        where, cfg = self.managers[index]
        self.ctx.check_keys(where, cfg, _WORKER_MANAGER_KEYS)
        check_secondary(self.ctx, where, cfg)
        got = self._manager_settings(index)
        limits: Limits = got.get("limits", Limits())
        if "port" not in got:
            self.ctx.fail(
                f"{where}.port", "every iii-worker-manager entry after the first needs its own port"
            )
        return ListenerConfig(
            name=f"{WORKER_MANAGER}[{index}]",
            host=got.get("host", DEFAULT_HOST),
            port=got["port"],
            auth_token=got.get("auth_token"),
            handshake_timeout_ms=got.get("handshake_timeout_ms", 10_000),
            middleware_function_id=got.get("middleware_function_id"),
            rbac=got.get("rbac"),
            max_frame_bytes=limits.max_frame_bytes,
            max_connections=limits.max_connections,
            max_send_buffer_bytes=limits.max_send_buffer_bytes,
        )

    def _manager_settings(self, index: int) -> dict[str, Any]:
        ctx = self.ctx
        where, cfg = self.managers[index]
        ctx.check_keys(where, cfg, _WORKER_MANAGER_KEYS)
        out: dict[str, Any] = {}
        if cfg.get("port") is not None:
            out["port"] = as_int(ctx, f"{where}.port", cfg["port"], minimum=1, maximum=65535)
        if cfg.get("host") is not None:
            out["host"] = as_str(ctx, f"{where}.host", cfg["host"]).strip()
        if cfg.get("auth_token") is not None:
            token = as_str(ctx, f"{where}.auth_token", cfg["auth_token"], nonempty=False)
            out["auth_token"] = token or None
        if cfg.get("handshake_timeout_ms") is not None:
            out["handshake_timeout_ms"] = as_int(
                ctx, f"{where}.handshake_timeout_ms", cfg["handshake_timeout_ms"], minimum=1
            )
        if cfg.get("middleware_function_id") is not None:
            out["middleware_function_id"] = as_str(
                ctx, f"{where}.middleware_function_id", cfg["middleware_function_id"]
            ).strip()
        if cfg.get("rbac") is not None:
            out["rbac"] = parse_rbac(ctx, f"{where}.rbac", cfg["rbac"])
        if "limits" in cfg:
            lw = f"{where}.limits"
            raw = as_mapping(ctx, lw, cfg["limits"])
            ctx.check_keys(lw, raw, _LIMIT_KEYS)
            values = {
                key: as_int(ctx, f"{lw}.{key}", raw[key], minimum=1)
                for key in _LIMIT_KEYS
                if raw.get(key) is not None
            }
            out["limits"] = Limits(**values)
        if "channels" in cfg:
            out["channels"] = _channel_settings(ctx, f"{where}.channels", cfg["channels"])
        return out


_CHANNEL_KEYS = ("buffer_size", "max_buffer_size", "max_buffer_bytes", "ttl_ms", "max_channels")


def _channel_settings(ctx: Ctx, where: str, value: object) -> ChannelSettings:
    """``channels:`` under ``iii-worker-manager`` (a pyiii extension; all optional)."""
    raw = as_mapping(ctx, where, value)
    ctx.check_keys(where, raw, _CHANNEL_KEYS)
    got = {
        key: as_int(ctx, f"{where}.{key}", raw[key], minimum=1)
        for key in _CHANNEL_KEYS
        if raw.get(key) is not None
    }
    base = ChannelSettings()
    settings = ChannelSettings(
        default_buffer_size=got.get("buffer_size", base.default_buffer_size),
        max_buffer_size=got.get("max_buffer_size", max(base.max_buffer_size, got.get("buffer_size", 0))),
        max_buffer_bytes=got.get("max_buffer_bytes", base.max_buffer_bytes),
        ttl_s=got["ttl_ms"] / 1000 if "ttl_ms" in got else base.ttl_s,
        max_channels=got.get("max_channels", base.max_channels),
    )
    if settings.default_buffer_size > settings.max_buffer_size:
        ctx.fail(
            f"{where}.buffer_size",
            f"{settings.default_buffer_size} is larger than max_buffer_size ({settings.max_buffer_size}); "
            "lower it or raise max_buffer_size",
        )
    return settings
