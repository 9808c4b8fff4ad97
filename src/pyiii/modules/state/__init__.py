"""The State module: scoped key/value with atomic updates and change triggers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.state.config import StateConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: StateConfig) -> Module:
    from pyiii.modules.state.module import StateModule

    return StateModule(config)


SPEC = ModuleSpec(
    name="iii-state",
    aliases=("state",),
    classes=("modules::state::StateModule",),
    parse=parse,
    create=_create,
)
