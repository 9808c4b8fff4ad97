"""One worker's session, as the engine sees it. No socket in here.

The transport gives each connection two callables, ``send`` (one encoded
text frame) and ``close`` (code, reason); the engine never learns what is
behind them, which is what lets tests drive it in-process.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiii.engine.rbac import Session

SendFn = Callable[[bytes], None]
CloseFn = Callable[[int, str], None]


class Connection:
    """A connected worker and everything it owns in the engine's registries."""

    __slots__ = (
        "backlog",
        "calling",
        "close_fn",
        "connected_at_ms",
        "dispatch",
        "functions",
        "headers",
        "info",
        "ip_address",
        "namespace",
        "open",
        "reattach_token",
        "registered_since_log",
        "send",
        "serving",
        "session",
        "trigger_types",
        "triggers",
        "worker_id",
    )

    def __init__(
        self,
        send: SendFn,
        close: CloseFn,
        *,
        ip_address: str | None = None,
        headers: dict[str, str] | None = None,
        session: Session | None = None,
    ) -> None:
        self.worker_id = str(uuid.uuid4())
        self.reattach_token = str(uuid.uuid4())
        self.send = send
        self.close_fn = close
        self.ip_address = ip_address
        self.headers = headers or {}
        self.connected_at_ms = int(time.time() * 1000)
        self.open = True
        self.namespace = "default"
        # Metadata from engine::workers::register (name, runtime, pid, ...).
        self.info: dict[str, Any] = {}
        # (namespace, function id) this connection owns.
        self.functions: set[tuple[str, str]] = set()
        self.trigger_types: set[str] = set()
        self.triggers: set[str] = set()
        # Invocation ids routed *to* this worker and not yet answered, and the
        # ones this worker is waiting on (for the per-worker pending limit).
        self.serving: set[str] = set()
        self.calling: set[str] = set()
        # Function ids registered since the last "registered ..." log line.
        self.registered_since_log: list[str] = []
        # Access of a gated listener's connection (None on an internal listener).
        self.session = session
        # Frame type -> handler; the engine's table, or the gated one (access.py).
        self.dispatch: dict[type, Callable[[Connection, Any, bytes], None]] | None = None
        # Frames held while a registration hook decides (access.py).
        self.backlog: deque[bytes] | None = None

    @property
    def name(self) -> str:
        name = self.info.get("name")
        return name if isinstance(name, str) and name else self.worker_id

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.open:
            self.close_fn(code, reason)

    def __repr__(self) -> str:
        return f"<Connection {self.worker_id} {self.name!r}>"
