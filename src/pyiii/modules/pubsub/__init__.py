"""The PubSub module: ``publish`` and the ``subscribe`` trigger type (fire-and-forget)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyiii.engine.module import ModuleSpec
from pyiii.modules.pubsub.config import PubSubConfig, parse

if TYPE_CHECKING:
    from pyiii.engine.module import Module


def _create(config: PubSubConfig) -> Module:
    from pyiii.modules.pubsub.module import PubSubModule

    return PubSubModule(config)


SPEC = ModuleSpec(
    name="iii-pubsub",
    aliases=("pubsub",),
    classes=("modules::pubsub::PubSubModule",),
    parse=parse,
    create=_create,
)
