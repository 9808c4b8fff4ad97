"""Pub/sub and cron helpers of the SDK worker (mixed into ``Worker``).

    @worker.on_event("orders.shipped")
    async def on_shipped(order): ...

    await worker.publish_event("orders.shipped", {"id": 7})

    @worker.cron("0 */5 * * * *")          # sec min hour day month weekday [year], UTC
    async def sweep(event): ...            # event: {trigger, job_id, scheduled_time, actual_time}

``publish_event``/``on_event`` are pub/sub (trigger type ``subscribe``):
every subscriber connected at that moment gets the message once, nothing is
stored, nobody retries. They are named apart from the durable queue's
``publish``/``subscriber`` on purpose: the two look alike and promise
different things.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.errors import IIIError
from pyiii.modules.cron.expression import CronError, parse

if TYPE_CHECKING:
    from pyiii.sdk.worker import FunctionRef, Trigger

__all__ = ["EventsMixin"]

Handler = Callable[..., Any]


class _Worker(Protocol):
    """What the mixin uses of ``Worker``."""

    def register_function(self, id: str, handler: Handler, **options: Any) -> FunctionRef: ...

    def register_trigger(self, trigger: Mapping[str, Any]) -> Trigger: ...

    async def trigger(self, request: Mapping[str, Any] | str, payload: Any = None) -> Any: ...


def _default_id(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None) or "handler"
    name = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None) or repr(handler)
    return f"{module}::{name}"


def _topic(topic: object, what: str) -> str:
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"{what} needs a topic, a non-empty string; got {topic!r}")
    return topic


class EventsMixin:
    """``publish_event``, ``@on_event`` and ``@cron`` for :class:`~pyiii.sdk.worker.Worker`."""

    async def publish_event(self: _Worker, topic: str, data: Any = None) -> None:
        """Broadcast ``data`` to every ``subscribe`` trigger of ``topic`` (fire-and-forget).

        Returns once the engine has taken the message; raises ``IIIError``
        when it cannot (e.g. its Redis is down), and before sending anything
        (code ``serialization_error``) when ``data`` is not JSON-serialisable.
        """
        _topic(topic, "publish_event")
        try:
            encoded = msgspec.json.encode(data)
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            raise IIIError(
                errors.SERIALIZATION_ERROR,
                f"publish_event({topic!r}): data is not JSON-serialisable ({exc}); send dicts, lists,"
                " strings, numbers, booleans or None",
                function_id="publish",
            ) from None
        await self.trigger("publish", {"topic": topic, "data": Raw(encoded)})

    def on_event(
        self: _Worker, topic: str, *, id: str | None = None, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Decorator: call the function with ``data`` of every message published to ``topic``.

        The function is registered as ``id`` (default ``<module>::<qualname>``);
        ``options`` go to ``register_function``.
        """
        _topic(topic, "on_event")

        def decorate(handler: Handler) -> Handler:
            function_id = id or _default_id(handler)
            self.register_function(function_id, handler, **options)
            self.register_trigger(
                {"type": "subscribe", "function_id": function_id, "config": {"topic": topic}}
            )
            return handler

        return decorate

    def cron(
        self: _Worker,
        expression: str,
        *,
        id: str | None = None,
        condition: Handler | str | None = None,
        **options: Any,
    ) -> Callable[[Handler], Handler]:
        """Decorator: call the function on a cron schedule (seconds first, UTC).

        ``expression`` is checked here, so a typo fails at import time with
        the field at fault. ``condition`` (a function, or the id of one)
        runs before each run with the same event; ``False`` skips the run.
        The function is registered as ``id`` (default ``<module>::<qualname>``).
        """
        try:
            parse(expression)
        except CronError as exc:
            raise ValueError(str(exc)) from None

        def decorate(handler: Handler) -> Handler:
            function_id = id or _default_id(handler)
            self.register_function(function_id, handler, **options)
            config: dict[str, Any] = {"expression": expression}
            if isinstance(condition, str):
                config["condition_function_id"] = condition
            elif condition is not None:
                condition_id = f"{function_id}::condition"
                self.register_function(condition_id, condition)
                config["condition_function_id"] = condition_id
            self.register_trigger({"type": "cron", "function_id": function_id, "config": config})
            return handler

        return decorate
