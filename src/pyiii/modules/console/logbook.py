"""The engine's log lines for the console: a ring of recent lines and live subscribers.

A ``logging.Handler`` on the ``pyiii`` logger sees the engine's own lines
and the workers' (``pyiii.worker``, labelled by telemetry.py with the
worker's service name and function). Lines are kept as plain dicts; the
browser renders them as text.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}
SUBSCRIBER_BACKLOG = 1000  # lines a slow browser may fall behind before it misses some


def level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def matches(line: dict[str, Any], min_level: int, worker: str) -> bool:
    """The console's filter: at least ``min_level``; ``worker`` "" (any), "engine" or a name."""
    if line["levelno"] < min_level:
        return False
    return not worker or line["worker"] == worker


class LogBook(logging.Handler):
    """Keeps the last ``size`` lines and pushes new ones to subscribers on the loop."""

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.DEBUG)
        self.lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(size, 1))
        self.loop = loop
        self.seq = 0
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._loop_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        worker = getattr(record, "iii_worker", None)
        self.seq += 1
        line = {
            "seq": self.seq,
            "ts_ms": int(record.created * 1000),
            "level": level_name(record.levelno),
            "levelno": record.levelno,
            "logger": record.name,
            "worker": worker or ("worker" if record.name == "pyiii.worker" else "engine"),
            "function": getattr(record, "iii_function", "") or "",
            "message": message,
        }
        self.lines.append(line)
        if not self.subscribers:
            return
        if threading.get_ident() == self._loop_thread:
            self._push(line)
        else:  # a line from a store's writer thread
            self.loop.call_soon_threadsafe(self._push, line)

    def _push(self, line: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            if queue.qsize() < SUBSCRIBER_BACKLOG:
                queue.put_nowait(line)

    def recent(self, min_level: int, worker: str, limit: int) -> list[dict[str, Any]]:
        picked = [line for line in self.lines if matches(line, min_level, worker)]
        return picked[-limit:] if limit else []

    def workers(self) -> list[str]:
        """Worker labels seen in the kept lines (for the filter's choices)."""
        return sorted({line["worker"] for line in self.lines})

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.subscribers.discard(queue)
