"""How a module plugs into the engine: the one interface every module implements.

The engine defines it and never imports a module. A module package exposes a
:class:`ModuleSpec`: the names it answers to in ``iii-config.yaml``, how it
validates its ``config:`` block, and how it is created. On ``start`` a module
registers built-in functions and trigger types (and opens any listener of its
own); on ``stop`` it makes everything acknowledged durable and closes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiii.config.values import Block
    from pyiii.engine.engine import Engine
    from pyiii.engine.registry import Trigger


class Module(abc.ABC):
    """A built-in part of the engine (State, HTTP, ...)."""

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


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """What the config loader and the server need to know about one module.

    ``name`` is the canonical name (``iii-state``); ``aliases`` are the other
    names a ``workers:`` entry may use (``state``); ``classes`` the old-shape
    ``modules:`` class names. ``parse`` validates the entry's ``config:``
    block and returns the module's config object; ``create`` builds the module
    from it (import heavy code there, so loading a config stays cheap).
    """

    name: str
    parse: Callable[[Block], Any]
    create: Callable[[Any], Module]
    aliases: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
