"""The ``bridge`` adapter: another engine's streams, served on this engine's port.

Every ``stream::*`` call is forwarded to the engine at ``bridge_url`` (its
Streams module stores and validates; its own errors come back unchanged),
through the shared ``RemoteEngine`` worker connection. Changes made through
a bridge travel as messages on that engine's pub/sub topic ``EVENTS_TOPIC``:
each bridge publishes the frame of every change it made (and every
``stream::send``) there and subscribes to it, so the clients and ``stream``
triggers of every engine bridged to the same backend hear them. Changes made
directly on the backend reach the backend's own clients only (as in the
reference engine).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from pyiii import errors
from pyiii.stores.remote import RemoteEngine

log = logging.getLogger("pyiii.stream")

WORKER_NAME = "iii-stream-bridge"
EVENTS_TOPIC = "iii::stream::events"
PASSTHROUGH = frozenset(
    {
        errors.DESERIALIZATION_ERROR,
        "STREAM_SET_ERROR",
        "STREAM_GET_ERROR",
        "STREAM_DELETE_ERROR",
        "STREAM_UPDATE_ERROR",
        "STREAM_GET_GROUP_ERROR",
        "STREAM_LIST_GROUPS_ERROR",
        "STREAM_LIST_ALL_ERROR",
        "STREAM_SEND_ERROR",
        "JSON_ERROR",
    }
)

# (frame of a change as JSON text) -> None
FrameListener = Callable[[bytes], None]


class StreamBridge:
    """Forwards stream calls and shares change frames with other bridged engines."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.remote = RemoteEngine(url, worker_name=WORKER_NAME, passthrough=PASSTHROUGH, what="stream calls")
        self.handler_id = f"stream::bridge::on_pub::{uuid.uuid4()}"

    async def open(self, listener: FrameListener) -> None:
        await self.remote.open()
        worker = self.remote.worker
        assert worker is not None

        async def on_frame(data: Any) -> None:  # async: the SDK runs plain functions on threads
            listener(msgspec.json.encode(data))

        # Registrations are replayed by the SDK whenever it reconnects.
        worker.register_function(self.handler_id, on_frame)
        worker.register_trigger(
            {"type": "subscribe", "function_id": self.handler_id, "config": {"topic": EVENTS_TOPIC}}
        )

    async def close(self) -> None:
        await self.remote.close()

    async def call(self, function_id: str, payload: bytes) -> bytes | None:
        result = await self.remote.call(function_id, payload)
        return None if result is None else msgspec.json.encode(result)

    async def publish(self, frame: bytes) -> None:
        """Hand the frame of a change to every engine bridged to the backend (this one included)."""
        payload = b'{"topic":' + msgspec.json.encode(EVENTS_TOPIC) + b',"data":' + frame + b"}"
        await self.remote.call("publish", payload)
