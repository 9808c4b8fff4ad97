"""Functions served by plain HTTP services: ``registerfunction`` with an ``invocation``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.http_functions.config import HttpFunctionsConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: HttpFunctionsConfig) -> Module:
    from pyiii.modules.http_functions.module import HttpFunctionsModule

    return HttpFunctionsModule(config)


SPEC = ModuleSpec(
    name="iii-http-functions",
    classes=("modules::http_functions::HttpFunctionsModule",),
    parse=parse,
    create=_create,
)
