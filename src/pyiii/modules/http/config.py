"""The HTTP module's config block (``iii-http`` / ``http`` / ``modules::api::RestApiModule``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyiii.config.values import Block, found

DEFAULT_PORT = 3111
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_CONCURRENCY = 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# Names a route or a CORS list may use. Anything else is a typo, refused at load time.
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

_KEYS = (
    "port",
    "host",
    "default_timeout",
    "concurrency_request_limit",
    "cors",
    "middleware",
    "max_body_bytes",
)
_CORS_KEYS = ("allowed_origins", "allowed_methods")
_MIDDLEWARE_KEYS = ("function_id", "phase", "priority")
PHASES = {"preHandler": "preHandler"}


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """``cors``: an empty list (or ``"*"`` in it) allows any origin / method."""

    allowed_origins: tuple[str, ...] = ()
    allowed_methods: tuple[str, ...] = ()

    @property
    def any_origin(self) -> bool:
        return not self.allowed_origins or "*" in self.allowed_origins

    @property
    def any_method(self) -> bool:
        return not self.allowed_methods or "*" in self.allowed_methods


@dataclass(frozen=True, slots=True)
class Middleware:
    """One global middleware: run before every route's handler, lowest ``priority`` first."""

    function_id: str
    phase: str = "preHandler"
    priority: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    """Configuration of the HTTP module.

    ``cors`` None (no ``cors`` block) is the permissive policy: any origin,
    method and header. ``middleware`` is kept sorted by priority (stable, so
    equal priorities keep the file's order). ``max_body_bytes`` bounds a
    request body (413 past it); the reference has no such limit.
    """

    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    default_timeout: int = DEFAULT_TIMEOUT_MS
    concurrency_request_limit: int = DEFAULT_CONCURRENCY
    cors: CorsConfig | None = None
    middleware: tuple[Middleware, ...] = field(default=())
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def parse(block: Block) -> HttpConfig:
    """Validate an HTTP ``config:`` block."""
    block.keys(_KEYS)
    host = block.str("host", DEFAULT_HOST).strip()
    cors = _cors(block.block("cors")) if "cors" in block else None
    middleware = sorted((_middleware(b) for b in block.blocks("middleware")), key=lambda m: m.priority)
    return HttpConfig(
        port=block.int("port", DEFAULT_PORT, minimum=0, maximum=65535),
        host=host,
        default_timeout=block.int("default_timeout", DEFAULT_TIMEOUT_MS, minimum=1),
        concurrency_request_limit=block.int("concurrency_request_limit", DEFAULT_CONCURRENCY, minimum=1),
        cors=cors,
        middleware=tuple(middleware),
        max_body_bytes=block.int("max_body_bytes", DEFAULT_MAX_BODY_BYTES, minimum=0),
    )


def _strings(block: Block, key: str) -> list[str]:
    values = block.list(key)
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            block.fail(f"expected a non-empty string, found {found(value)}", f"{key}[{i}]")
    return [v.strip() for v in values]


def _cors(block: Block) -> CorsConfig:
    block.keys(_CORS_KEYS)
    methods = [m.upper() for m in _strings(block, "allowed_methods")]
    for i, method in enumerate(methods):
        if method != "*" and method not in HTTP_METHODS:
            block.fail(
                f"unknown HTTP method {method!r}; valid: {', '.join(HTTP_METHODS)} (or '*')",
                f"allowed_methods[{i}]",
            )
    origins = _strings(block, "allowed_origins")
    for i, origin in enumerate(origins):
        if origin != "*" and "://" not in origin:
            block.fail(
                f"expected an origin like 'https://app.example.com' (scheme://host[:port]) or '*', "
                f"found {origin!r}",
                f"allowed_origins[{i}]",
            )
    return CorsConfig(tuple(o.rstrip("/") for o in origins), tuple(methods))


def _middleware(block: Block) -> Middleware:
    block.keys(_MIDDLEWARE_KEYS)
    if "function_id" not in block:
        block.fail("middleware entry has no 'function_id'; e.g. {function_id: global::auth, priority: 10}")
    return Middleware(
        function_id=block.str("function_id", "").strip(),
        phase=block.choice("phase", "preHandler", PHASES, kind="middleware phase"),
        priority=block.int("priority", 0),
    )
