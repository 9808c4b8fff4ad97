"""What a queue holds: jobs, lanes, dead letters, and the rules about them (no I/O).

A *lane* is the unit of storage and delivery: the messages for one function
from one named queue or one topic. ``iii::durable::publish`` to a topic puts
one job in the lane of every distinct function subscribed to it (fan-out); an
``enqueue`` action puts one job in the lane of its target function. Workers
serving that function compete for the lane's jobs.

A *job* is stored as JSON (``Job``; field names follow the reference's
dead-letter records). ``attempts_made`` counts failed deliveries; a failure
with ``attempts_made`` reaching ``max_attempts`` dead-letters the job as
``{job, error, failed_at}`` (``DeadLetter``, ``failed_at`` in ms), else it is
retried at ``now + backoff_delay_ms * 2^(attempts_made-1)``.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from msgspec import Raw

LaneKind = Literal["queue", "topic"]
NULL = Raw(b"null")

# Characters that stand for themselves in a lane key: printable ASCII but
# space, %, /, { and } (the key is a Redis hash tag and a path-like id).
_KEY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%/{}")


_random = random.Random()  # seeded from os.urandom: unique per process and start
_V4 = (0x4 << 76) | (0x2 << 62)  # version 4, RFC 4122 variant
_V4_MASK = ~((0xF << 76) | (0x3 << 62))


def new_id() -> str:
    """A random UUID (version 4) as text, without a system call per id (``uuid.uuid4`` makes one)."""
    h = f"{(_random.getrandbits(128) & _V4_MASK) | _V4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def quote_part(text: str) -> str:
    """``text`` with every character outside ``_KEY_SAFE`` percent-encoded (``%`` when empty)."""
    return _quote(text)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe=_KEY_SAFE, errors="surrogatepass") if text else "%"


def _unquote(text: str) -> str:
    return "" if text == "%" else urllib.parse.unquote(text, errors="surrogatepass")


@dataclass(frozen=True, slots=True)
class Lane:
    """The jobs for one function (``namespace``/``function_id``) from one queue or topic."""

    kind: LaneKind
    name: str
    namespace: str
    function_id: str
    # A stable id with no braces, ``/`` only as separator (``topic/orders/default/ship``).
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        parts = (self.kind, _quote(self.name), _quote(self.namespace), _quote(self.function_id))
        object.__setattr__(self, "key", "/".join(parts))

    @staticmethod
    def from_key(key: str) -> Lane | None:
        """The lane a key stands for; None for text ``key`` never produces."""
        parts = key.split("/")
        if len(parts) != 4 or parts[0] not in ("queue", "topic"):
            return None
        kind: LaneKind = "queue" if parts[0] == "queue" else "topic"
        lane = Lane(kind, *(_unquote(p) for p in parts[1:]))
        return lane if lane.key == key else None


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a lane delivers (from its queue's settings, or a subscription's ``queue_config``)."""

    max_attempts: int = 3
    backoff_ms: int = 1000
    concurrency: int = 10
    fifo: bool = False
    group_field: str | None = None
    handler_timeout_ms: int = 30_000
    poll_interval_ms: int = 100


class Job(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message in one lane. ``data`` and ``metadata`` are JSON text, kept as is."""

    id: str
    queue: str  # the queue or topic name, for people reading a dead letter
    function_id: str
    data: Raw
    max_attempts: int
    backoff_delay_ms: int
    created_at: int
    attempts_made: int = 0
    process_at: int | None = None  # ms; a retry waits until then
    group_id: str | None = None  # fifo: the ordering group
    namespace: str = "default"
    message_id: str | None = None  # the enqueue receipt
    traceparent: str | None = None
    baggage: str | None = None
    metadata: Raw = NULL
    last_error: str | None = None
    # Set by a shared store when it hands out a job whose previous holder died
    # (never stored as true): that delivery counts as failed.
    reclaimed: bool = False


class DeadLetter(msgspec.Struct, kw_only=True):
    """A job that failed ``max_attempts`` times, with the last error."""

    job: Job
    error: str
    failed_at: int  # ms since the epoch


encode = msgspec.json.encode
_job_decoder = msgspec.json.Decoder(Job)
_dead_decoder = msgspec.json.Decoder(DeadLetter)


def decode_job(data: bytes) -> Job:
    return _job_decoder.decode(data)


def decode_dead(data: bytes) -> DeadLetter:
    return _dead_decoder.decode(data)


def group_of(job: Job) -> str:
    """The ordering unit of a job: its group in a fifo lane, else the job itself."""
    return job.id if job.group_id is None else job.group_id


def backoff_ms(job: Job) -> int:
    """Delay before the next delivery of a job that just failed ``attempts_made`` times."""
    return int(job.backoff_delay_ms * 2 ** max(job.attempts_made - 1, 0))


def group_value(data: object, field: str) -> str | None:
    """The fifo group of a payload: the JSON text of ``data[field]``, None if absent or null."""
    if not isinstance(data, dict):
        return None
    value = data.get(field)
    if value is None:
        return None
    return encode(value).decode()
