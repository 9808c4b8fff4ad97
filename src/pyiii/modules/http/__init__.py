"""The HTTP module: functions served over HTTP through ``http`` triggers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.http.config import HttpConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: HttpConfig) -> Module:
    from pyiii.modules.http.module import HttpModule

    return HttpModule(config)


SPEC = ModuleSpec(
    name="iii-http",
    aliases=("http",),
    classes=("modules::api::RestApiModule",),
    parse=parse,
    create=_create,
)
