"""Delivery of change events to trigger bindings (State's and Streams' triggers).

Delivery runs in the background after the write is durable, so a slow or
failing handler never delays a writer. Each binding has its own ordered
queue per changed item: events of one item reach one binding in write
order, and a slow binding only delays itself. A binding whose config names a
``condition_function_id`` is called only when that function does not answer
``false``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from pyiii.engine.module import TriggerProvider
from pyiii.engine.registry import Trigger
from pyiii.errors import IIIError

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine

HANDLER_TIMEOUT_S = 60.0


class ChangeTriggers(TriggerProvider):
    """Bindings of one trigger type and their delivery queues.

    A subclass parses configs in ``register`` (setting ``trigger.parsed`` to
    an object with a ``condition_function_id``) and calls :meth:`enqueue`
    for each binding an event matches.
    """

    def __init__(self, engine: Engine, kind: str, log: logging.Logger) -> None:
        self.engine = engine
        self.kind = kind  # names the trigger type in log lines
        self.log = log
        self.bindings: dict[str, Trigger] = {}
        # Keyed by the binding object, not its id: re-registering an id makes a
        # new binding that must not inherit the old one's queue.
        self._queues: dict[tuple[int, Hashable], deque[Raw]] = {}

    def unregister(self, trigger_id: str) -> None:
        self.bindings.pop(trigger_id, None)

    def enqueue(self, trig: Trigger, item: Hashable, event: Raw) -> None:
        """Queue ``event`` for ``trig`` behind earlier events of the same ``item``. Never blocks."""
        qkey = (id(trig), item)
        queue = self._queues.get(qkey)
        if queue is None:
            queue = self._queues[qkey] = deque((event,))
            self.engine.spawn(self._drain(trig, qkey, queue))
        else:
            queue.append(event)

    async def _drain(self, trig: Trigger, qkey: tuple[int, Hashable], queue: deque[Raw]) -> None:
        try:
            while queue:
                await self._deliver(trig, queue[0])
                queue.popleft()
        finally:
            self._queues.pop(qkey, None)

    async def _deliver(self, trig: Trigger, event: Raw) -> None:
        if self.bindings.get(trig.id) is not trig:
            return  # unregistered or replaced since the event was queued
        condition: str | None = trig.parsed.condition_function_id
        call = self.engine.call_within
        try:
            if condition is not None:
                verdict = await call(
                    HANDLER_TIMEOUT_S, condition, event, namespace=trig.namespace, metadata=trig.metadata
                )
                if verdict is not None and bytes(verdict).strip() == b"false":
                    return
            await call(
                HANDLER_TIMEOUT_S, trig.function_id, event, namespace=trig.namespace, metadata=trig.metadata
            )
        except IIIError as err:
            self.log.warning("%s trigger %s -> %s failed: %s", self.kind, trig.id, trig.function_id, err)
        except TimeoutError:
            self.log.warning(
                "%s trigger %s -> %s gave no answer in %.0f s; moving on",
                self.kind,
                trig.id,
                trig.function_id,
                HANDLER_TIMEOUT_S,
            )
        except Exception:
            self.log.exception("%s trigger %s -> %s failed", self.kind, trig.id, trig.function_id)

    def pending(self) -> int:
        """Events queued and not yet delivered (for tests and stats)."""
        return sum(len(q) for q in self._queues.values())

    def describe(self) -> dict[str, Any]:
        return {"bindings": len(self.bindings), "queued": self.pending()}
