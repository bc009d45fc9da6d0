"""api.oee.counts: whole hours from the hourly rollup place counts exactly where their minutes
would (pure; the database side is in test_oee_api.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from api.oee import counts, segments
from api.oee.calc import TimeRange
from api.oee.timeline import to_us

T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)
HOUR = 3_600_000_000
MINUTE = 60_000_000
PRODUCTS = ["A", "B", None]


def _minute_rows(rows: list[tuple[int, int, int, int]]) -> counts.CountRows:
    """(minute index from T0, product index, good, reject): summed per minute and product."""
    sums: dict[tuple[int, int], list[int]] = {}
    for m, product, g, r in rows:
        acc = sums.setdefault((m, product), [0, 0])
        acc[0] += g
        acc[1] += r
    keys = sorted(sums)
    good = np.array([sums[k][0] for k in keys], dtype=np.int64)
    reject = np.array([sums[k][1] for k in keys], dtype=np.int64)
    return counts.CountRows(
        PRODUCTS,
        np.array([p for _, p in keys], dtype=np.int64),
        np.array([to_us(T0) + m * MINUTE for m, _ in keys], dtype=np.int64),
        good + reject,
        good,
        reject,
    )


def _hour_rows(minutes: counts.CountRows) -> counts.HourRows:
    """What production_counts_1h holds for these minutes."""
    acc: dict[tuple[int, int], list[int]] = {}
    for p, t, total, good, reject in zip(
        *(a.tolist() for a in minutes[1:]), strict=True
    ):  # fmt: skip
        hour = t - (t - to_us(T0)) % HOUR
        m = (t - hour) // MINUTE
        row = acc.setdefault((hour, p), [0, 0, 0, 60, -1, 0, 0, 0, 0])
        row[0] += total
        row[1] += good
        row[2] += reject
        if m < row[3]:
            row[3], row[6], row[7], row[8] = m, total, good, reject
        row[4] = max(row[4], m)
        row[5] |= 1 << m
    keys = sorted(acc)

    def col(i: int) -> np.ndarray:
        return np.array([acc[k][i] for k in keys], dtype=np.int64)

    rows = counts.CountRows(
        PRODUCTS,
        np.array([p for _, p in keys], dtype=np.int64),
        np.array([h for h, _ in keys], dtype=np.int64),
        col(0),
        col(1),
        col(2),
    )
    return counts.HourRows(rows, col(3), col(4), col(5), col(6), col(7), col(8))


def _only(rows: counts.CountRows, keep: set[tuple[int, int]]) -> counts.CountRows:
    """The minutes of the given (hour, product)."""
    hour = rows.time - (rows.time - to_us(T0)) % HOUR
    mask = np.array(
        [(h, p) in keep for h, p in zip(hour.tolist(), rows.product.tolist(), strict=True)],
        dtype=np.bool_,
    )
    return counts.CountRows(rows.products, *(a[mask] for a in rows[1:]))


@st.composite
def cases(draw: st.DrawFn) -> tuple[segments.Plan, counts.CountRows]:
    hours = draw(st.integers(1, 5))
    end = T0 + timedelta(hours=hours)
    lo = to_us(T0)
    # Bucket edges and planned time cut anywhere, to the microsecond, or on minutes.
    instant = st.one_of(
        st.integers(1, hours * HOUR - 1), st.integers(1, hours * 60 - 1).map(lambda m: m * MINUTE)
    )
    edges = sorted({T0 + timedelta(microseconds=u) for u in draw(st.lists(instant, max_size=6))})
    now = draw(st.none() | instant.map(lambda u: T0 + timedelta(microseconds=u)))
    shifts = draw(
        st.none()
        | st.lists(st.tuples(instant, instant), max_size=3).map(
            lambda xs: [
                TimeRange(
                    T0 + timedelta(microseconds=min(a, b)),
                    T0 + timedelta(microseconds=max(a, b) + 1),
                )
                for a, b in xs
            ]
        )
    )
    excluded = [
        (lo + min(a, b), lo + max(a, b) + 1)
        for a, b in draw(st.lists(st.tuples(instant, instant), max_size=4))
    ]
    fr = segments.frame(TimeRange(T0, end), shifts=shifts, edges=edges, now=now)
    p = segments.plan(fr, excluded)
    minute = st.tuples(
        st.integers(0, hours * 60 - 1), st.integers(0, 2), st.integers(0, 9), st.integers(0, 3)
    )
    return p, _minute_rows(draw(st.lists(minute, max_size=80)))


def _sorted(sums: list[segments.CountSum]) -> list[segments.CountSum]:
    return sorted(sums, key=lambda c: (c.bucket, c.inside, str(c.product)))


@settings(max_examples=400, deadline=None)
@given(cases())
def test_whole_hours_place_counts_where_their_minutes_go(
    case: tuple[segments.Plan, counts.CountRows],
) -> None:
    p, minutes = case
    want = counts.count_sums(p, [counts.cut_minutes(p, minutes)])
    hours = _hour_rows(minutes)
    placed, raw = counts.cut_hours(p, hours)
    c = hours.counts
    read = set(zip(c.time[raw].tolist(), c.product[raw].tolist(), strict=True))
    placed.append(counts.cut_minutes(p, _only(minutes, read)))
    assert _sorted(counts.count_sums(p, placed)) == _sorted(want)


def test_an_hour_split_at_its_first_minute_is_not_read_again() -> None:
    # Planned time starts at 06:00:30: the hour's first minute (06:00) lies before it, the
    # rest inside; the rollup's first-minute sums place the hour without its minutes.
    fr = segments.frame(TimeRange(T0, T0 + timedelta(hours=1)), shifts=None, edges=[], now=None)
    p = segments.plan(fr, [(to_us(T0) - HOUR, to_us(T0) + 30_000_000)])
    minutes = _minute_rows([(0, 0, 5, 1), (1, 0, 7, 0), (59, 0, 2, 2)])
    placed, raw = counts.cut_hours(p, _hour_rows(minutes))
    assert not raw.any()
    assert _sorted(counts.count_sums(p, placed)) == [
        segments.CountSum(0, False, "A", 6, 5, 1),
        segments.CountSum(0, True, "A", 11, 9, 2),
    ]
    # Counts on both sides of a second cut: that hour is read minute by minute.
    p = segments.plan(fr, [(to_us(T0) - HOUR, to_us(T0) + 30_000_000),
                           (to_us(T0) + 10 * MINUTE, to_us(T0) + 20 * MINUTE)])  # fmt: skip
    minutes = _minute_rows([(0, 0, 5, 1), (15, 0, 7, 0), (59, 0, 2, 2)])
    _, raw = counts.cut_hours(p, _hour_rows(minutes))
    assert raw.tolist() == [True]


def test_a_minute_cut_by_the_window_start_goes_with_the_start() -> None:
    start = T0 + timedelta(seconds=30)
    fr = segments.frame(TimeRange(start, T0 + timedelta(hours=1)), shifts=None, edges=[], now=None)
    p = segments.plan(fr, [])
    placed = counts.cut_minutes(p, _minute_rows([(0, 1, 3, 1)]))  # counted at 06:00:40
    assert counts.count_sums(p, [placed]) == [segments.CountSum(0, True, "B", 4, 3, 1)]
