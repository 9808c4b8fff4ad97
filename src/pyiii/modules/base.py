"""How a module plugs into the engine.

A module registers built-in functions and trigger types on ``start`` and
flushes on ``stop``. The config file decides which modules load.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiii.engine.engine import Engine
    from pyiii.engine.registry import Trigger


class Module(abc.ABC):
    """A built-in part of the engine (State, ...)."""

    name: str

    @abc.abstractmethod
    async def start(self, engine: Engine) -> None:
        """Open resources and register functions / trigger types."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Make everything acknowledged durable and release resources."""

    def describe(self) -> str:
        """One line for the startup log."""
        return self.name


class TriggerProvider(abc.ABC):
    """Serves a built-in trigger type (e.g. ``state``)."""

    @abc.abstractmethod
    def register(self, trigger: Trigger) -> None:
        """Activate a binding; raise IIIError(trigger_registration_failed) on bad config."""

    @abc.abstractmethod
    def unregister(self, trigger_id: str) -> None:
        """Deactivate a binding. Unknown ids are ignored."""
