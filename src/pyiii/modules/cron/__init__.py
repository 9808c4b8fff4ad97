"""The Cron module: the ``cron`` trigger type (seconds-first expressions, UTC)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.cron.config import CronConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: CronConfig) -> Module:
    from pyiii.modules.cron.module import CronModule

    return CronModule(config)


SPEC = ModuleSpec(
    name="iii-cron",
    aliases=("cron",),
    classes=("modules::cron::CronModule",),
    parse=parse,
    create=_create,
)
