"""Calling an HTTP-invoked function: one request (plus redirects), answer or IIIError.

The request is the call's JSON payload, sent with ``Content-Type:
application/json``, ``x-iii-Function-Path``, ``x-iii-Invocation-ID``,
``x-iii-Timestamp`` (Unix seconds), the invocation's headers and its auth.
A 2xx answer's JSON body is the result (an empty body is no result).
Redirects are followed by hand, at most ``MAX_REDIRECTS``, and every hop is
checked by the guard: the URL here, its DNS answer in ``GuardedResolver``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from msgspec import Raw
from yarl import URL

from pyiii.errors import IIIError
from pyiii.modules.http_functions.dns import GuardedResolver, Resolve
from pyiii.modules.http_functions.endpoint import Endpoint
from pyiii.modules.http_functions.guard import Policy, Refused, Target, check_url

log = logging.getLogger("pyiii.http_functions")

URL_REFUSED = "url_validation_failed"  # the reference's code for a URL the guard refuses
HTTP_ERROR = "http_error"
HTTP_TIMEOUT = "http_timeout"
HTTP_REQUEST_FAILED = "http_request_failed"
INVALID_RESPONSE = "invalid_response"
TOO_MANY_REDIRECTS = "too_many_redirects"
RESPONSE_TOO_LARGE = "response_too_large"

MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
ERROR_READ_BYTES = 64 * 1024  # of an error answer, read this much at most
EXCERPT_CHARS = 500  # of which this much goes into the error message
CONNECTIONS = 100
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Caller:
    """The module's HTTP client: one aiohttp session whose every lookup is guarded."""

    def __init__(self, policy: Policy, resolve: Callable[[], Resolve]) -> None:
        self.policy = policy
        self._resolve = resolve
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.policy, self._resolve),
            use_dns_cache=False,  # every new connection is looked up, and so checked, again
            limit=CONNECTIONS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # each call has its own deadline
            cookie_jar=aiohttp.DummyCookieJar(),  # calls must not share state through cookies
            trust_env=False,  # never through a proxy from the environment
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, endpoint: Endpoint, function_id: str, body: bytes) -> Raw | None:
        """POST (or the endpoint's method) ``body``; the JSON result, None for an empty one."""
        if self._session is None:
            raise IIIError(HTTP_REQUEST_FAILED, f"{function_id}: the iii-http-functions module is stopped")
        method, url = endpoint.method, endpoint.url
        try:
            async with asyncio.timeout(endpoint.timeout_ms / 1000):
                return await self._follow(self._session, endpoint, function_id, body)
        except TimeoutError:
            raise IIIError(
                HTTP_TIMEOUT, f"{method} {url} did not answer within timeout_ms={endpoint.timeout_ms}"
            ) from None
        except Refused as refused:
            raise IIIError(URL_REFUSED, f"{method} {url}: {refused.message}") from None
        except aiohttp.ClientError as exc:
            raise IIIError(HTTP_REQUEST_FAILED, f"{method} {url} failed: {_describe(exc)}") from None

    async def _follow(
        self, session: aiohttp.ClientSession, endpoint: Endpoint, function_id: str, body: bytes
    ) -> Raw | None:
        timestamp = int(time.time())
        base = {
            "Content-Type": "application/json",
            "x-iii-Function-Path": function_id,
            "x-iii-Invocation-ID": str(uuid.uuid4()),
            "x-iii-Timestamp": str(timestamp),
            **endpoint.headers,
        }
        method, url, data = endpoint.method, endpoint.url, body
        origin = _origin(check_url(url, self.policy))
        for hop in range(MAX_REDIRECTS + 1):
            target = check_url(url, self.policy)
            headers = dict(base)
            if endpoint.auth is not None and _origin(target) == origin:
                # Credentials go to the endpoint's own origin only, never to where it redirects.
                headers.update(endpoint.auth.headers(data, timestamp))
            try:
                async with session.request(
                    method, URL(url, encoded=True), data=data, headers=headers, allow_redirects=False
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status not in _REDIRECTS or not location:
                        return await _answer(resp, method, url)
                    if hop == MAX_REDIRECTS:
                        message = f"more than {MAX_REDIRECTS} redirects, the last to {url}"
                        raise IIIError(TOO_MANY_REDIRECTS, message)
                    next_url = str(resp.url.join(URL(location)))
            except Refused as refused:  # by the resolver, on this hop's DNS answer
                raise _on_hop(hop, url, refused) from None
            if resp.status in (301, 302, 303) and method != "GET":
                method, data = "GET", b""  # what browsers do; 307/308 keep the method and body
            log.debug("%s: %s redirected to %s", function_id, url, next_url)
            try:
                check_url(next_url, self.policy)
            except Refused as refused:
                raise _on_hop(hop + 1, next_url, refused) from None
            url = next_url
        raise AssertionError("unreachable")


def _on_hop(hop: int, url: str, refused: Refused) -> Refused:
    if hop == 0:
        return refused
    return Refused(refused.rule, f"redirected to {url}, refused: {refused.message}")


async def _answer(resp: aiohttp.ClientResponse, method: str, url: str) -> Raw | None:
    status = resp.status
    if status >= 400:
        raw, cut = await _read(resp, ERROR_READ_BYTES)
        code, text = _error_of(raw, cut)
        raise IIIError(code, f"{method} {url} answered HTTP {status}: {text}")
    raw, cut = await _read(resp, MAX_RESPONSE_BYTES)
    if cut:
        raise IIIError(RESPONSE_TOO_LARGE, f"{method} {url}: the answer is over {MAX_RESPONSE_BYTES} bytes")
    if not raw.strip():
        return None
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError:
        if status >= 300:
            return None  # a 3xx without Location, a 1xx: no result, like the reference
        excerpt = _excerpt(raw, False)
        message = f"{method} {url} answered HTTP {status} with a body that is not JSON: {excerpt}"
        raise IIIError(INVALID_RESPONSE, message) from None
    return Raw(raw)


async def _read(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _error_of(raw: bytes, cut: bool) -> tuple[str, str]:
    """``{"error": {code, message}}`` bodies keep their code; anything else is http_error + excerpt."""
    if not cut:
        try:
            body: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"]:
            message = error.get("message")
            return error["code"], _excerpt(str(message).encode() if message is not None else raw, False)
    return HTTP_ERROR, _excerpt(raw, cut)


def _excerpt(raw: bytes, cut: bool) -> str:
    text = raw.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    if not text:
        return "(empty body)"
    if len(text) > EXCERPT_CHARS or cut:
        return text[:EXCERPT_CHARS] + "…"
    return text


def _origin(target: Target) -> tuple[str, str, int]:
    return (target.scheme, target.host, target.port)


def _describe(exc: aiohttp.ClientError) -> str:
    cause = exc.__cause__ or getattr(exc, "os_error", None)
    return f"{exc} ({cause})" if cause is not None and str(cause) not in str(exc) else str(exc)
