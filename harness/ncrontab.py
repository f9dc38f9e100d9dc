"""NCRONTAB, the schedule syntax of Azure Functions timer triggers: six fields, seconds first.

``{second} {minute} {hour} {day} {month} {day-of-week}`` with ``*``, numbers, lists (``1,5``), ranges
(``1-5``) and steps (``*/10``, ``0-30/5``); day-of-week 0-6 from Sunday (learn.microsoft.com/azure/
azure-functions/functions-bindings-timer#ncrontab-expressions). Names (``Mon``, ``Jan``) are not
supported. Pure: ``next_after(schedule, moment)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("second", "minute", "hour", "day", "month", "day-of-week")


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday


def parse(expression: str) -> Schedule:
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(f"NCRONTAB needs 6 fields (second minute hour day month day-of-week), got {len(fields)}: "
                         f"{expression!r}")
    sets = [_field(text, lo, hi, name) for text, (lo, hi), name in zip(fields, _BOUNDS, _NAMES, strict=True)]
    return Schedule(*sets)


def _field(text: str, lo: int, hi: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"{name}: step must be at least 1 in {part!r}")
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(base)
            end = hi if step_text else start
        if not (lo <= start <= end <= hi):
            raise ValueError(f"{name}: {part!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def next_after(schedule: Schedule, moment: dt.datetime) -> dt.datetime:
    """The first time strictly after ``moment`` (second precision) that the schedule fires."""
    t = moment.replace(microsecond=0) + dt.timedelta(seconds=1)
    limit = t + dt.timedelta(days=366 * 5)
    while t < limit:
        weekday = (t.weekday() + 1) % 7  # Python: Monday 0; NCRONTAB: Sunday 0
        if t.month not in schedule.months:
            t = (t.replace(day=1, hour=0, minute=0, second=0) + dt.timedelta(days=32)).replace(day=1)
        elif t.day not in schedule.days or weekday not in schedule.weekdays:
            t = t.replace(hour=0, minute=0, second=0) + dt.timedelta(days=1)
        elif t.hour not in schedule.hours:
            t = t.replace(minute=0, second=0) + dt.timedelta(hours=1)
        elif t.minute not in schedule.minutes:
            t = t.replace(second=0) + dt.timedelta(minutes=1)
        elif t.second not in schedule.seconds:
            t += dt.timedelta(seconds=1)
        else:
            return t
    raise ValueError("the schedule never fires")
