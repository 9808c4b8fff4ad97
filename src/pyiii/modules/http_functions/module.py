"""The HTTP-functions module: the engine calls a URL for every invocation of such a function.

A worker registers ``registerfunction {id, invocation: {url, ...}}``; this
module checks the invocation (its URL against the ``security`` policy,
including the host's DNS answer, and the auth's environment variables) and
hands the engine the handler that serves the function's calls. A refused
registration never becomes a function: the worker gets an ``error`` frame
naming the rule, and the engine log says the same. The function belongs to
the worker that registered it and goes away with it, or on unregister.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pyiii import errors, protocol
from pyiii.engine.module import Module
from pyiii.engine.registry import NO_RESULT, Builtin, CallContext
from pyiii.errors import IIIError
from pyiii.modules.http_functions.client import URL_REFUSED, Caller
from pyiii.modules.http_functions.dns import Resolve, system_resolve, vetted_addresses
from pyiii.modules.http_functions.endpoint import parse_endpoint
from pyiii.modules.http_functions.guard import Refused, check_url

if TYPE_CHECKING:
    from msgspec import Raw

    from pyiii.engine.connection import Connection
    from pyiii.engine.engine import Engine
    from pyiii.modules.http_functions.config import HttpFunctionsConfig
    from pyiii.protocol import RegisterFunction

log = logging.getLogger("pyiii.http_functions")

WORKER_NAME = "iii-http-functions"
FAILURE_LOG_INTERVAL_S = 10.0  # per function: a failing endpoint logs at most this often
MAX_IN_FLIGHT = 10_000  # calls waiting on HTTP services at once; more fail fast


class HttpFunctionsModule(Module):
    """Serves functions registered with ``invocation`` by calling their URL."""

    name = WORKER_NAME

    def __init__(self, config: HttpFunctionsConfig, resolve: Resolve | None = None) -> None:
        self.policy = config.policy
        # The DNS seam: tests put a stub here; it is read at every lookup.
        self.resolve: Resolve = resolve or system_resolve
        self.caller = Caller(self.policy, lambda: self.resolve)
        self.engine: Engine | None = None
        self.max_in_flight = MAX_IN_FLIGHT
        self.in_flight = 0

    def describe(self) -> str:
        p = self.policy
        allow = ", ".join([*p.allowlist.hosts, *(str(n) for n in p.allowlist.networks), *p.allowlist.urls])
        https = "https only" if p.require_https else "http and https"
        private = "private addresses blocked" if p.block_private_ips else "private addresses ALLOWED"
        return f"{https}, {private}, url_allowlist: {allow}"

    async def start(self, engine: Engine) -> None:
        if engine.invocation_provider is not None:
            raise RuntimeError("another module already serves functions with an 'invocation'")
        await self.caller.open()
        self.engine = engine
        engine.invocation_provider = self.prepare
        if not self.policy.block_private_ips:
            log.warning(
                "iii-http-functions: block_private_ips is off; workers can make the engine call "
                "loopback and internal addresses"
            )

    async def stop(self) -> None:
        if self.engine is not None and self.engine.invocation_provider == self.prepare:
            self.engine.invocation_provider = None
        await self.caller.close()

    async def prepare(self, msg: RegisterFunction, conn: Connection) -> Builtin:
        """Check one registration and build its handler; IIIError refuses it."""
        function_id = msg.id
        endpoint = parse_endpoint(msg.invocation, function_id)  # type: ignore[arg-type]
        try:
            await vetted_addresses(check_url(endpoint.url, self.policy), self.policy, self.resolve)
        except Refused as refused:
            raise IIIError(URL_REFUSED, f"{function_id}: {refused.message}") from None
        caller = self.caller
        last_failure_log = [0.0]

        async def handler(data: Raw, ctx: CallContext) -> Any:
            if self.in_flight >= self.max_in_flight:
                # Calls to built-ins have no per-worker pending limit: a slow service must
                # not let a flood of calls pile up without bound.
                raise IIIError(
                    errors.LIMIT_EXCEEDED,
                    f"{self.in_flight} calls to HTTP-served functions are waiting for their services; "
                    "retry when some have answered",
                )
            body = data if ctx.caller is None else protocol.with_caller(data, ctx.caller.worker_id)
            self.in_flight += 1
            try:
                out = await caller.call(endpoint, function_id, bytes(body))
            except IIIError as err:
                now = time.monotonic()
                if now - last_failure_log[0] >= FAILURE_LOG_INTERVAL_S:
                    last_failure_log[0] = now
                    log.warning("HTTP function %s failed: %s: %s", function_id, err.code, err.message)
                raise
            finally:
                self.in_flight -= 1
            return NO_RESULT if out is None else out

        log.info("function %s is served by %s %s", function_id, endpoint.method, endpoint.url)
        return handler
