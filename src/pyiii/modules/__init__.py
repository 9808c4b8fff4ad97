"""The engine's built-in modules, one package each.

``CATALOG`` lists the modules pyiii implements; ``PLANNED`` the names the
reference engine knows that pyiii accepts in a config (with a warning) but
does not run yet. Adding a module is its package plus one line here.
"""

from __future__ import annotations

from pyiii.engine.module import ModuleSpec
from pyiii.modules import console, cron, http, http_functions, pubsub, queue, state, stream

CATALOG: tuple[ModuleSpec, ...] = (
    state.SPEC,
    http.SPEC,
    pubsub.SPEC,
    cron.SPEC,
    queue.SPEC,
    http_functions.SPEC,
    stream.SPEC,
    console.SPEC,
)

# Known, not built yet: canonical name -> (other names, old-shape classes).
PLANNED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "iii-observability": ((), ("modules::observability::OtelModule",)),
    "iii-exec": ((), ("modules::shell::ExecModule",)),
    "iii-bridge": ((), ("modules::bridge_client::BridgeClientModule",)),
    "iii-engine-functions": ((), ()),
    "configuration": ((), ()),
    "iii-telemetry": ((), ()),
    "kv_server": ((), ("modules::kv_server::KvServer",)),
}
