"""The engine's log lines about its workers: connected, registered functions, disconnected.

A worker is logged as connected when it announces itself
(``engine::workers::register``), because only then are its name, runtime and
pid known; the Python SDKs announce after their registrations, so that line
also carries the functions. Registrations that follow an announce are
gathered per connection for ``GATHER_S`` and logged as one line, so a worker
registering 50 functions in a burst writes one line, not 50.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from pyiii.engine.connection import Connection

log = logging.getLogger("pyiii.engine")

LISTED_FUNCTIONS = 8  # ids named in one line; the rest are counted
GATHER_S = 0.1  # registrations this close together share a line


def functions_text(ids: Iterable[str]) -> str:
    """``2 functions: a, b`` (at most LISTED_FUNCTIONS ids named)."""
    names = sorted(ids)
    text = f"{len(names)} function{'' if len(names) == 1 else 's'}"
    if names:
        text += ": " + ", ".join(names[:LISTED_FUNCTIONS])
        if len(names) > LISTED_FUNCTIONS:
            text += f" and {len(names) - LISTED_FUNCTIONS} more"
    return text


def _who(conn: Connection) -> str:
    return f"worker {conn.name!r} (id {conn.worker_id}, from {conn.ip_address or 'in-process'})"


def announced(conn: Connection) -> None:
    """The worker told us who it is: its connect line."""
    info = conn.info
    runtime = " ".join(str(info[k]) for k in ("runtime", "version") if isinstance(info.get(k), str | int))
    pid = info.get("pid")
    details = ", ".join(
        part
        for part in (
            runtime,
            f"pid {pid}" if isinstance(pid, int) else "",
            f"namespace {conn.namespace}" if conn.namespace != "default" else "",
            functions_text(fid for _, fid in conn.functions),
        )
        if part
    )
    log.info("%s connected: %s", _who(conn), details)


def registered(conn: Connection, function_id: str) -> None:
    """Note a registration by an announced worker; logged ``GATHER_S`` later with its neighbours."""
    first = not conn.registered_since_log
    conn.registered_since_log.append(function_id)
    if not first:
        return
    try:
        asyncio.get_running_loop().call_later(GATHER_S, _flush, conn)
    except RuntimeError:  # driven without a loop (unit tests): log at once
        _flush(conn)


def _flush(conn: Connection) -> None:
    ids, conn.registered_since_log = conn.registered_since_log, []
    if ids and conn.open:
        log.info("worker %r registered %s", conn.name, functions_text(set(ids)))


def disconnected(conn: Connection, functions: int, stopped_calls: int, *, quiet: bool) -> None:
    """The connection is gone (its functions and triggers already removed)."""
    if not conn.info and not functions:
        log.debug("connection %s from %s closed", conn.worker_id, conn.ip_address)
        return
    text = f"{functions} function{'' if functions == 1 else 's'} removed"
    if stopped_calls:
        text += f", {stopped_calls} call{'' if stopped_calls == 1 else 's'} to it failed (invocation_stopped)"
    log.log(logging.DEBUG if quiet else logging.INFO, "%s disconnected: %s", _who(conn), text)
