"""Error codes and the one exception type that carries them.

Codes that the official SDKs or existing iii code match on keep the reference
engine's spelling (see docs/protocol.md §4 and docs/state.md §2).
"""

from __future__ import annotations

from typing import Any

# Routing and invocation
FUNCTION_NOT_FOUND = "function_not_found"
INVOCATION_STOPPED = "invocation_stopped"
INVOCATION_FAILED = "invocation_failed"
CHANNEL_SEND_FAILED = "channel_send_failed"
CHANNEL_CLOSED = "CHANNEL_CLOSED"
DESERIALIZATION_ERROR = "deserialization_error"
SERIALIZATION_ERROR = "serialization_error"
ENQUEUE_ERROR = "enqueue_error"
INVALID_NAMESPACE = "INVALID_NAMESPACE"
INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
NOT_FOUND = "NOT_FOUND"
AUTH_ERROR = "AUTH_ERROR"
TRIGGER_REGISTRATION_FAILED = "trigger_registration_failed"
FUNCTION_NAMESPACE_CONFLICT = "FUNCTION_NAMESPACE_CONFLICT"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
SHUTTING_DOWN = "SHUTTING_DOWN"
INVOCATION_UNSUPPORTED = "invocation_unsupported"  # `invocation` given, no module serves it
FUNCTION_NOT_INVOKABLE = "function_not_invokable"  # an HTTP-invoked function was invoked on its worker

# SDK-local codes (never sent by the engine)
TIMEOUT = "TIMEOUT"
SHUTDOWN = "SHUTDOWN"
UNKNOWN = "UNKNOWN"
CONNECTION_LOST = "CONNECTION_LOST"

# State
VALUE_TOO_LARGE = "VALUE_TOO_LARGE"
SET_ERROR = "SET_ERROR"
GET_ERROR = "GET_ERROR"
DELETE_ERROR = "DELETE_ERROR"
UPDATE_ERROR = "UPDATE_ERROR"
LIST_ERROR = "LIST_ERROR"
LIST_GROUPS_ERROR = "LIST_GROUPS_ERROR"
VERSION_MISMATCH = "VERSION_MISMATCH"


class IIIError(Exception):
    """An error with a machine-readable ``code`` and a human ``message``.

    Raised by built-in functions (the engine turns it into an error body) and
    by the SDK when a call fails.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        function_id: str | None = None,
        stacktrace: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.function_id = function_id
        self.stacktrace = stacktrace
        self.details = details

    def to_body(self) -> dict[str, Any]:
        """The wire error body; optional fields are omitted, never null."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.stacktrace is not None:
            body["stacktrace"] = self.stacktrace
        if self.details:
            body.update(self.details)
        return body


class ConfigError(Exception):
    """The configuration cannot be used; the engine refuses to start (exit 2)."""
