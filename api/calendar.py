"""Shift calendars: weekly patterns in a site's time zone expanded to UTC windows (pure).

A shift is a weekday (0 = Monday), a local start time and a duration. Its window starts
at that wall-clock time on each matching local date and ends at the wall-clock time
``start + duration`` (wall-clock arithmetic, like the clock on the shop floor), both
converted to UTC. So across a DST change a shift keeps its local end time and its real
length changes: a 22:00 night shift of 8 h ends at 06:00 local and lasts 7 real hours
over the spring-forward night and 9 over the fall-back night (Europe/Berlin). A start in
the spring-forward gap (02:30 that does not exist) is read with the offset before the
change, i.e. an hour later in real time; an ambiguous wall-clock time (the repeated hour
in autumn) is its first occurrence.

Exceptions are per local date: a holiday removes one named shift starting that date, or
every shift when it names none; an extra adds a window (its own start and duration).
Overlapping windows are merged for planned time by :func:`merge_windows`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

MAX_SHIFT = timedelta(hours=24)


class CalendarError(ValueError):
    """A shift or an exception that cannot be expanded; the message says which."""


@dataclass(frozen=True, slots=True)
class Shift:
    """A weekly shift: weekday 0 = Monday, a local start time and a duration."""

    name: str
    weekday: int
    start_local: time
    duration: timedelta

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise CalendarError(f"shift {self.name!r}: weekday must be 0..6, got {self.weekday}")
        if not timedelta(0) < self.duration <= MAX_SHIFT:
            raise CalendarError(f"shift {self.name!r}: duration must be > 0 and <= 24 h")


@dataclass(frozen=True, slots=True)
class ShiftException:
    """A holiday (no shift, or no ``shift`` shift, that day) or an extra shift on a date."""

    date: date
    kind: Literal["holiday", "extra"]
    shift: str | None = None  # holiday: None = the whole day; extra: its name
    start_local: time | None = None  # extra only
    duration: timedelta | None = None  # extra only

    def __post_init__(self) -> None:
        if self.kind == "extra" and (self.start_local is None or self.duration is None):
            raise CalendarError(f"extra shift on {self.date}: needs a start time and a duration")
        if self.duration is not None and not timedelta(0) < self.duration <= MAX_SHIFT:
            raise CalendarError(f"extra shift on {self.date}: duration must be > 0 and <= 24 h")


class ShiftWindow(NamedTuple):
    """One occurrence of a shift in UTC, [start, end)."""

    name: str
    start: datetime
    end: datetime


def _window(
    name: str, day: date, start_local: time, duration: timedelta, tz: ZoneInfo
) -> ShiftWindow:
    # Same-tzinfo arithmetic in Python is wall-clock arithmetic: the local end time is kept.
    local_start = datetime.combine(day, start_local, tzinfo=tz)
    local_end = local_start + duration
    return ShiftWindow(name, local_start.astimezone(UTC), local_end.astimezone(UTC))


def _check_range(start: datetime, end: datetime) -> None:
    for what, dt in (("start", start), ("end", end)):
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise CalendarError(f"{what} must be a timezone-aware datetime")
    if end < start:
        raise CalendarError("end is before start")


def shift_windows(
    shifts: Iterable[Shift],
    *,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
    exceptions: Iterable[ShiftException] = (),
) -> list[ShiftWindow]:
    """Windows of ``shifts`` overlapping [start, end), clipped to it, sorted by start."""
    _check_range(start, end)
    by_day: dict[int, list[Shift]] = {}
    for s in shifts:
        by_day.setdefault(s.weekday, []).append(s)
    holidays: dict[date, set[str | None]] = {}
    extras: dict[date, list[ShiftException]] = {}
    for e in exceptions:
        if e.kind == "holiday":
            holidays.setdefault(e.date, set()).add(e.shift)
        else:
            extras.setdefault(e.date, []).append(e)
    # A shift lasts at most 24 h, so one that starts the day before can reach into the range.
    day = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date()
    out: list[ShiftWindow] = []
    while day <= last:
        off = holidays.get(day, set())
        if None not in off:
            for s in by_day.get(day.weekday(), ()):
                if s.name not in off:
                    out.append(_window(s.name, day, s.start_local, s.duration, tz))
        for e in extras.get(day, ()):
            assert e.start_local is not None and e.duration is not None  # checked on creation
            out.append(_window(e.shift or "extra", day, e.start_local, e.duration, tz))
        day += timedelta(days=1)
    lo, hi = start.astimezone(UTC), end.astimezone(UTC)
    clipped = [
        ShiftWindow(w.name, max(w.start, lo), min(w.end, hi))
        for w in out
        if w.start < hi and w.end > lo
    ]
    return sorted(clipped, key=lambda w: (w.start, w.end, w.name))


def merge_windows(windows: Iterable[ShiftWindow]) -> list[tuple[datetime, datetime]]:
    """Sorted, disjoint (start, end) covering the same time: overlaps count once."""
    out: list[tuple[datetime, datetime]] = []
    for w in sorted(windows, key=lambda w: w.start):
        if out and w.start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], w.end))
        elif w.end > w.start:
            out.append((w.start, w.end))
    return out


Bucket = Literal["none", "hour", "shift", "day", "week"]
_QUARTER = timedelta(minutes=15)


def bucket_edges(
    bucket: Bucket,
    *,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
    windows: Sequence[ShiftWindow] = (),
) -> list[datetime]:
    """Edges strictly inside (start, end) splitting it into ``bucket`` buckets (UTC).

    Hours, days and weeks (starting Monday) are local to ``tz``, so a local day is 23 or
    25 real hours across a DST change; ``shift`` splits at the shift windows' ends.
    """
    _check_range(start, end)
    lo, hi = start.astimezone(UTC), end.astimezone(UTC)
    if bucket == "none":
        edges: Iterable[datetime] = ()
    elif bucket == "shift":
        edges = [t for w in windows for t in (w.start, w.end)]
    elif bucket == "hour":
        edges = _local_hours(tz, lo, hi)
    else:
        edges = _local_midnights(tz, lo, hi, weekly=bucket == "week")
    return sorted({e for e in edges if lo < e < hi})


def _local_hours(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
    # Every zone's offset is a multiple of 15 minutes: test each UTC quarter-hour for
    # being a local full hour (this finds both 02:00 of a fall-back night, and no 02:00
    # of a spring-forward one).
    t = lo.replace(minute=lo.minute - lo.minute % 15, second=0, microsecond=0)
    out = []
    while t < hi:
        local = t.astimezone(tz)
        if local.minute == 0 and local.second == 0:
            out.append(t)
        t += _QUARTER
    return out


def _local_midnights(tz: ZoneInfo, lo: datetime, hi: datetime, *, weekly: bool) -> list[datetime]:
    day = lo.astimezone(tz).date()
    last = hi.astimezone(tz).date()
    out = []
    while day <= last:
        if not weekly or day.weekday() == 0:
            out.append(datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC))
        day += timedelta(days=1)
    return out
