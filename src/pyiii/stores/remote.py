"""Another engine that a bridge adapter forwards whole calls to.

``RemoteEngine`` connects to the engine at ``url`` as a worker (pyiii SDK;
it reconnects by itself, with backoff of up to 10 s) and runs functions
there. While it is not connected, calls fail at once with ``AdapterError``
("the engine at <url> is unreachable"); they work again as soon as the
worker has reconnected. Errors whose code is in ``passthrough`` (the remote
module's own codes) come back unchanged; every other failure becomes an
``AdapterError`` saying what happened, which the module reports with its own
``*_ERROR`` code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from msgspec import Raw

from pyiii import errors
from pyiii.errors import IIIError
from pyiii.sdk.worker import Worker, register_worker
from pyiii.stores.base import AdapterError

log = logging.getLogger(__name__)

# How long open() waits for the first connection before starting anyway.
FIRST_CONNECT_WAIT_S = 2.0
CALL_TIMEOUT_MS = 30_000

# SDK codes that mean the remote engine was not (or no longer) there.
_LOST = frozenset({errors.INVOCATION_STOPPED, errors.CONNECTION_LOST, errors.SHUTDOWN})


class RemoteEngine:
    """A worker connection to the engine at ``url`` that forwards calls (see module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        worker_name: str,
        passthrough: Iterable[str],
        what: str,
        call_timeout_ms: int = CALL_TIMEOUT_MS,
    ) -> None:
        self.url = url
        self.worker_name = worker_name
        self.passthrough = frozenset(passthrough)
        self.what = what  # for messages: "state calls", "stream calls"
        self.call_timeout_ms = call_timeout_ms
        self.worker: Worker | None = None

    async def open(self) -> None:
        # Starts connecting in the background; an engine that is not up yet
        # is not fatal, the worker keeps retrying.
        self.worker = register_worker(
            self.url, name=self.worker_name, invocation_timeout_ms=self.call_timeout_ms
        )
        try:
            await self.worker.wait_connected(FIRST_CONNECT_WAIT_S)
        except IIIError:
            log.warning(
                "%s: the engine at %s is not reachable yet; %s fail with *_ERROR until it is"
                " (reconnecting in the background)",
                self.worker_name,
                self.url,
                self.what,
            )

    async def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.shutdown()

    @property
    def connected(self) -> bool:
        return self.worker is not None and self.worker.connected

    def unreachable(self, detail: str) -> AdapterError:
        return AdapterError(f"the engine at {self.url} is unreachable ({detail})")

    async def call(self, function_id: str, payload: Any) -> Any:
        """Run ``function_id`` there; its decoded result (None: no result)."""
        worker = self.worker
        if worker is None:
            raise self.unreachable("the bridge is closed")
        if not worker.connected:
            # The SDK would queue the call until it reconnects; fail fast instead.
            raise self.unreachable("not connected; the bridge keeps retrying in the background")
        try:
            return await worker.trigger(function_id, Raw(payload) if isinstance(payload, bytes) else payload)
        except IIIError as exc:
            if exc.code in self.passthrough:
                raise IIIError(exc.code, exc.message, details=exc.details) from None
            if exc.code in _LOST:
                raise self.unreachable(exc.message) from None
            if exc.code == errors.TIMEOUT:
                raise AdapterError(
                    f"the engine at {self.url} did not answer {function_id} within {self.call_timeout_ms} ms"
                ) from None
            raise AdapterError(
                f"the engine at {self.url} answered {function_id} with {exc.code}: {exc.message}"
            ) from None
