"""The wire inputs of the Queue module's functions and trigger types, and their checks."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Raw

from pyiii import errors
from pyiii.errors import IIIError


class PublishInput(msgspec.Struct):
    """``iii::durable::publish`` / ``enqueue``: ``queue`` is accepted for ``topic``."""

    data: Raw
    topic: str | None = None
    queue: str | None = None


class QueueRef(msgspec.Struct):
    """``iii::queue::redrive``: ``topic`` is accepted for ``queue``."""

    queue: str | None = None
    topic: str | None = None


class MessageRef(msgspec.Struct):
    """``iii::queue::redrive_message`` / ``discard_message``."""

    message_id: str = ""
    queue: str | None = None
    topic: str | None = None


class TopicRef(msgspec.Struct):
    """``engine::queue::topic_stats``: ``queue`` is accepted for ``topic``."""

    topic: str | None = None
    queue: str | None = None


class DlqPage(msgspec.Struct):
    """``engine::queue::dlq_messages``."""

    topic: str | None = None
    queue: str | None = None
    offset: int = 0
    limit: int = 50


class SubscriberConfig(msgspec.Struct):
    """The config of a ``durable:subscriber`` / ``queue`` trigger (other keys are ignored)."""

    topic: str = ""
    queue_config: dict[str, Any] | None = None
    condition_function_id: str | None = None


def decode(raw: Raw, kind: type[Any], function_id: str) -> Any:
    """Decode ``raw`` as ``kind`` or raise the deserialization error the reference gives."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise IIIError(
            errors.DESERIALIZATION_ERROR, f"Failed to deserialize input for {function_id}: {exc}"
        ) from None


def name_of(primary: str | None, alias: str | None, *, code: str, what: str) -> str:
    """The queue/topic a call names (either spelling); an error when it names none."""
    name = primary if primary else alias
    if not name:
        raise IIIError(code, f"{what} is required")
    return name
