"""The records the engine keeps: functions, trigger types, triggers, pending calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

if TYPE_CHECKING:
    from pyiii.engine.connection import Connection
    from pyiii.engine.module import TriggerProvider
    from pyiii.protocol import RegisterFunction


# A Struct rather than a dataclass: one is made per call, and building a
# Struct from keywords costs about a third.
class CallContext(msgspec.Struct):
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


# Owns the invocation of functions registered with an ``invocation`` field
# (set by a module such as iii-http-functions): given the registration, it
# returns the handler that serves every call of that function, or raises
# IIIError to refuse the registration.
InvocationProvider = Callable[["RegisterFunction", "Connection"], Awaitable[Builtin]]


@dataclass(slots=True)
class Function:
    """A callable id: routed to ``owner``, or served in-process by ``handler``.

    Both set: a worker registered it but a module serves its calls (an
    HTTP-invoked function); it still goes away with its owner.
    """

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
    # The id the owning worker knows it by, when the engine registered it under
    # another (an RBAC function_registration_prefix); "" when the same.
    wire_id: str = ""


@dataclass(slots=True)
class TriggerType:
    id: str
    description: str
    provider: Connection | None = None
    builtin: TriggerProvider | None = None
    worker_name: str = ""
    wire_id: str = ""  # the provider's own id for it, when a registration hook renamed it


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
