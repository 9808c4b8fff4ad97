"""The console module: a web console, ``/metrics`` and ``/health`` on the engine's own port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.console.config import ConsoleConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: ConsoleConfig) -> Module:
    from pyiii.modules.console.module import ConsoleModule

    return ConsoleModule(config)


SPEC = ModuleSpec(
    name="iii-console",
    aliases=("console",),
    classes=("modules::console::ConsoleModule",),
    parse=parse,
    create=_create,
)
