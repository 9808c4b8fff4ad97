"""The records the engine keeps: functions, trigger types, triggers, pending calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgspec import UNSET, Raw, UnsetType

if TYPE_CHECKING:
    from pyiii.engine.connection import Connection
    from pyiii.engine.module import TriggerProvider


@dataclass(slots=True)
class CallContext:
    """What a built-in function knows about its caller."""

    caller: Connection | None
    function_id: str
    metadata: Raw | UnsetType = UNSET
    # perf_counter() at the call's start when metrics are recorded, else 0.
    started: float = 0.0


# A built-in returns a value to encode, a Raw to embed as is, or NO_RESULT;
# it may return an awaitable of those when it has to wait (e.g. a disk commit).
Builtin = Callable[[Raw, CallContext], Any | Awaitable[Any]]


class _NoResult:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_RESULT"


NO_RESULT = _NoResult()


@dataclass(slots=True, frozen=True)
class EnqueueRequest:
    """An invocation with ``action: {type: enqueue, queue}``, handed to the queue provider."""

    queue: str
    function_id: str
    namespace: str
    data: Raw
    metadata: Raw | UnsetType = UNSET
    traceparent: str | None = None
    baggage: str | None = None


# The queue provider (set by a queue module): accepts the job durably and
# returns its receipt id, or raises IIIError.
EnqueueHandler = Callable[[EnqueueRequest], Awaitable[str]]


@dataclass(slots=True)
class Function:
    id: str
    namespace: str
    owner: Connection | None = None
    handler: Builtin | None = None
    eager: bool = False
    worker_name: str = ""
    description: str | None = None
    metadata: Raw | UnsetType = UNSET
    request_format: Raw | UnsetType = UNSET
    response_format: Raw | UnsetType = UNSET


@dataclass(slots=True)
class TriggerType:
    id: str
    description: str
    provider: Connection | None = None
    builtin: TriggerProvider | None = None
    worker_name: str = ""


@dataclass(slots=True)
class Trigger:
    id: str
    trigger_type: str
    function_id: str
    config: Raw
    metadata: Raw | UnsetType = UNSET
    namespace: str = "default"
    owner: Connection | None = None
    active: bool = False
    # Decoded config, filled in by a built-in provider that parsed it.
    parsed: Any = None


@dataclass(slots=True)
class Pending:
    """A call routed to a worker and not answered yet."""

    target: Connection
    function_id: str
    caller: Connection | None = None
    caller_invocation_id: str | None = None
    future: asyncio.Future[Raw | None] | None = None
    traceparent: str | None | UnsetType = UNSET
    baggage: str | None | UnsetType = UNSET
    started: float = 0.0  # perf_counter() when routed, if metrics are recorded
