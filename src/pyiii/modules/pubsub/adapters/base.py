"""What a PubSub adapter does: carry a topic's messages to every engine that subscribes.

The module keeps the bindings; an adapter only knows which topics this
engine has subscribers for, and hands each message it receives for one of
them to ``deliver(topic, payload)`` exactly once. ``payload`` is the JSON
text of the published ``data``, never re-encoded.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

Deliver = Callable[[str, bytes], None]


class PublishFailed(Exception):
    """The message could not be handed on; the text says where and why."""


class PubSubAdapter(abc.ABC):
    """Carries messages between ``publish`` and the engines' subscribers."""

    # publish() never waits (safe to step outside a Task, see Engine.register_builtin).
    eager_safe = False

    @abc.abstractmethod
    async def open(self, deliver: Deliver) -> None:
        """Connect; from now on messages for subscribed topics go to ``deliver``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving and release connections."""

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes) -> None:
        """Hand a message to every engine's subscribers of ``topic``; raise PublishFailed."""

    @abc.abstractmethod
    def subscribe(self, topic: str) -> None:
        """This engine now has subscribers for ``topic``."""

    @abc.abstractmethod
    def unsubscribe(self, topic: str) -> None:
        """This engine has no subscribers for ``topic`` any more."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the startup log."""
