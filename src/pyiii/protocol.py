"""Wire messages of the iii worker protocol and their codec. No I/O here.

Every frame is one JSON object tagged by ``type``. Payload-carrying fields
(``data``, ``result``, ``metadata``, ``config``) are kept as ``msgspec.Raw``
so the engine can route a call without decoding or re-encoding what it
carries: one decode of the envelope in, one encode out.

Optional fields default to ``UNSET`` and are omitted on encode: the official
SDKs treat an explicit ``null`` differently from an absent field (a
``"stacktrace": null`` makes Node report the error as UNKNOWN).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import UNSET, Raw, UnsetType

NULL: Final = Raw(b"null")
TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")


class _Msg(msgspec.Struct, tag_field="type", omit_defaults=True, forbid_unknown_fields=False):
    pass


# --- worker -> engine (and both directions where the spec says so) ---------


class RegisterFunction(_Msg, tag="registerfunction"):
    id: str
    description: str | None | UnsetType = UNSET
    request_format: Raw | UnsetType = UNSET
    response_format: Raw | UnsetType = UNSET
    metadata: Raw | UnsetType = UNSET
    invocation: Raw | UnsetType = UNSET


class UnregisterFunction(_Msg, tag="unregisterfunction"):
    id: str


class Action(msgspec.Struct, omit_defaults=True):
    type: str
    queue: str | None | UnsetType = UNSET


class InvokeFunction(_Msg, tag="invokefunction"):
    function_id: str
    data: Raw = NULL
    invocation_id: str | None | UnsetType = UNSET
    action: Action | None | UnsetType = UNSET
    metadata: Raw | UnsetType = UNSET
    namespace: str | None | UnsetType = UNSET
    traceparent: str | None | UnsetType = UNSET
    baggage: str | None | UnsetType = UNSET


class InvocationResult(_Msg, tag="invocationresult"):
    invocation_id: str
    function_id: str = ""
    result: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET
    traceparent: str | None | UnsetType = UNSET
    baggage: str | None | UnsetType = UNSET


class RegisterTriggerType(_Msg, tag="registertriggertype"):
    id: str
    description: str | None = ""
    trigger_request_format: Raw | UnsetType = UNSET
    call_request_format: Raw | UnsetType = UNSET
    namespace: str | None | UnsetType = UNSET


class RegisterTrigger(_Msg, tag="registertrigger"):
    id: str
    trigger_type: str
    function_id: str
    config: Raw = NULL
    metadata: Raw | UnsetType = UNSET
    namespace: str | None | UnsetType = UNSET
    trigger_namespace: str | None | UnsetType = UNSET


class UnregisterTrigger(_Msg, tag="unregistertrigger"):
    id: str
    trigger_type: str | None | UnsetType = UNSET


class TriggerRegistrationResult(_Msg, tag="triggerregistrationresult"):
    id: str
    trigger_type: str
    function_id: str
    error: Raw | UnsetType = UNSET


class RegisterService(_Msg, tag="registerservice"):
    id: str
    name: str | None | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    parent_service_id: str | None | UnsetType = UNSET


class Reattach(_Msg, tag="reattach"):
    previous_worker_id: str
    reattach_token: str | None | UnsetType = UNSET


class Ping(_Msg, tag="ping"):
    pass


class Pong(_Msg, tag="pong"):
    pass


class UnregisterTriggerType(_Msg, tag="unregistertriggertype"):
    id: str


# --- engine -> worker only ---------------------------------------------------


class WorkerRegistered(_Msg, tag="workerregistered"):
    worker_id: str
    reattach_token: str | UnsetType = UNSET


class RegistrationRejected(_Msg, tag="registrationrejected"):
    code: str
    namespace: str
    owner_worker_id: str
    function_id: str | UnsetType = UNSET
    worker_name: str | UnsetType = UNSET


class ErrorFrame(_Msg, tag="error"):
    error: dict[str, Any]


Inbound = (
    InvokeFunction
    | InvocationResult
    | RegisterFunction
    | UnregisterFunction
    | RegisterTriggerType
    | RegisterTrigger
    | UnregisterTrigger
    | TriggerRegistrationResult
    | RegisterService
    | Reattach
    | Ping
    | Pong
    | UnregisterTriggerType
    | WorkerRegistered
    | RegistrationRejected
    | ErrorFrame
)

_decoder: Final = msgspec.json.Decoder(Inbound)
_encoder: Final = msgspec.json.Encoder()
encode = _encoder.encode


class _TypeOnly(msgspec.Struct):
    type: str | None = None


_type_decoder: Final = msgspec.json.Decoder(_TypeOnly)


class FrameError(Exception):
    """A frame that cannot be used. ``ignorable`` frames are dropped quietly.

    The reference engine logs and drops unknown types and malformed fields
    while the connection stays open; we do the same, but keep the reason so
    the engine can log it (and answer when the frame was a call).
    """

    def __init__(self, reason: str, *, msg_type: str | None = None, ignorable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.msg_type = msg_type
        self.ignorable = ignorable


def decode(frame: bytes | memoryview) -> Inbound | None:
    """Decode one text frame. None for an empty frame; FrameError if unusable."""
    try:
        msg: Inbound = _decoder.decode(frame)
        return msg
    except msgspec.ValidationError as exc:
        reason = str(exc)
        try:
            msg_type = _type_decoder.decode(frame).type
        except (msgspec.ValidationError, msgspec.DecodeError):
            msg_type = None
        unknown_type = reason.endswith("- at `$.type`") and "Invalid value" in reason
        raise FrameError(reason, msg_type=msg_type, ignorable=unknown_type) from None
    except msgspec.DecodeError as exc:
        if not bytes(frame).strip():
            return None
        raise FrameError(f"invalid JSON: {exc}") from None


def is_telemetry(frame: bytes) -> bool:
    """Binary frames that carry OTLP/JSON exports rather than protocol messages."""
    return frame[:4] in TELEMETRY_PREFIXES


def with_caller(data: Raw, worker_id: str) -> Raw:
    """``data`` with ``_caller_worker_id`` added when it is a JSON object.

    Done by splicing bytes so a routed payload is never decoded. Our key goes
    last: JSON parsers keep the last duplicate, so a caller cannot spoof it.
    """
    buf = bytes(data)
    if not buf.startswith(b"{"):
        return data
    inner = buf[1:-1]
    sep = b"," if inner.strip() else b""
    return Raw(b"".join((b"{", inner, sep, b'"_caller_worker_id":"', worker_id.encode(), b'"}')))


def raw_is_null(value: Raw | UnsetType) -> bool:
    """True for an absent field or a JSON null (both mean "no result")."""
    return value is UNSET or bytes(value).strip() == b"null"  # type: ignore[arg-type]


def error_body(code: str, message: str) -> Raw:
    """An encoded error body; optional fields omitted."""
    return Raw(encode({"code": code, "message": message}))
