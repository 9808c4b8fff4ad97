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

import re
from typing import Any, Final

import msgspec
from msgspec import UNSET, Raw, UnsetType

from pyiii.errors import DESERIALIZATION_ERROR, LIMIT_EXCEEDED

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
    the engine can log it and answer the sender. ``code`` is the error code
    of that answer: ``deserialization_error``, or ``LIMIT_EXCEEDED`` for a
    frame that breaks a configured limit.
    """

    def __init__(
        self,
        reason: str,
        *,
        msg_type: str | None = None,
        ignorable: bool = False,
        code: str = DESERIALIZATION_ERROR,
    ):
        super().__init__(reason)
        self.reason = reason
        self.msg_type = msg_type
        self.ignorable = ignorable
        self.code = code


def decode(frame: bytes, max_depth: int | None = None) -> Inbound | None:
    """Decode one text frame. None for an empty frame; FrameError if unusable.

    ``max_depth`` bounds how deeply the payloads of the frame (``data``,
    ``result``, ``config``, ...) may nest arrays and objects; the frame's own
    envelope does not count.
    """
    # nesting_exceeds' own first test, inlined: almost every frame passes it.
    if (
        max_depth is not None
        and frame.count(b"[") + frame.count(b"{") > max_depth + 1
        and nesting_exceeds(frame, max_depth + 1)
    ):
        raise FrameError(
            f"JSON nested more than {max_depth} levels deep; the limit is "
            f"iii-worker-manager.config.limits.max_nesting_depth ({max_depth})",
            msg_type=sniff(frame).get("type"),
            code=LIMIT_EXCEEDED,
        )
    try:
        msg: Inbound = _decoder.decode(frame)
        return msg
    except msgspec.ValidationError as exc:
        reason = str(exc)
        try:
            msg_type = _type_decoder.decode(frame).type
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            msg_type = None
        unknown_type = reason.endswith("- at `$.type`") and "Invalid value" in reason
        raise FrameError(reason, msg_type=msg_type, ignorable=unknown_type) from None
    except msgspec.DecodeError as exc:
        if not bytes(frame).strip():
            return None
        raise FrameError(f"invalid JSON: {exc}") from None
    except RecursionError:
        # msgspec guards its recursion with Python's limit; only reachable
        # when max_nesting_depth is configured very high.
        raise FrameError(
            "JSON nested too deeply to decode", msg_type=sniff(frame).get("type"), code=LIMIT_EXCEEDED
        ) from None


# --- nesting depth ------------------------------------------------------------------

_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS: Final = bytes(c for c in range(256) if c not in b"[]{}")
_NOT_BRACKETS_OR_QUOTES: Final = bytes(c for c in range(256) if c not in b'[]{}"')
_FOLD_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")


def nesting_exceeds(text: bytes | memoryview, limit: int) -> bool:
    """True if the JSON ``text`` nests arrays/objects more than ``limit`` deep.

    No recursion and no per-character Python loop, so a 100k-deep frame is
    refused in milliseconds. Frames with few brackets pass at once.
    Otherwise the text is reduced to its brackets, strings cut out, and
    innermost ``[]`` pairs are removed one level per pass. (Not a validator:
    unbalanced brackets count as deep.)
    """
    buf = bytes(text)
    if buf.count(b"[") + buf.count(b"{") <= limit:
        return False
    skeleton = None
    if b'\\"' not in buf:
        # Every quote delimits a string. If no string holds a bracket, each
        # string is an adjacent quote pair here and removing the pairs
        # leaves no quote; the first string holding a bracket always leaves
        # its opening quote behind.
        reduced = buf.translate(_FOLD_BRACKETS, _NOT_BRACKETS_OR_QUOTES).replace(b'""', b"")
        if b'"' not in reduced:
            skeleton = reduced
    if skeleton is None:
        skeleton = _JSON_STRING.sub(b"", buf).translate(_FOLD_BRACKETS, _NOT_BRACKETS)
    if skeleton.count(b"[") <= limit:
        return False
    for _ in range(limit):
        skeleton = skeleton.replace(b"[]", b"")
        if not skeleton:
            return False
    return True


_SNIFF_TYPE: Final = re.compile(rb'"type"\s*:\s*"([^"\\]{1,64})"')
_SNIFF_INVOCATION: Final = re.compile(rb'"invocation_id"\s*:\s*"([^"\\]{1,256})"')
_SNIFF_FUNCTION: Final = re.compile(rb'"function_id"\s*:\s*"([^"\\]{1,512})"')


class _Envelope(msgspec.Struct):
    type: Any = None
    invocation_id: Any = None
    function_id: Any = None


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


def sniff(frame: bytes | memoryview) -> dict[str, str]:
    """Best-effort ``type``, ``invocation_id`` and ``function_id`` of an unusable frame.

    Used only to answer the sender of a bad frame, so a guess is harmless.
    """
    try:
        env = _envelope_decoder.decode(frame)
        found = {"type": env.type, "invocation_id": env.invocation_id, "function_id": env.function_id}
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        buf = bytes(frame)
        found = {}
        for name, pattern in (
            ("type", _SNIFF_TYPE),
            ("invocation_id", _SNIFF_INVOCATION),
            ("function_id", _SNIFF_FUNCTION),
        ):
            m = pattern.search(buf)
            if m is not None:
                found[name] = m.group(1).decode("utf-8", "replace")
    return {k: v for k, v in found.items() if isinstance(v, str)}


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
