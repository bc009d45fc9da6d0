"""Shift calendar expansion and local bucket edges, incl. Europe/Berlin DST both ways."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from api.calendar import (
    CalendarError,
    Shift,
    ShiftException,
    ShiftWindow,
    bucket_edges,
    merge_windows,
    shift_windows,
)

BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def _nights(weekday: int) -> list[Shift]:
    return [Shift("night", weekday, time(22), timedelta(hours=8))]


def test_plain_week_in_winter_is_local_time() -> None:
    shifts = [Shift("early", d, time(6), 8 * H) for d in range(5)]
    got = shift_windows(shifts, tz=BERLIN, start=_utc(2026, 1, 5), end=_utc(2026, 1, 12))
    assert len(got) == 5  # Monday to Friday, none at the weekend
    assert got[0] == ShiftWindow("early", _utc(2026, 1, 5, 5), _utc(2026, 1, 5, 13))  # CET +1


def test_night_shift_over_spring_forward_lasts_seven_hours() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST; Saturday 28th is weekday 5.
    got = shift_windows(_nights(5), tz=BERLIN, start=_utc(2026, 3, 28), end=_utc(2026, 3, 30))
    assert got == [ShiftWindow("night", _utc(2026, 3, 28, 21), _utc(2026, 3, 29, 4))]
    assert got[0].end - got[0].start == 7 * H  # 22:00 CET to 06:00 CEST


def test_night_shift_over_fall_back_lasts_nine_hours() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET; Saturday 24th.
    got = shift_windows(_nights(5), tz=BERLIN, start=_utc(2026, 10, 24), end=_utc(2026, 10, 26))
    assert got == [ShiftWindow("night", _utc(2026, 10, 24, 20), _utc(2026, 10, 25, 5))]
    assert got[0].end - got[0].start == 9 * H


def test_start_in_the_gap_is_read_with_the_old_offset() -> None:
    shifts = [Shift("odd", 6, time(2, 30), 2 * H)]  # Sunday 02:30 does not exist on 29 March
    got = shift_windows(shifts, tz=BERLIN, start=_utc(2026, 3, 29), end=_utc(2026, 3, 30))
    assert got[0].start == _utc(2026, 3, 29, 1, 30)  # 02:30 CET = 03:30 CEST


def test_previous_day_shift_reaching_in_is_clipped() -> None:
    got = shift_windows(_nights(0), tz=BERLIN, start=_utc(2026, 1, 6, 0), end=_utc(2026, 1, 7))
    assert got == [ShiftWindow("night", _utc(2026, 1, 6, 0), _utc(2026, 1, 6, 5))]


def test_holidays_remove_shifts_and_extras_add_them() -> None:
    shifts = [Shift("early", 0, time(6), 8 * H), Shift("late", 0, time(14), 8 * H)]
    monday = date(2026, 1, 5)
    rng = {"tz": BERLIN, "start": _utc(2026, 1, 5), "end": _utc(2026, 1, 6)}
    whole_day = [ShiftException(monday, "holiday")]
    assert shift_windows(shifts, exceptions=whole_day, **rng) == []  # type: ignore[arg-type]
    one = [ShiftException(monday, "holiday", "late")]
    assert [w.name for w in shift_windows(shifts, exceptions=one, **rng)] == ["early"]  # type: ignore[arg-type]
    extra = [ShiftException(date(2026, 1, 10), "extra", "sat", time(8), 4 * H)]
    week = shift_windows(
        shifts, tz=BERLIN, start=_utc(2026, 1, 5), end=_utc(2026, 1, 12), exceptions=extra
    )
    assert week[-1] == ShiftWindow("sat", _utc(2026, 1, 10, 7), _utc(2026, 1, 10, 11))


def test_overlapping_windows_merge_for_planned_time() -> None:
    shifts = [Shift("a", 0, time(6), 8 * H), Shift("b", 0, time(12), 8 * H)]
    got = shift_windows(shifts, tz=BERLIN, start=_utc(2026, 1, 5), end=_utc(2026, 1, 6))
    assert merge_windows(got) == [(_utc(2026, 1, 5, 5), _utc(2026, 1, 5, 19))]


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(CalendarError, match="weekday"):
        Shift("x", 7, time(6), H)
    with pytest.raises(CalendarError, match="duration"):
        Shift("x", 0, time(6), 25 * H)
    with pytest.raises(CalendarError, match="start time"):
        ShiftException(date(2026, 1, 1), "extra")
    with pytest.raises(CalendarError, match="timezone-aware"):
        shift_windows([], tz=BERLIN, start=datetime(2026, 1, 1), end=_utc(2026, 1, 2))


@pytest.mark.parametrize(
    ("day", "hours"), [((2026, 3, 29), 23), ((2026, 10, 25), 25), ((2026, 1, 5), 24)]
)
def test_local_days_and_hours_across_dst(day: tuple[int, int, int], hours: int) -> None:
    start = datetime(*day, tzinfo=BERLIN).astimezone(UTC)
    end = (datetime(*day, tzinfo=BERLIN) + timedelta(days=1)).astimezone(UTC)
    assert end - start == hours * H
    # A window a day wider each side: the day edges are exactly the local midnights.
    days = bucket_edges("day", tz=BERLIN, start=start - 24 * H, end=end + 24 * H)
    assert days == [start, end]
    edges = bucket_edges("hour", tz=BERLIN, start=start, end=end)
    assert len(edges) == hours - 1  # hours - 1 inner edges: `hours` buckets
    assert all(b - a == H for a, b in zip([start, *edges], [*edges, end], strict=True))


def test_week_edges_are_local_mondays() -> None:
    edges = bucket_edges("week", tz=BERLIN, start=_utc(2026, 3, 20), end=_utc(2026, 4, 10))
    assert [e.astimezone(BERLIN).strftime("%a %H:%M") for e in edges] == ["Mon 00:00"] * 3
    assert edges[0] == _utc(2026, 3, 22, 23) and edges[1] == _utc(2026, 3, 29, 22)


def test_shift_edges_are_window_ends_inside_the_range() -> None:
    windows = [ShiftWindow("a", _utc(2026, 1, 5, 5), _utc(2026, 1, 5, 13))]
    edges = bucket_edges(
        "shift", tz=BERLIN, start=_utc(2026, 1, 5), end=_utc(2026, 1, 6), windows=windows
    )
    assert edges == [_utc(2026, 1, 5, 5), _utc(2026, 1, 5, 13)]
    assert bucket_edges("none", tz=BERLIN, start=_utc(2026, 1, 5), end=_utc(2026, 1, 6)) == []
