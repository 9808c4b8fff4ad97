"""Cron expressions: a table of expressions and their next times, an oracle, and bad input.

The table was worked out by hand from a calendar (2026-05-01 is a Friday).
The oracle below walks the calendar second by second with a matcher written
from the field rules alone, so the parser's jump-ahead search is checked
against something that shares none of its code.
"""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyiii.modules.cron.expression import CronError, parse, rfc3339

UTC = dt.UTC
NOW = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)  # a Friday, on the hour


def at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


TABLE = [
    # seconds come first: "*/5" in field 1 is every 5 seconds, in field 2 every 5 minutes
    ("* * * * * *", at(2026, 5, 1, 12, 0, 1)),
    ("*/5 * * * * *", at(2026, 5, 1, 12, 0, 5)),
    ("0 */5 * * * *", at(2026, 5, 1, 12, 5, 0)),
    ("30 * * * * *", at(2026, 5, 1, 12, 0, 30)),
    ("0 * * * * *", at(2026, 5, 1, 12, 1, 0)),
    ("15,45 * * * * *", at(2026, 5, 1, 12, 0, 15)),
    ("5/20 * * * * *", at(2026, 5, 1, 12, 0, 5)),
    ("10-40/10 * * * * *", at(2026, 5, 1, 12, 0, 10)),
    ("0 0 * * * *", at(2026, 5, 1, 13, 0, 0)),
    ("0 0 2 * * *", at(2026, 5, 2, 2, 0, 0)),
    ("0 0 12 1 5 *", at(2027, 5, 1, 12, 0, 0)),  # exactly now: strictly later only
    ("0 0 0 31 * *", at(2026, 5, 31, 0, 0, 0)),
    ("0 0 0 1 JAN *", at(2027, 1, 1, 0, 0, 0)),
    ("0 0 0 1 january ?", at(2027, 1, 1, 0, 0, 0)),
    ("0 0 0 29 FEB *", at(2028, 2, 29, 0, 0, 0)),
    ("0 0 0 1 1 * 2030", at(2030, 1, 1, 0, 0, 0)),
    ("59 59 23 31 12 * 2100", at(2100, 12, 31, 23, 59, 59)),
    # weekdays: 0 and 7 are Sunday, 1-5 Monday to Friday; names in any case
    ("0 0 0 * * 0 *", at(2026, 5, 3, 0, 0, 0)),
    ("0 0 0 * * 7", at(2026, 5, 3, 0, 0, 0)),
    ("0 0 0 * * sun", at(2026, 5, 3, 0, 0, 0)),
    ("0 0 0 * * 6", at(2026, 5, 2, 0, 0, 0)),
    ("0 0 9-17 * * 1-5 *", at(2026, 5, 1, 13, 0, 0)),
    ("0 0 9 * * MON-FRI", at(2026, 5, 4, 9, 0, 0)),
    ("0 0 9 * * 1", at(2026, 5, 4, 9, 0, 0)),
    ("0 0 8 * * SAT-SUN", at(2026, 5, 2, 8, 0, 0)),
    ("0 0 8 * * MON-SUN", at(2026, 5, 2, 8, 0, 0)),
    # day and weekday must both match
    ("0 30 10 13 * FRI", at(2026, 11, 13, 10, 30, 0)),
    ("0 0 0 1 * MON", at(2026, 6, 1, 0, 0, 0)),
    # shortcuts
    ("@hourly", at(2026, 5, 1, 13, 0, 0)),
    ("@daily", at(2026, 5, 2, 0, 0, 0)),
    ("@weekly", at(2026, 5, 3, 0, 0, 0)),
    ("@monthly", at(2026, 6, 1, 0, 0, 0)),
    ("@yearly", at(2027, 1, 1, 0, 0, 0)),
]


@pytest.mark.parametrize(("expression", "expected"), TABLE, ids=[e for e, _ in TABLE])
def test_next_time_table(expression: str, expected: dt.datetime) -> None:
    assert parse(expression).next_after(NOW) == expected


def test_next_times_in_sequence() -> None:
    expr = parse("0 0 9-17 * * MON-FRI")
    times, t = [], at(2026, 5, 1, 16, 30, 0)  # Friday afternoon
    for _ in range(3):
        t = expr.next_after(t)  # type: ignore[assignment]
        times.append(t)
    assert times == [at(2026, 5, 1, 17, 0, 0), at(2026, 5, 4, 9, 0, 0), at(2026, 5, 4, 10, 0, 0)]


def test_fractional_now_rounds_to_the_next_whole_second() -> None:
    assert parse("* * * * * *").next_after(NOW.replace(microsecond=999_999)) == at(2026, 5, 1, 12, 0, 1)


def test_nothing_left() -> None:
    assert parse("* * * * * * 2025").next_after(NOW) is None
    assert parse("0 0 0 31 4 *").next_after(NOW) is None  # April has 30 days


def test_canonical_spelling_is_shared() -> None:
    same = ["0 */5 * * * *", "0 0-55/5 * * * * *", "0  */5 * ? * *"]
    assert len({parse(e).canonical for e in same}) == 1
    assert parse("0 0 0 * * 7").canonical == parse("0 0 0 * * SUN").canonical
    assert parse("0 */5 * * * *").canonical != parse("*/5 * * * * *").canonical


def test_rfc3339_like_the_reference() -> None:
    assert rfc3339(NOW) == "2026-05-01T12:00:00+00:00"
    assert rfc3339(NOW.replace(microsecond=250_000)) == "2026-05-01T12:00:00.250+00:00"
    assert rfc3339(NOW.replace(microsecond=1)) == "2026-05-01T12:00:00.000001+00:00"
    eastern = dt.timezone(dt.timedelta(hours=-5))
    assert rfc3339(dt.datetime(2026, 5, 1, 7, 0, 0, tzinfo=eastern)) == "2026-05-01T12:00:00+00:00"


BAD = [
    ("", "a cron expression is required"),
    ("   ", "a cron expression is required"),
    ("* * * * *", "expected 6 or 7 fields (sec min hour day month weekday [year]), found 5"),
    ("* * * * *", "'0 * * * * *' runs it"),
    ("* * * * * * * *", "found 8"),
    ("61 * * * * *", "second (field 1) '61': 61 is outside 0-59"),
    ("0 60 * * * *", "minute (field 2) '60': 60 is outside 0-59"),
    ("0 0 24 * * *", "hour (field 3) '24': 24 is outside 0-23"),
    ("0 0 0 0 * *", "day (field 4) '0': 0 is outside 1-31"),
    ("0 0 0 32 * *", "day (field 4) '32': 32 is outside 1-31"),
    ("0 0 0 * 13 *", "month (field 5) '13': 13 is outside 1-12 or JAN-DEC"),
    ("0 0 0 * FOO *", "month (field 5) 'FOO': 'FOO' is not a month; valid: 1-12 or JAN-DEC"),
    ("0 0 0 * * 8", "weekday (field 6) '8': 8 is outside 0-7 (0 and 7 are Sunday) or SUN-SAT"),
    ("0 0 0 * * FUNDAY", "weekday (field 6) 'FUNDAY': 'FUNDAY' is not a weekday"),
    ("0 0 0 * * * 1969", "year (field 7) '1969': 1969 is outside 1970-2100"),
    ("*/0 * * * * *", "second (field 1) '*/0': step 0 in '*/0' must be between 1 and 60"),
    ("*/x * * * * *", "step 'x' in '*/x' is not a whole number"),
    ("5-1 * * * * *", "range '5-1' runs backwards"),
    ("0 0 0 * * FRI-MON", "range 'FRI-MON' runs backwards"),
    ("1,,2 * * * * *", "empty item in the list"),
    ("0 0 0 1- * *", "a range needs a value on both sides of '-'"),
    ("? * * * * *", "'?' is only allowed in the day and weekday fields"),
    ("0 0 0 L * *", "the special characters L, W and # are not supported"),
    ("0 0 0 15W * *", "the special characters L, W and # are not supported"),
    ("0 0 0 * * 5#3", "the special characters L, W and # are not supported"),
    ("0 0 0 * * 5L", "the special characters L, W and # are not supported"),
    ("abc * * * * *", "second (field 1) 'abc': 'abc' is not a number; valid: 0-59"),
    ("@often", "unknown shortcut '@often'"),
]


@pytest.mark.parametrize(("expression", "message"), BAD, ids=[e or "<empty>" for e, _ in BAD])
def test_bad_expressions_name_the_field_and_why(expression: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse(expression)
    assert message in str(info.value)


def test_non_string_expression() -> None:
    with pytest.raises(CronError, match=r"a cron expression is required.*found 5"):
        parse(5)
    with pytest.raises(CronError, match="found nothing"):
        parse(None)


# --- the oracle -------------------------------------------------------------------

FIELD_RANGES = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]


def _matches(values: list[set[int]], t: dt.datetime) -> bool:
    weekday = (t.weekday() + 1) % 7  # Sunday = 0
    parts = [t.second, t.minute, t.hour, t.day, t.month, weekday]
    return all(p in v for p, v in zip(parts, values, strict=True))


def _oracle(values: list[set[int]], after: dt.datetime, days: int) -> dt.datetime | None:
    t = after.replace(microsecond=0) + dt.timedelta(seconds=1)
    end = after + dt.timedelta(days=days)
    while t <= end:
        weekday = (t.weekday() + 1) % 7
        if t.day not in values[3] or t.month not in values[4] or weekday not in values[5]:
            t = dt.datetime(t.year, t.month, t.day, tzinfo=UTC) + dt.timedelta(days=1)
            continue
        if _matches(values, t):
            return t
        t += dt.timedelta(seconds=1)
    return None


def _field(low: int, high: int) -> st.SearchStrategy[tuple[str, set[int]]]:
    star = st.just(("*", set(range(low, high + 1))))
    single = st.integers(low, high).map(lambda v: (str(v), {v}))
    ranged = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda ab: (f"{min(ab)}-{max(ab)}", set(range(min(ab), max(ab) + 1)))
    )
    stepped = st.integers(1, high - low + 1).map(lambda s: (f"*/{s}", set(range(low, high + 1, s))))
    listed = st.sets(st.integers(low, high), min_size=1, max_size=4).map(
        lambda vs: (",".join(map(str, sorted(vs))), set(vs))
    )
    return st.one_of(star, single, ranged, stepped, listed)


@settings(max_examples=150, deadline=None)
@given(
    fields=st.tuples(*(_field(lo, hi) for lo, hi in FIELD_RANGES)),
    start=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 1, 1)),
)
def test_next_after_agrees_with_a_calendar_walk(
    fields: tuple[tuple[str, set[int]], ...], start: dt.datetime
) -> None:
    text = " ".join(f for f, _ in fields)
    values = [v for _, v in fields]
    after = start.replace(tzinfo=UTC)
    # Sparse schedules can be years apart; compare within 60 days (and then
    # only demand that the parser's answer, if later, really matches).
    expected = _oracle(values, after, days=60)
    got = parse(text).next_after(after)
    if expected is not None:
        assert got == expected, text
    elif got is not None:
        assert got > after + dt.timedelta(days=59) and _matches(values, got), text
        assert got.day <= calendar.monthrange(got.year, got.month)[1]
