"""Exact interval arithmetic on integer microseconds (UTC), the base of the OEE figures.

Every time is an ``int`` of microseconds since the Unix epoch: datetimes and PostgreSQL
timestamps have microsecond resolution, so nothing is rounded, and splitting an interval
at any edge gives pieces whose lengths add up exactly. Spans are half-open ``(lo, hi)``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate

Span = tuple[int, int]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
US_PER_S = 1_000_000


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch of a tz-aware datetime (the caller checks awareness)."""
    return (dt - _EPOCH) // _US


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans covering the same time; empty spans dropped, touching ones merged."""
    out: list[Span] = []
    for lo, hi in sorted(s for s in spans if s[1] > s[0]):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def subtract(spans: Sequence[Span], holes: Sequence[Span]) -> list[Span]:
    """``spans`` minus ``holes`` (both sorted and disjoint, as from :func:`union`)."""
    out: list[Span] = []
    j = 0
    for lo, hi in spans:
        cur = lo
        while j < len(holes) and holes[j][1] <= cur:
            j += 1
        k = j
        while k < len(holes) and holes[k][0] < hi:
            if holes[k][0] > cur:
                out.append((cur, holes[k][0]))
            cur = max(cur, holes[k][1])
            k += 1
        if cur < hi:
            out.append((cur, hi))
    return out


class SpanIndex:
    """Sorted disjoint spans with prefix sums: covered length of any range in O(log n)."""

    __slots__ = ("_ends", "_prefix", "_starts", "spans")

    def __init__(self, spans: Sequence[Span]) -> None:
        self.spans = list(spans)
        self._starts = [lo for lo, _ in self.spans]
        self._ends = [hi for _, hi in self.spans]
        self._prefix = [0, *accumulate(hi - lo for lo, hi in self.spans)]

    def _before(self, t: int) -> int:
        """Covered length in (-inf, t)."""
        i = bisect_right(self._starts, t)
        if i == 0:
            return 0
        return self._prefix[i - 1] + min(t, self._ends[i - 1]) - self._starts[i - 1]

    def covered(self, lo: int, hi: int) -> int:
        """Covered length inside [lo, hi)."""
        return self._before(hi) - self._before(lo) if hi > lo else 0

    def contains(self, t: int) -> bool:
        """Whether instant ``t`` lies inside a span."""
        i = bisect_right(self._starts, t)
        return i > 0 and t < self._ends[i - 1]

    def clip(self, lo: int, hi: int) -> list[Span]:
        """The parts of the spans inside [lo, hi), in order."""
        i = max(bisect_right(self._starts, lo) - 1, 0)
        j = bisect_left(self._starts, hi)
        out: list[Span] = []
        for a, b in self.spans[i:j]:
            a, b = max(a, lo), min(b, hi)
            if b > a:
                out.append((a, b))
        return out

    @property
    def total(self) -> int:
        """Covered length of all spans."""
        return self._prefix[-1]
