"""Blocking helpers for plain scripts that do not use asyncio.

    from pyiii.sdk import sync
    print(sync.trigger("math::add", {"a": 1, "b": 2}))

They drive the most recently created live worker, creating one with
``register_worker()`` (a private loop thread) when there is none. Each call
runs on the worker's loop via ``asyncio.run_coroutine_threadsafe`` and blocks
the calling thread, so never call them from the worker's own loop thread.
A ``Worker`` also offers ``trigger_sync()`` and ``shutdown_sync()`` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyiii.sdk.worker import FunctionRef, Handler, Worker, latest_worker, register_worker

__all__ = ["register_function", "shutdown", "trigger", "worker"]


def worker(url: str | None = None, **options: Any) -> Worker:
    """The latest live worker, or a new connected one."""
    return latest_worker() or register_worker(url, **options)


def trigger(
    function_id: str,
    payload: Any = None,
    *,
    action: Mapping[str, Any] | None = None,
    timeout_ms: int | None = None,
) -> Any:
    """Invoke ``function_id`` and block until its result (see ``Worker.trigger``)."""
    return worker().trigger_sync(function_id, payload, action=action, timeout_ms=timeout_ms)


def register_function(id: str, handler: Handler, **options: Any) -> FunctionRef:
    """Serve ``id`` from the default worker (see ``Worker.register_function``)."""
    return worker().register_function(id, handler, **options)


def shutdown() -> None:
    """Shut down every live worker and stop their loop threads."""
    while (live := latest_worker()) is not None:
        live.shutdown_sync()
