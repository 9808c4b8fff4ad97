"""CORS: which headers a response carries and how a preflight is answered. No I/O.

No ``cors`` block is the permissive policy (any origin, method and header;
every response header exposed). With a block, an empty list (or ``"*"``)
allows any origin or method, and the listed ones otherwise. A preflight
(``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
by the engine and reaches no function; an origin that is not allowed gets no
``Access-Control-Allow-Origin``, so the browser refuses the response.
"""

from __future__ import annotations

from pyiii.modules.http.config import HTTP_METHODS, CorsConfig

_ALL_METHODS = ", ".join(HTTP_METHODS)


class CorsPolicy:
    def __init__(self, config: CorsConfig | None) -> None:
        self.permissive = config is None
        config = config or CorsConfig()
        self.any_origin = config.any_origin
        self.origins = frozenset(config.allowed_origins)
        self.methods = "*" if config.any_method else ", ".join(config.allowed_methods)

    def _origin(self, origin: str) -> list[tuple[str, str]]:
        if self.any_origin:
            return [("access-control-allow-origin", "*")]
        if origin.rstrip("/") in self.origins:
            return [("access-control-allow-origin", origin), ("vary", "origin")]
        return [("vary", "origin")]

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers to add to an ordinary response to a request with this ``Origin``."""
        if origin is None:
            return []
        out = self._origin(origin)
        if self.permissive:
            out.append(("access-control-expose-headers", "*"))
        return out

    @staticmethod
    def is_preflight(method: str, origin: str | None, request_method: str | None) -> bool:
        return method == "OPTIONS" and origin is not None and request_method is not None

    def preflight(self, origin: str, request_headers: str | None) -> list[tuple[str, str]]:
        """The headers of the engine's answer to a preflight."""
        out = self._origin(origin)
        out.append(("access-control-allow-methods", self.methods if self.methods != "*" else _ALL_METHODS))
        out.append(("access-control-allow-headers", request_headers or "*"))
        out.append(("access-control-max-age", "600"))
        return out
