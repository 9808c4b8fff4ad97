"""The Streams module: stored items clients watch over a WebSocket of their own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.stream.config import StreamConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: StreamConfig) -> Module:
    from pyiii.modules.stream.module import StreamModule

    return StreamModule(config)


SPEC = ModuleSpec(
    name="iii-stream",
    aliases=("stream",),
    classes=("modules::stream::StreamModule",),
    parse=parse,
    create=_create,
)
