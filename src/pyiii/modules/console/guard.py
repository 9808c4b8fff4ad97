"""Who may use the console, and which requests may change anything.

* With an engine ``auth_token``, every ``/api/*`` request and ``/metrics``
  needs ``Authorization: Bearer <token>`` (the page asks for it once and
  keeps it in the tab's sessionStorage). The page itself, its scripts and
  ``/health`` hold no data and need none.
* Nothing changes on a GET: every change is a POST with a JSON body. A
  browser sends ``Content-Type: application/json`` cross-site only after a
  CORS preflight, which the console never grants, so another site's page
  cannot post to it; a cross-site ``Origin`` is refused outright.
* Without a token, the ``Host`` header must name a loopback address or the
  configured host, so a DNS-rebinding page cannot reach the console by name.
"""

from __future__ import annotations

import hmac

from pyiii.httpserver import Exchange

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


class Refused(Exception):
    """A request the console will not serve: status, code and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header


def check_host(ex: Exchange, configured_host: str, token: str | None) -> None:
    if token is not None:
        return
    name = _host_name(ex.header("host") or "")
    if name in LOOPBACK_NAMES or name == configured_host or configured_host in ("0.0.0.0", "::"):
        return
    raise Refused(
        403,
        "host_not_allowed",
        f"Host {name!r} is not this console's address; open it as http://127.0.0.1:<port>/ "
        "or set an auth_token on the engine to serve it under other names",
    )


def check_token(ex: Exchange, token: str | None) -> None:
    if token is None:
        return
    sent = ex.header("authorization") or ""
    scheme, _, value = sent.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return
    raise Refused(
        401,
        "unauthorized",
        "this engine has an auth_token: send it as 'Authorization: Bearer <token>'"
        if not sent
        else "the token sent does not match the engine's auth_token",
    )


def check_change(ex: Exchange, own_origins: set[str]) -> None:
    """A request that may change something: POST, JSON, and same-origin when an Origin is sent."""
    if ex.method != "POST":
        raise Refused(405, "method_not_allowed", f"{ex.path} changes things and takes POST only")
    content_type = (ex.header("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise Refused(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    origin = ex.header("origin")
    if origin is not None and origin not in own_origins:
        raise Refused(403, "cross_origin", f"requests from origin {origin!r} are not accepted")
