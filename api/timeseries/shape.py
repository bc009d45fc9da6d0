"""Shape-keeping downsampling: M4 and LTTB, pure functions over points in time order.

M4 (Jugel et al., VLDB 2014) keeps the first, last, lowest and highest point of each
column of time: a line chart drawn from them is the same, pixel for pixel, as one drawn
from every point, when the columns are the chart's pixel columns. ``repository.m4`` runs
it in SQL over the raw samples; ``m4`` here is its definition (the tests hold the two
equal), with the same tie rule: the earliest point wins.

LTTB (largest triangle three buckets, Steinarsson 2013) keeps the first and the last point
and, from each of ``n - 2`` buckets of equal point count between them, the point making
the largest triangle with the point kept before it and the mean of the next bucket: ``n``
points that follow the visual shape with no column grid. It needs the points in memory.

Both return indices into the input, ascending: the result is a subset of the input in
its order, never an invented point.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from math import fsum


def m4(columns: Sequence[int], values: Sequence[float]) -> list[int]:
    """Indices of the first, last, lowest and highest point of each column, ascending.

    ``columns[i]`` is the column of point ``i``; the points are in time order, so the
    columns never decrease. A tie goes to the earliest point. (The SQL returns distinct
    ``(time, value)`` pairs: two identical samples are one point there.)
    """
    if len(columns) != len(values):
        raise ValueError("columns and values differ in length")
    kept: set[int] = set()
    for _column, members in groupby(range(len(values)), key=columns.__getitem__):
        span = list(members)
        kept.update(
            (
                span[0],
                span[-1],
                min(span, key=values.__getitem__),
                max(span, key=values.__getitem__),
            )
        )
    return sorted(kept)


def lttb(xs: Sequence[float], ys: Sequence[float], n: int) -> list[int]:
    """Indices of the ``min(n, len(xs))`` points LTTB keeps, ascending (first and last kept).

    ``xs`` must not decrease (time in seconds, say). ``n`` below 3 is refused unless every
    point fits: LTTB keeps the two ends and at least one point between them.
    """
    size = len(xs)
    if size != len(ys):
        raise ValueError("xs and ys differ in length")
    if size <= n:
        return list(range(size))
    if n < 3:
        raise ValueError("LTTB keeps at least 3 points: the first, the last and one between")

    def bound(i: int) -> int:
        # Integer bucket edges over the points between the two ends: exact, never empty.
        return i * (size - 2) // (n - 2) + 1

    kept = [0]
    for i in range(n - 2):
        lo, hi, after = bound(i), bound(i + 1), bound(i + 2) if i < n - 3 else size
        mean = (fsum(xs[hi:after]) / (after - hi), fsum(ys[hi:after]) / (after - hi))
        kept.append(_largest_triangle(xs, ys, anchor=kept[-1], lo=lo, hi=hi, mean=mean))
    kept.append(size - 1)
    return kept


def _largest_triangle(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    anchor: int,
    lo: int,
    hi: int,
    mean: tuple[float, float],
) -> int:
    """The index in ``[lo, hi)`` whose triangle with ``anchor`` and ``mean`` is largest."""
    ax, ay = xs[anchor], ys[anchor]
    dx, dy = mean[0] - ax, mean[1] - ay
    best, best_area = lo, -1.0
    for j in range(lo, hi):
        # Twice the triangle's area (the cross product); the factor does not change the pick.
        area = abs(dx * (ys[j] - ay) - dy * (xs[j] - ax))
        if area > best_area:
            best, best_area = j, area
    return best
