"""The shape-keeping downsamplers as pure functions: M4 and LTTB, tables and properties."""

from __future__ import annotations

import math
from bisect import bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.timeseries.shape import lttb, m4

values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


@st.composite
def columned(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    """Points in time order with the (non-decreasing, maybe gappy) column of each."""
    ys = draw(st.lists(values, max_size=200))
    steps = draw(st.lists(st.integers(0, 3), min_size=len(ys), max_size=len(ys)))
    return [sum(steps[: i + 1]) for i in range(len(ys))], ys


@st.composite
def series(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """Non-decreasing xs (repeats allowed) and ys of the same length."""
    ys = draw(st.lists(values, max_size=300))
    gaps = draw(st.lists(st.floats(0, 100, allow_nan=False), min_size=len(ys), max_size=len(ys)))
    return [math.fsum(gaps[: i + 1]) for i in range(len(ys))], ys


def _groups(columns: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, c in enumerate(columns):
        out.setdefault(c, []).append(i)
    return out


@settings(max_examples=300, deadline=None)
@given(columned())
def test_m4_keeps_first_last_and_extremes_of_every_column(
    data: tuple[list[int], list[float]],
) -> None:
    columns, ys = data
    kept = m4(columns, ys)
    assert kept == sorted(set(kept)) and all(0 <= i < len(ys) for i in kept)  # a subset, in order
    groups = _groups(columns)
    assert len(kept) <= 4 * len(groups)
    for members in groups.values():
        mine = [i for i in kept if columns[i] == columns[members[0]]]
        assert members[0] in mine and members[-1] in mine
        # Ties go to the earliest point: exactly the first lowest and first highest.
        assert min(members, key=ys.__getitem__) in mine
        assert max(members, key=ys.__getitem__) in mine
        assert len(mine) <= 4
    if ys:
        assert kept[0] == 0 and kept[-1] == len(ys) - 1


@pytest.mark.parametrize(
    ("columns", "ys", "expected"),
    [
        ([], [], []),
        ([0], [5.0], [0]),
        # One column: first, the low, the high, last.
        ([0] * 6, [3.0, 1.0, 9.0, 9.0, 1.0, 4.0], [0, 1, 2, 5]),
        # Two columns; the second a single point.
        ([0, 0, 0, 7], [2.0, 2.0, 2.0, 8.0], [0, 2, 3]),
    ],
)
def test_m4_table(columns: list[int], ys: list[float], expected: list[int]) -> None:
    assert m4(columns, ys) == expected


def test_m4_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        m4([0, 1], [1.0])


@settings(max_examples=300, deadline=None)
@given(series(), st.integers(3, 60))
def test_lttb_keeps_n_points_a_subset_with_both_ends(
    data: tuple[list[float], list[float]], n: int
) -> None:
    xs, ys = data
    kept = lttb(xs, ys, n)
    assert len(kept) == min(n, len(xs))
    assert kept == sorted(set(kept)) and all(0 <= i < len(xs) for i in kept)
    if xs:
        assert kept[0] == 0 and kept[-1] == len(xs) - 1


@settings(max_examples=200, deadline=None)
@given(st.integers(5, 400), st.integers(3, 40))
def test_lttb_takes_one_point_from_each_bucket(size: int, n: int) -> None:
    # Steinarsson's buckets: the points between the ends in n - 2 runs of (nearly) equal
    # length, bucket i starting at point floor(i * (size - 2) / (n - 2)) + 1; every run
    # gives exactly one point.
    xs = [float(i) for i in range(size)]
    ys = [math.sin(i / 3) for i in range(size)]
    kept = lttb(xs, ys, n)
    if size <= n:
        assert kept == list(range(size))
        return
    starts = [i * (size - 2) // (n - 2) + 1 for i in range(n - 1)]
    assert starts[-1] == size - 1
    buckets = [bisect_right(starts, i) - 1 for i in kept[1:-1]]
    assert buckets == list(range(n - 2))


@pytest.mark.parametrize(
    ("ys", "n", "expected"),
    [
        # One bucket [1, 4) between the ends: the point farthest from the line 0 → 4.
        ([0.0, 1.0, 5.0, 2.0, 0.0], 3, [0, 2, 4]),
        # Buckets [1, 3) and [3, 5). First: anchor (0, 0), next mean (3.5, 1.5): twice the
        # areas 1.5 (x=1) and 11 (x=2). Second: anchor (2, 4), next (5, 0): 8 (x=3), 5 (x=4).
        ([0.0, 0.0, 4.0, 0.0, 3.0, 0.0], 4, [0, 2, 3, 5]),
    ],
)
def test_lttb_worked(ys: list[float], n: int, expected: list[int]) -> None:
    assert lttb([float(i) for i in range(len(ys))], ys, n) == expected


def test_lttb_keeps_a_lone_spike() -> None:
    # The point a min/max-free thinning (every k-th point) would likely drop.
    ys = [0.0] * 1000
    ys[637] = 50.0
    kept = lttb([float(i) for i in range(1000)], ys, 20)
    assert 637 in kept and len(kept) == 20


def test_lttb_refuses_fewer_than_three_unless_all_fit() -> None:
    assert lttb([0.0, 1.0], [1.0, 2.0], 2) == [0, 1]
    with pytest.raises(ValueError, match="at least 3"):
        lttb([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match="length"):
        lttb([0.0], [], 3)
