"""``iii-worker-manager`` entries: one WebSocket listener each.

The first entry is the main listener (its port is the engine's port, and
the engine-wide settings ``limits.max_pending_per_worker``,
``limits.max_nesting_depth`` and ``channels`` are read from it); every
further entry opens another listener with its own host, port, token,
middleware and ``rbac`` block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyiii.config.values import Ctx, as_int, as_mapping, as_str, found
from pyiii.engine.rbac import DEFAULT_AUTH_TIMEOUT_MS, RbacError, RbacPolicy, parse_filter

WORKER_MANAGER_KEYS = (
    "host",
    "port",
    "handshake_timeout_ms",
    "middleware_function_id",
    "rbac",
    "auth_token",
    "limits",
    "channels",
)
RBAC_KEYS = (
    "auth_function_id",
    "expose_functions",
    "on_function_registration_function_id",
    "on_trigger_registration_function_id",
    "on_trigger_type_registration_function_id",
    "auth_timeout_ms",
)
# Only the first listener may set these: they are the engine's, not a socket's.
ENGINE_WIDE = ("channels",)
ENGINE_WIDE_LIMITS = ("max_pending_per_worker", "max_nesting_depth")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfig:
    """One worker listener. ``rbac`` None: no access control (every call allowed)."""

    name: str
    host: str
    port: int
    auth_token: str | None = None
    handshake_timeout_ms: int = 10_000
    middleware_function_id: str | None = None
    rbac: RbacPolicy | None = None
    max_frame_bytes: int | None = None
    max_connections: int | None = None
    max_send_buffer_bytes: int | None = None

    @property
    def gated(self) -> bool:
        """Connections get a session (access checks and/or middleware)."""
        return self.rbac is not None or self.middleware_function_id is not None


def _opt_id(ctx: Ctx, where: str, raw: dict[str, Any], key: str) -> str | None:
    if raw.get(key) is None:
        return None
    return as_str(ctx, f"{where}.{key}", raw[key]).strip()


def parse_rbac(ctx: Ctx, where: str, value: object) -> RbacPolicy:
    """An ``rbac:`` block: function ids, compiled ``expose_functions``, a pyiii ``auth_timeout_ms``."""
    raw = as_mapping(ctx, where, value)
    ctx.check_keys(where, raw, RBAC_KEYS)
    filters_raw = raw.get("expose_functions")
    if filters_raw is None:
        filters_raw = []
    if not isinstance(filters_raw, list):
        ctx.fail(f"{where}.expose_functions", f"expected a list of filters, found {found(filters_raw)}")
    filters = []
    for index, item in enumerate(filters_raw):
        try:
            filters.append(parse_filter(item))
        except RbacError as exc:
            ctx.fail(f"{where}.expose_functions[{index}]", str(exc))
    timeout = DEFAULT_AUTH_TIMEOUT_MS
    if raw.get("auth_timeout_ms") is not None:
        timeout = as_int(ctx, f"{where}.auth_timeout_ms", raw["auth_timeout_ms"], minimum=1)
    return RbacPolicy(
        auth_function_id=_opt_id(ctx, where, raw, "auth_function_id"),
        expose_functions=tuple(filters),
        on_function_registration_function_id=_opt_id(ctx, where, raw, "on_function_registration_function_id"),
        on_trigger_registration_function_id=_opt_id(ctx, where, raw, "on_trigger_registration_function_id"),
        on_trigger_type_registration_function_id=_opt_id(
            ctx, where, raw, "on_trigger_type_registration_function_id"
        ),
        auth_timeout_ms=timeout,
    )


def check_secondary(ctx: Ctx, where: str, cfg: dict[str, Any]) -> None:
    """A listener after the first may not set engine-wide settings."""
    for key in ENGINE_WIDE:
        if key in cfg:
            ctx.fail(
                f"{where}.{key}",
                f"'{key}' applies to the whole engine; set it on the first iii-worker-manager entry",
            )
    limits = cfg.get("limits")
    if isinstance(limits, dict):
        for key in ENGINE_WIDE_LIMITS:
            if key in limits:
                ctx.fail(
                    f"{where}.limits.{key}",
                    f"'{key}' applies to the whole engine; set it on the first iii-worker-manager entry",
                )


def _overlaps(a: str, b: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return a == b or a in wildcard or b in wildcard


def check_ports(ctx: Ctx, listeners: list[tuple[str, str, int]]) -> None:
    """Two listeners may not bind the same port on overlapping addresses."""
    for i, (where, host, port) in enumerate(listeners):
        for other_where, other_host, other_port in listeners[:i]:
            if port == other_port and _overlaps(host, other_host):
                ctx.fail(
                    f"{where}.port",
                    f"port {port} is already used by {other_where} ({other_host}:{other_port}); "
                    "give each iii-worker-manager entry its own port",
                )
