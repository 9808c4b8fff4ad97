"""The ``invocation`` field of ``registerfunction``: parsed, checked, secrets looked up.

``{url, method?="POST", timeout_ms?, headers?, auth?}`` where ``auth`` is
``{type:"hmac", secret_key}``, ``{type:"bearer", token_key}`` or
``{type:"api_key", header, value_key}``; every ``*_key`` names an
environment variable of the engine, read once, at registration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
from msgspec import Raw

from pyiii.errors import IIIError

INVALID_INVOCATION = "invalid_invocation"
MISSING_ENV_VAR = "missing_env_var"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 600_000
# Headers that frame the message or name the peer: the engine sets them, a worker may not.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _Auth(msgspec.Struct):
    type: str
    secret_key: str | None = None
    token_key: str | None = None
    header: str | None = None
    value_key: str | None = None


class _Invocation(msgspec.Struct):
    url: str
    method: str = "POST"
    timeout_ms: int | None = None
    headers: dict[str, str] | None = None
    auth: _Auth | None = None


_decoder = msgspec.json.Decoder(_Invocation)


@dataclass(frozen=True, slots=True)
class Auth:
    """A resolved auth: ``kind`` is hmac, bearer or api_key; ``secret`` the variable's value."""

    kind: str
    secret: str
    header: str = ""

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        """The headers that authenticate one request with ``body`` sent at ``timestamp``."""
        if self.kind == "bearer":
            return {"Authorization": f"Bearer {self.secret}"}
        if self.kind == "api_key":
            return {self.header: self.secret}
        return {"x-iii-Signature": sign(body, self.secret, timestamp)}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to call one HTTP-invoked function."""

    url: str
    method: str = "POST"
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: Auth | None = None


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>:<base64 body>">``, the ``x-iii-Signature`` value."""
    payload = f"{timestamp}:{base64.b64encode(body).decode()}".encode()
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def parse_endpoint(raw: Raw, function_id: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The invocation of ``function_id``; IIIError saying what to fix when it is unusable."""
    env = os.environ if environ is None else environ
    try:
        spec = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise _bad(function_id, f"{exc}; expected {{url, method?, timeout_ms?, headers?, auth?}}") from None
    method = spec.method.upper()
    if method not in METHODS:
        raise _bad(function_id, f"method {spec.method!r} is not one of {', '.join(METHODS)}")
    timeout = DEFAULT_TIMEOUT_MS if spec.timeout_ms is None else spec.timeout_ms
    if not 1 <= timeout <= MAX_TIMEOUT_MS:
        raise _bad(function_id, f"timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {timeout}")
    headers = dict(spec.headers or {})
    for name, value in headers.items():
        _check_header(function_id, name, value)
    auth = None if spec.auth is None else _resolve_auth(function_id, spec.auth, env)
    return Endpoint(url=spec.url, method=method, timeout_ms=timeout, headers=headers, auth=auth)


def _check_header(function_id: str, name: str, value: str) -> None:
    if not _TOKEN.match(name):
        raise _bad(function_id, f"header name {name!r} is not a valid HTTP header name")
    if name.lower() in RESERVED_HEADERS:
        raise _bad(function_id, f"header {name!r} is set by the engine; remove it from invocation.headers")
    if any(c in value for c in "\r\n\0"):
        raise _bad(function_id, f"header {name!r} has a line break or NUL in its value")


def _resolve_auth(function_id: str, auth: _Auth, env: Mapping[str, str]) -> Auth:
    kinds = {"hmac": "secret_key", "bearer": "token_key", "api_key": "value_key"}
    key_field = kinds.get(auth.type)
    if key_field is None:
        raise _bad(function_id, f"auth.type {auth.type!r} is not one of hmac, bearer, api_key")
    variable = getattr(auth, key_field)
    if not variable:
        raise _bad(function_id, f"auth of type {auth.type} needs {key_field} (an environment variable name)")
    header = ""
    if auth.type == "api_key":
        header = auth.header or ""
        if not header:
            raise _bad(function_id, "auth of type api_key needs header (the header to send the key in)")
        _check_header(function_id, header, "")
    secret = env.get(variable)
    if secret is None:
        raise IIIError(
            MISSING_ENV_VAR,
            f"{function_id}: the {auth.type} auth reads environment variable {variable}, which is not "
            "set in the engine's environment; set it before the worker registers the function",
        )
    if any(c in secret for c in "\r\n\0"):
        raise _bad(function_id, f"environment variable {variable} has a line break or NUL in it")
    return Auth(kind=auth.type, secret=secret, header=header)


def _bad(function_id: str, message: str) -> IIIError:
    return IIIError(INVALID_INVOCATION, f"{function_id}: invalid invocation: {message}")
