"""The Queue module: durable queues and topics with retries and a dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.queue.config import QueueConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: QueueConfig) -> Module:
    from pyiii.modules.queue.module import QueueModule

    return QueueModule(config)


SPEC = ModuleSpec(
    name="iii-queue",
    aliases=("queue",),
    classes=("modules::queue::QueueModule",),
    parse=parse,
    create=_create,
)
