"""OEE by bucket from a machine's rows cut into segments (pure, numpy).

:func:`api.oee.calc.compute_buckets` takes every state interval and count row into Python
objects; a year of per-minute counts and tens of thousands of intervals take seconds that
way. Here the window is cut at every bucket edge and every edge of planned production
time into *segments*: inside one, the bucket and whether the time is planned do not
change. numpy cuts the state intervals into their pieces per segment (:func:`cut_states`)
and :mod:`api.oee.counts` places the counts, from arrays the database sends as bytes
(``api/oee/repository.py``): no Python object per row. :func:`assemble` turns the sums into
the OeeResults compute_buckets gives for the same rows: the same rules, the same integers
(the tests hold the two equal).

Of a state only whether it is running and its whole length (micro-stops) matter here: a
planned stop's time lies outside planned production time by construction, so summing it
like any stop adds nothing. The planned stops themselves come first, with the planned
downtime, as the spans :func:`plan` takes out of the schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from api.oee.calc import TimeRange, bucket_points, window_limits
from api.oee.result import BucketResult, CycleCount, OeeResult, merge_mix
from api.oee.timeline import US_PER_S, Span, SpanIndex, to_us, union


@dataclass(frozen=True, slots=True)
class Frame:
    """What every machine of one request shares: the window, its buckets, the schedule."""

    lo: int  # the window in microseconds, cut at now
    hi: int
    open_end: int  # where an open state interval ends
    points: list[datetime]  # bucket bounds: the window's start, the edges inside, its end
    point_us: list[int]
    scheduled: SpanIndex


def frame(
    window: TimeRange,
    *,
    shifts: Sequence[TimeRange] | None,
    edges: Sequence[datetime],
    now: datetime | None,
) -> Frame:
    """The window, its buckets (as :func:`compute_buckets` cuts them) and scheduled time."""
    points = bucket_points(window, edges)
    lo, hi, open_end = window_limits(window, now)
    if shifts is None:
        scheduled = [(lo, hi)] if hi > lo else []
    else:
        scheduled = SpanIndex(union((to_us(s.start), to_us(s.end)) for s in shifts)).clip(lo, hi)
    return Frame(lo, hi, open_end, points, [to_us(p) for p in points], SpanIndex(scheduled))


@dataclass(frozen=True, slots=True)
class Plan:
    """One machine's segments: bounds (µs, ``lo`` to ``hi``), planned or not, bucket."""

    frame: Frame
    planned_spans: Spans
    bounds: list[int]  # empty when the window has no time left (hi == lo)
    inside: list[bool]  # per segment: planned production time
    bucket: list[int]  # per segment: index into the frame's buckets
    planned_us: list[int] = field(default_factory=list)  # per bucket: planned time in it

    @property
    def planned(self) -> SpanIndex:
        """Planned production time."""
        s = self.planned_spans
        return SpanIndex(list(zip(s.start.tolist(), s.end.tolist(), strict=True)))


class Spans(NamedTuple):
    """Spans as two arrays of µs (starts, ends): what numpy works on."""

    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]


def spans_of(spans: Iterable[Span]) -> Spans:
    pairs = list(spans)
    return Spans(
        np.array([a for a, _ in pairs], dtype=np.int64),
        np.array([b for _, b in pairs], dtype=np.int64),
    )


def plan(fr: Frame, excluded: Iterable[Span] | Spans) -> Plan:
    """Segments of one machine: ``excluded`` (planned downtime and planned stops) is taken
    out of the scheduled time to give planned production time. numpy does what
    :func:`api.oee.timeline.subtract` and :func:`~api.oee.timeline.union` do, to the same
    spans: a year of a machine can have thousands of planned stops."""
    holes = _union(excluded if isinstance(excluded, Spans) else spans_of(excluded))
    planned = _subtract(spans_of(fr.scheduled.spans), holes)
    if fr.hi <= fr.lo:
        return Plan(fr, planned, [], [], [], [0] * (len(fr.points) - 1))
    points = np.asarray(fr.point_us, dtype=np.int64)
    inner = points[(points > fr.lo) & (points < fr.hi)]
    bounds = np.unique(np.concatenate(([fr.lo, fr.hi], inner, planned.start, planned.end)))
    starts = bounds[:-1]
    j = np.searchsorted(planned.start, starts, side="right") - 1
    ends = planned.end[np.maximum(j, 0)] if len(planned.end) else starts
    inside = (j >= 0) & (starts < ends)
    bucket = np.searchsorted(points[1:], starts, side="right")
    # Planned time per bucket, over the bucket's part of the window (as assemble cuts it).
    a = np.clip(points[:-1], fr.lo, fr.hi)
    b = np.maximum(np.minimum(points[1:], fr.hi), a)
    per_bucket = _covered_before(planned, b) - _covered_before(planned, a)
    return Plan(fr, planned, bounds.tolist(), inside.tolist(), bucket.tolist(), per_bucket.tolist())


def _union(s: Spans) -> Spans:
    """Sorted, disjoint spans covering the same time; empty spans dropped, touching ones
    merged (:func:`api.oee.timeline.union`)."""
    keep = s.end > s.start
    start, end = s.start[keep], s.end[keep]
    order = np.lexsort((end, start))
    start, end = start[order], end[order]
    if not len(start):
        return Spans(start, end)
    reach = np.maximum.accumulate(end)
    first = np.concatenate(([True], start[1:] > reach[:-1]))
    last = np.concatenate((np.flatnonzero(first)[1:] - 1, [len(start) - 1]))
    return Spans(start[first], reach[last])


_INF = np.iinfo(np.int64).max


def _subtract(spans: Spans, holes: Spans) -> Spans:
    """``spans`` minus ``holes``, both from :func:`_union` (:func:`api.oee.timeline.subtract`):
    the spans' time that the gaps between the holes cover."""
    gap_start = np.concatenate(([-_INF], holes.end))
    gap_end = np.concatenate((holes.start, [_INF]))
    times = np.concatenate((spans.start, gap_start, spans.end, gap_end))
    n = len(spans.start) + len(gap_start)
    step = np.concatenate((np.ones(n, dtype=np.int64), -np.ones(n, dtype=np.int64)))
    order = np.lexsort((step, times))  # at one instant, ends before starts
    times, depth = times[order], np.cumsum(step[order])
    both = np.flatnonzero(depth[:-1] == 2)
    start, end = times[both], times[both + 1]
    keep = end > start
    return Spans(start[keep], end[keep])


def _covered_before(s: Spans, t: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Covered length of the (sorted, disjoint) spans before each t (SpanIndex._before)."""
    if not len(s.start):
        return np.zeros(len(t), dtype=np.int64)
    prefix = np.concatenate(([0], np.cumsum(s.end - s.start)))
    i = np.searchsorted(s.start, t, side="right")  # the spans that start at or before t
    prev = np.maximum(i - 1, 0)
    return np.where(i > 0, prefix[prev] + np.minimum(t, s.end[prev]) - s.start[prev], 0)


@dataclass(frozen=True, slots=True)
class StateSums:
    """What the states add to one bucket (microseconds, counts)."""

    run_us: int = 0  # running inside planned production time (micro-stops apart)
    micro_us: int = 0  # stops shorter than the threshold, inside planned time
    down_us: int = 0  # the other stops inside planned time
    outside_run_us: int = 0  # running outside planned time
    failures: int = 0
    micro_stops: int = 0


# What a state is to OEE, as StateRows.kind holds it: a state the loss classes do not know
# is a stop (and noted), as in api.oee.calc.
UNMAPPED, RUNNING, STOPPED = 0, 1, 2


class StateRows(NamedTuple):
    """A machine's state intervals as the database gives them: µs, one entry per interval
    (open intervals end where the window's open end is), and the kind of its state."""

    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    kind: npt.NDArray[np.uint8]  # UNMAPPED, RUNNING or STOPPED


def cut_states(
    p: Plan, rows: StateRows, threshold_us: int
) -> tuple[dict[int, StateSums], tuple[str, ...]]:
    """Per bucket, what the states add: each interval, clipped to the window, cut into its
    pieces per segment; running time inside or outside planned time, stop time inside it
    (a stop shorter than ``threshold_us``, whole, is a micro-stop); a stop counts once, in
    the segment of its first piece in planned time. A planned stop's time lies outside
    planned time by construction, so it adds nothing. Exact: integer µs throughout."""
    start, end, kind = rows
    timed = end > start
    notes = ("unmapped_state",) if bool(np.any(timed & (kind == UNMAPPED))) else ()
    if not p.bounds:
        return {}, notes
    bounds = np.asarray(p.bounds, dtype=np.int64)
    inside = np.asarray(p.inside, dtype=np.bool_)
    bucket = np.asarray(p.bucket, dtype=np.int64)
    a = np.maximum(start, bounds[0])
    z = np.minimum(end, bounds[-1])
    keep = a < z
    a, z, kind = a[keep], z[keep], kind[keep]
    micro = (end - start)[keep] < threshold_us
    # Each interval's segments, first to last; most lie inside one.
    first = np.searchsorted(bounds, a, side="right") - 1
    last = np.searchsorted(bounds, z - 1, side="right") - 1
    n = last - first + 1
    owner = np.repeat(np.arange(len(a)), n)
    seg = first[owner] + (np.arange(len(owner)) - (np.cumsum(n) - n)[owner])
    piece = np.minimum(z[owner], bounds[seg + 1]) - np.maximum(a[owner], bounds[seg])
    # The field of StateSums each piece adds to (-1: none).
    running = kind[owner] == RUNNING
    field_of = np.where(running, np.where(inside[seg], 0, 3), np.where(micro[owner], 1, 2))
    field_of[~running & ~inside[seg]] = -1
    # A stop counts in its first segment in planned time, if it has one.
    m = len(inside)
    next_planned = np.minimum.accumulate(np.where(inside, np.arange(m), m)[::-1])[::-1]
    counted = next_planned[first]
    stops = (kind != RUNNING) & (counted <= last)
    keys = np.concatenate(
        (
            (bucket[seg] * 6 + field_of)[field_of >= 0],
            bucket[counted[stops]] * 6 + np.where(micro[stops], 5, 4),
        )
    )
    values = np.concatenate((piece[field_of >= 0], np.ones(int(stops.sum()), dtype=np.int64)))
    sums = _sum_by(keys, values, 6 * (len(p.frame.points) - 1)).reshape(-1, 6).tolist()
    return {b: StateSums(*row) for b, row in enumerate(sums) if any(row)}, notes


def _sum_by(keys: npt.NDArray[np.int64], values: npt.NDArray[np.int64], size: int) -> Any:
    """Exact int64 sums of ``values`` per key in 0..size-1 (bincount would add floats)."""
    order = np.argsort(keys, kind="stable")
    totals = np.concatenate(([0], np.cumsum(values[order])))
    return np.diff(totals[np.searchsorted(keys[order], np.arange(size + 1))])


class CountSum(NamedTuple):
    """Counts of one product in one bucket, inside planned time or not."""

    bucket: int
    inside: bool
    product: str | None
    total: int
    good: int
    reject: int


@dataclass(frozen=True, slots=True)
class MachineSums:
    """What the database summed for one machine, and what reads them."""

    plan: Plan
    states: Mapping[int, StateSums]
    counts: Sequence[CountSum]
    cycle_of: Mapping[str | None, float | None]  # product -> ideal cycle time (None: unknown)
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class _Bucket:
    """Sums of one bucket over the machines."""

    planned_us: int = 0
    run_us: int = 0
    micro_us: int = 0
    down_us: int = 0
    outside_run_us: int = 0
    failures: int = 0
    micro_stops: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * 6)  # total, good, reject x2
    mix: dict[float | None, list[int]] = field(default_factory=dict)  # ict -> total, good


def assemble(fr: Frame, machines: Sequence[MachineSums]) -> list[BucketResult]:
    """One result per bucket, the sum of the machines': for one machine what
    :func:`compute_buckets` gives for its rows, for several what :func:`rollup` gives for
    theirs (a site's lines)."""
    ranges = [(max(a, fr.lo), max(min(b, fr.hi), max(a, fr.lo))) for a, b in pairwise(fr.point_us)]
    acc = [_Bucket() for _ in ranges]
    for m in machines:
        _add(acc, m)
    notes = tuple(sorted({n for m in machines for n in m.notes}))
    out = []
    for i, ((lo, hi), b) in enumerate(zip(ranges, acc, strict=True)):
        n = len(machines)  # each machine has the window's calendar and schedule
        result = _result(b, n * (hi - lo), n * fr.scheduled.covered(lo, hi), notes)
        out.append(BucketResult(fr.points[i], fr.points[i + 1], result))
    return out


def _add(acc: list[_Bucket], m: MachineSums) -> None:
    for b, planned in zip(acc, m.plan.planned_us, strict=True):
        b.planned_us += planned
    for i, s in m.states.items():
        b = acc[i]
        b.run_us += s.run_us
        b.micro_us += s.micro_us
        b.down_us += s.down_us
        b.outside_run_us += s.outside_run_us
        b.failures += s.failures
        b.micro_stops += s.micro_stops
    for c in m.counts:
        b = acc[c.bucket]
        k = 0 if c.inside else 3
        b.counts[k] += c.total
        b.counts[k + 1] += c.good
        b.counts[k + 2] += c.reject
        if c.inside:
            sums = b.mix.setdefault(m.cycle_of.get(c.product), [0, 0])
            sums[0] += c.total
            sums[1] += c.good


def _result(b: _Bucket, calendar_us: int, scheduled_us: int, notes: tuple[str, ...]) -> OeeResult:
    no_data = b.planned_us - b.run_us - b.micro_us - b.down_us
    return OeeResult(
        calendar_us=calendar_us,
        scheduled_us=scheduled_us,
        planned_us=b.planned_us,
        run_us=b.run_us + b.micro_us,
        down_us=b.down_us + no_data,
        micro_stop_us=b.micro_us,
        no_data_us=no_data,
        outside_run_us=b.outside_run_us,
        total=b.counts[0],
        good=b.counts[1],
        reject=b.counts[2],
        outside_total=b.counts[3],
        outside_good=b.counts[4],
        outside_reject=b.counts[5],
        micro_stops=b.micro_stops,
        failures=b.failures,
        cycle_mix=merge_mix(CycleCount(k, t, g) for k, (t, g) in b.mix.items()),
        notes=notes,
    )


def threshold_us(micro_stop_s: float) -> int:
    """The micro-stop threshold in microseconds, rounded as the calculation rounds it."""
    return round(micro_stop_s * US_PER_S)
