"""``local``: messages reach this engine's subscribers only, straight from ``publish``."""

from __future__ import annotations

from pyiii.modules.pubsub.adapters.base import Deliver, PubSubAdapter


class LocalAdapter(PubSubAdapter):
    """Delivers in-process: no copy, no queue, nothing kept."""

    eager_safe = True

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._topics: set[str] = set()

    async def open(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None

    async def publish(self, topic: str, payload: bytes) -> None:
        if self._deliver is not None and topic in self._topics:
            self._deliver(topic, payload)

    def subscribe(self, topic: str) -> None:
        self._topics.add(topic)

    def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)

    def describe(self) -> str:
        return "local (subscribers on this engine only)"
