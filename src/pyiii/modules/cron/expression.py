"""Cron expressions: parsing and the next matching time. No I/O, no clock.

The dialect is the reference engine's: six or seven fields, **seconds
first**, evaluated in UTC::

    sec  min  hour  day  month  weekday  [year]
    0-59 0-59 0-23  1-31 1-12   0-7      1970-2100

* each field is a comma list of items; an item is ``*``, a value ``5``, a
  range ``1-5``, or any of those with a step: ``*/15``, ``10-40/10``, ``5/20``
  (a value with a step runs from that value to the field's maximum);
* months and weekdays also take names, in any case: ``JAN``-``DEC``
  (``JANUARY``...), ``SUN``-``SAT`` (``SUNDAY``...);
* weekday numbers follow Unix cron: ``0`` and ``7`` are Sunday, ``1`` is
  Monday (see docs/decisions.md for how this differs from the reference);
* ``?`` means ``*`` in the day and weekday fields;
* the day and the weekday must **both** match (the reference's rule; Unix
  cron matches either when both are restricted);
* shortcuts ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
  ``@daily`` (``@midnight``), ``@hourly``.

``L``, ``W`` and ``#`` are not supported and are reported as such.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

UTC = dt.UTC
YEAR_MIN, YEAR_MAX = 1970, 2100
ORDER = "sec min hour day month weekday [year]"

# Fixed English names (calendar.month_name follows the process locale).
_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        ("JAN JANUARY", "FEB FEBRUARY", "MAR MARCH", "APR APRIL", "MAY", "JUN JUNE",
         "JUL JULY", "AUG AUGUST", "SEP SEPT SEPTEMBER", "OCT OCTOBER", "NOV NOVEMBER", "DEC DECEMBER")
    )
    for name in names.split()
}  # fmt: skip
_WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6} | {
    "SUNDAY": 0, "MONDAY": 1, "TUESDAY": 2, "TUES": 2, "WEDNESDAY": 3,
    "THURSDAY": 4, "THURS": 4, "FRIDAY": 5, "SATURDAY": 6,
}  # fmt: skip

_SHORTCUTS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * SUN",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}


_SPECIAL = re.compile(r"\d*[LW]|LW")


class CronError(ValueError):
    """An expression that cannot be used; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    question_mark: bool = False  # accepts '?' as '*'

    def valid(self) -> str:
        if self.name == "month":
            return "1-12 or JAN-DEC"
        if self.name == "weekday":
            return "0-7 (0 and 7 are Sunday) or SUN-SAT"
        return f"{self.low}-{self.high}"


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31, question_mark=True),
    _Field("month", 1, 12, names=_MONTHS),
    _Field("weekday", 0, 7, names=_WEEKDAYS, question_mark=True),
    _Field("year", YEAR_MIN, YEAR_MAX),
)


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed expression: the allowed values of each field, sorted."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    years: tuple[int, ...]

    @property
    def canonical(self) -> str:
        """The same schedule in one spelling (``0 */5 * * * *`` == ``0 0-55/5 * * * * *``)."""
        parts = []
        for values, field in zip(
            (
                self.seconds,
                self.minutes,
                self.hours,
                self.days,
                self.months,
                sorted(self.weekdays),
                self.years,
            ),
            _FIELDS,
            strict=True,
        ):
            top = 6 if field.name == "weekday" else field.high
            full = len(values) == top - field.low + 1
            parts.append("*" if full else ",".join(map(str, values)))
        return " ".join(parts)

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first matching whole second strictly after ``after`` (UTC), or None if none is left."""
        t = after.astimezone(UTC).replace(microsecond=0, tzinfo=None) + dt.timedelta(seconds=1)
        while t.year <= YEAR_MAX:
            year = _first_at_least(self.years, t.year)
            if year is None:
                return None
            if year != t.year:
                t = dt.datetime(year, 1, 1)
            month = _first_at_least(self.months, t.month)
            if month is None:
                t = dt.datetime(t.year + 1, 1, 1)
                continue
            if month != t.month:
                t = dt.datetime(t.year, month, 1)
            day = self._first_day(t.year, t.month, t.day)
            if day is None:
                t = dt.datetime(t.year + 1, 1, 1) if t.month == 12 else dt.datetime(t.year, t.month + 1, 1)
                continue
            if day != t.day:
                t = dt.datetime(t.year, t.month, day)
            hour = _first_at_least(self.hours, t.hour)
            if hour is None:
                t = dt.datetime(t.year, t.month, t.day) + dt.timedelta(days=1)
                continue
            if hour != t.hour:
                t = t.replace(hour=hour, minute=0, second=0)
            minute = _first_at_least(self.minutes, t.minute)
            if minute is None:
                t = t.replace(minute=0, second=0) + dt.timedelta(hours=1)
                continue
            if minute != t.minute:
                t = t.replace(minute=minute, second=0)
            second = _first_at_least(self.seconds, t.second)
            if second is None:
                t = t.replace(second=0) + dt.timedelta(minutes=1)
                continue
            return t.replace(second=second, tzinfo=UTC)
        return None

    def _first_day(self, year: int, month: int, start: int) -> int | None:
        last = calendar.monthrange(year, month)[1]
        i = bisect.bisect_left(self.days, start)
        for day in self.days[i:]:
            if day > last:
                return None
            # date.weekday(): Monday is 0; cron: Sunday is 0.
            if (dt.date(year, month, day).weekday() + 1) % 7 in self.weekdays:
                return day
        return None


def _first_at_least(values: tuple[int, ...], start: int) -> int | None:
    i = bisect.bisect_left(values, start)
    return values[i] if i < len(values) else None


def parse(expression: object) -> CronExpression:
    """Parse an expression; raise :class:`CronError` naming the field at fault."""
    if not isinstance(expression, str) or not expression.strip():
        shown = "nothing" if expression in (None, "") else repr(expression)
        raise CronError(f"a cron expression is required ({ORDER}, e.g. '0 */5 * * * *'), found {shown}")
    text = expression.strip()
    body = _SHORTCUTS.get(text.lower(), text)
    if body.startswith("@"):
        raise CronError(f"unknown shortcut {text!r}; valid: {', '.join(_SHORTCUTS)}")
    parts = body.split()
    if len(parts) not in (6, 7):
        hint = ""
        if len(parts) == 5:
            hint = (
                f"; a 5-field Unix expression has no seconds: '0 {' '.join(parts)}' runs it"
                " at second 0 of the same minutes"
            )
        raise CronError(
            f"invalid cron expression {text!r}: expected 6 or 7 fields ({ORDER}), found {len(parts)}{hint}"
        )
    if len(parts) == 6:
        parts.append("*")
    values = [_parse_field(text, i, part) for i, part in enumerate(parts)]
    weekdays = frozenset(v % 7 for v in values[5])
    return CronExpression(
        text=text,
        seconds=values[0],
        minutes=values[1],
        hours=values[2],
        days=values[3],
        months=values[4],
        weekdays=weekdays,
        years=values[6],
    )


def _parse_field(text: str, index: int, part: str) -> tuple[int, ...]:
    field = _FIELDS[index]

    def fail(why: str) -> CronError:
        return CronError(
            f"invalid cron expression {text!r}: {field.name} (field {index + 1}) {part!r}: {why}"
        )

    out: set[int] = set()
    for item in part.split(","):
        if not item:
            raise fail("empty item in the list (two commas in a row, or a trailing comma)")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit():
                raise fail(f"step {step_text!r} in {item!r} is not a whole number")
            step = int(step_text)
            span = field.high - field.low + 1
            if not 1 <= step <= span:
                raise fail(f"step {step} in {item!r} must be between 1 and {span}")
        if base in ("*", "?"):
            if base == "?" and not field.question_mark:
                raise fail("'?' is only allowed in the day and weekday fields; use '*'")
            low, high = field.low, field.high
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            low = _value(field, start_text, fail)
            high = _value(field, end_text, fail)
            if field.name == "weekday" and high == 0 and end_text.upper() in _WEEKDAYS:
                high = 7  # MON-SUN: Sunday as the end of a week
            if low > high:
                raise fail(f"range {base!r} runs backwards; write the low end first (or use a list)")
        else:
            low = _value(field, base, fail)
            high = field.high if slash else low
        out.update(range(low, high + 1, step))
    return tuple(sorted(out))


def _value(field: _Field, token: str, fail: Callable[[str], CronError]) -> int:
    if token.isdigit():
        number = int(token)
        if not field.low <= number <= field.high:
            raise fail(f"{number} is outside {field.valid()}")
        return number
    if field.names is not None and token.upper() in field.names:
        return field.names[token.upper()]
    if not token:
        raise fail("a range needs a value on both sides of '-'")
    if "#" in token or _SPECIAL.fullmatch(token.upper()):
        raise fail(f"{token!r}: the special characters L, W and # are not supported")
    kind = {"month": "a month", "weekday": "a weekday"}.get(field.name, "a number")
    raise fail(f"{token!r} is not {kind}; valid: {field.valid()}")


def rfc3339(moment: dt.datetime) -> str:
    """RFC 3339 in UTC as the reference writes it: ``+00:00``, fraction only when non-zero.

    The fraction has 3 digits when the time is on a millisecond, else 6
    (chrono's ``to_rfc3339`` picks the shortest of 3/6/9 digits that is exact).
    """
    moment = moment.astimezone(UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    micro = moment.microsecond
    if micro == 0:
        frac = ""
    elif micro % 1000 == 0:
        frac = f".{micro // 1000:03d}"
    else:
        frac = f".{micro:06d}"
    return f"{base}{frac}+00:00"
