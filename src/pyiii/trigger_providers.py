"""Which module provides which trigger type: the hint for a binding that cannot fire.

A trigger registered for a type nobody provides is parked (the protocol allows
the provider to come later), so the engine and the SDK both warn and name the
module to enable. This is the one table of those names; README.md's "Not built
yet" section lists the modules pyiii does not have so far.
"""

from __future__ import annotations

from typing import Final

# trigger type -> the module (worker) that registers it
TRIGGER_TYPE_MODULES: Final[dict[str, str]] = {
    "http": "iii-http",
    "cron": "iii-cron",
    "queue": "iii-queue",
    "durable:subscriber": "iii-queue",
    "subscribe": "iii-pubsub",
    "stream": "iii-stream",
    "stream:join": "iii-stream",
    "stream:leave": "iii-stream",
    "state": "iii-state",
    "log": "iii-observability",
    "trace": "iii-observability",
}


def missing_type_hint(trigger_type: str) -> str:
    """What to do about a binding whose type is not registered (one sentence)."""
    module = TRIGGER_TYPE_MODULES.get(trigger_type)
    if module is None:
        return f"it activates once a worker registers trigger type {trigger_type!r}"
    return f"trigger type {trigger_type!r} comes with the {module} module: enable it in the engine's config"
