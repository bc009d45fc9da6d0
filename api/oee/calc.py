"""OEE of one asset over a window, whole or by bucket: pure, exact and explainable.

The repository layer loads rows and calls :func:`compute_oee` / :func:`compute_buckets`;
nothing here touches a database or HTTP. Rules (DESIGN.md "Domain rules", ISO 22400-2):

* Calendar time is the window, cut at ``now`` (time that has not happened is not counted).
* Scheduled time = calendar time inside the shifts (``shifts=None``: all of it).
  Planned production time = scheduled time − planned downtime windows − intervals whose
  state maps to ``planned_down`` (or whose reason is a planned one), never negative.
* Inside planned production time, every instant is exactly one of: running, a micro-stop,
  an unplanned stop, or no state data (a gap). Run time = running + micro-stops (a
  micro-stop is an unplanned stop whose *whole* duration is below the threshold: it costs
  performance, not availability). Down time = unplanned stops + gaps, so planned = run +
  down exactly. A gap is an availability loss (no data is not good news) but not a failure.
* A machine running outside planned production time (in a break, off shift) adds nothing
  to run time; that time is reported as ``outside_run_s`` and the parts counted outside
  planned production time as ``outside_total/good/reject``, kept out of A, P, Q and OEE
  so that no break can lift performance above 100 %. Flag ``production_outside_planned_time``.
* Counts belong to the bucket of their timestamp; the ideal cycle time is the one of the
  product on that count row.
* A = run / planned; P = Σ(ict × total) / run; Q = Σ(ict × good) / Σ(ict × total), which is
  good / total whenever one product (one ideal cycle time) was made, and the ideal-time
  weighted quality for a product mix (so OEE = A × P × Q holds for a mix too; the plain
  count ratio is ``count_quality``); OEE = Σ(ict × good) / planned; TEEP = Σ(ict × good) /
  calendar. With parts but no ideal cycle time for some of them, P, OEE and TEEP are None.
* P = 0 when the machine ran and made nothing (a real 0), and OEE = 0 when planned time
  passed without a good part, even though Q (no parts) is None.
* MTBF = run / failures; MTTR = unplanned stop time (gaps excluded) / failures. A stop is
  counted in the bucket holding its first second of planned production time.
* Any ratio with a zero denominator is None. Performance above 100 % is reported as is and
  flagged ``performance_over_100``: the ideal cycle time is wrong. Parts counted in planned
  time without any run time (the state mapping or the counters are wrong) make P None and
  carry both ``performance_over_100`` and ``parts_without_run_time``.

Durations are integer microseconds and ideal times exact fractions until a ratio or a
``*_s`` property is read, so bucket results add up exactly to the whole.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType
from typing import NamedTuple

from api.oee.result import BucketResult, CycleCount, OeeResult, merge_mix
from api.oee.timeline import US_PER_S, Span, SpanIndex, subtract, to_us, union


class OeeInputError(ValueError):
    """The rows given to the OEE calculation are inconsistent; the message says which."""


class LossClass(StrEnum):
    """What a machine state means for OEE."""

    RUNNING = "running"
    UNPLANNED_DOWN = "unplanned_down"  # availability loss (or performance, if a micro-stop)
    PLANNED_DOWN = "planned_down"  # taken out of planned production time


# Idle, starved and blocked count against the machine's availability by default: the
# machine was scheduled and did not run. A caller who wants a starved machine judged only
# on its own faults maps them to planned_down (or uses the line's root-cause view).
DEFAULT_STATE_CLASSES: Mapping[str, LossClass] = MappingProxyType(
    {
        "running": LossClass.RUNNING,
        "idle": LossClass.UNPLANNED_DOWN,
        "starved": LossClass.UNPLANNED_DOWN,
        "blocked": LossClass.UNPLANNED_DOWN,
        "faulted": LossClass.UNPLANNED_DOWN,
        "fault": LossClass.UNPLANNED_DOWN,
        "stopped": LossClass.UNPLANNED_DOWN,
        "changeover": LossClass.PLANNED_DOWN,
        "break": LossClass.PLANNED_DOWN,
        "planned_maintenance": LossClass.PLANNED_DOWN,
        "no_orders": LossClass.PLANNED_DOWN,
    }
)


def _check_aware(dt: datetime, what: str) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise OeeInputError(f"{what} must be a timezone-aware datetime, got {dt!r}")


def _check_order(start: datetime, end: datetime, what: str) -> None:
    _check_aware(start, f"{what} start")
    _check_aware(end, f"{what} end")
    if end < start:
        raise OeeInputError(f"{what} ends ({end.isoformat()}) before it starts ({start})")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open time range [start, end): the analysis window or one shift."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _check_order(self.start, self.end, "time range")


@dataclass(frozen=True, slots=True)
class PlannedDowntime:
    """A scheduled stop (break, planned_maintenance, no_orders, changeover...)."""

    start: datetime
    end: datetime
    category: str = "planned"

    def __post_init__(self) -> None:
        _check_order(self.start, self.end, f"planned downtime {self.category!r}")


@dataclass(frozen=True, slots=True)
class StateInterval:
    """A machine state from ``start`` to ``end`` (None: still open, ends at ``now``)."""

    start: datetime
    end: datetime | None
    state: str
    reason: str | None = None
    planned: bool = False  # the reason is a planned one (downtime_reasons.planned)
    category: str | None = None

    def __post_init__(self) -> None:
        if not self.state:
            raise OeeInputError(f"state interval at {self.start!r} has an empty state")
        if self.end is None:
            _check_aware(self.start, f"state {self.state!r} start")
        else:
            _check_order(self.start, self.end, f"state {self.state!r}")


@dataclass(frozen=True, slots=True)
class ProductionCount:
    """Parts counted at ``time`` (a delta, not a counter reading)."""

    time: datetime
    total: int
    good: int
    reject: int
    product: str | None = None

    def __post_init__(self) -> None:
        _check_aware(self.time, "count time")
        for name in ("total", "good", "reject"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise OeeInputError(f"count at {self.time}: {name} must be an int >= 0")
        if self.good + self.reject != self.total:
            raise OeeInputError(
                f"count at {self.time}: good {self.good} + reject {self.reject} "
                f"!= total {self.total}"
            )


def _check_cycle(value: float, what: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise OeeInputError(f"{what} must be a finite number of seconds > 0, got {value!r}")


def check_ideal_cycles(cycles: Mapping[str, float]) -> None:
    """Every ideal cycle time is a finite number of seconds > 0 (else OeeInputError)."""
    for product, seconds in cycles.items():
        _check_cycle(seconds, f"ideal cycle time of product {product!r}")


@dataclass(frozen=True)
class OeeInput:
    """Everything the calculation needs for one asset; mappings resolved by the caller."""

    window: TimeRange
    shifts: Sequence[TimeRange] | None = None  # None: the whole window is scheduled
    planned_downtime: Sequence[PlannedDowntime] = ()
    states: Sequence[StateInterval] = ()
    counts: Sequence[ProductionCount] = ()
    ideal_cycle_s: Mapping[str, float] = field(default_factory=dict)  # product -> seconds
    default_ideal_cycle_s: float | None = None  # unknown or None product
    state_classes: Mapping[str, LossClass] = field(default_factory=lambda: DEFAULT_STATE_CLASSES)
    micro_stop_s: float = 0.0
    now: datetime | None = None  # open intervals end here; the window is cut here

    def __post_init__(self) -> None:
        check_ideal_cycles(self.ideal_cycle_s)
        if self.default_ideal_cycle_s is not None:
            _check_cycle(self.default_ideal_cycle_s, "default ideal cycle time")
        if not (math.isfinite(self.micro_stop_s) and self.micro_stop_s >= 0):
            raise OeeInputError(f"micro_stop_s must be >= 0, got {self.micro_stop_s!r}")
        if self.now is not None:
            _check_aware(self.now, "now")

    def cycle_of(self, product: str | None) -> float | None:
        """Ideal cycle time of a product on this machine, else the default."""
        if product is not None and product in self.ideal_cycle_s:
            return float(self.ideal_cycle_s[product])
        return self.default_ideal_cycle_s


class _Count(NamedTuple):  # a tuple: a year of count rows is built fast
    t: int
    total: int
    good: int
    reject: int
    ict: float | None
    inside: bool


@dataclass(frozen=True, slots=True)
class _Prepared:
    """The window's time split once into indexed classes; buckets only read it."""

    lo: int
    hi: int
    scheduled: SpanIndex
    planned: SpanIndex
    run: SpanIndex
    micro: SpanIndex
    down: SpanIndex
    no_data: SpanIndex
    outside_run: SpanIndex
    failure_at: list[int]
    micro_at: list[int]
    counts: list[_Count]
    count_times: list[int]
    notes: tuple[str, ...]


def _normalise_states(
    inp: OeeInput, open_end: int, notes: set[str]
) -> list[tuple[int, int, LossClass]]:
    """Sorted, disjoint (start, end, class): a state ends where the next one starts."""
    rows = sorted(inp.states, key=lambda s: s.start)
    out: list[tuple[int, int, LossClass]] = []
    for i, iv in enumerate(rows):
        start = to_us(iv.start)
        end = open_end if iv.end is None else to_us(iv.end)
        if i + 1 < len(rows) and (nxt := to_us(rows[i + 1].start)) < end:
            notes.add("overlapping_states")
            end = nxt
        if end <= start:
            continue
        cls = inp.state_classes.get(iv.state)
        if cls is None:
            notes.add("unmapped_state")
            cls = LossClass.UNPLANNED_DOWN
        if iv.planned and cls is LossClass.UNPLANNED_DOWN:
            cls = LossClass.PLANNED_DOWN
        out.append((start, end, cls))
    return out


def window_limits(window: TimeRange, now: datetime | None) -> tuple[int, int, int]:
    """(lo, hi, open end) in µs: the window cut at ``now``; open intervals end at now."""
    lo, hi = to_us(window.start), to_us(window.end)
    if now is None:
        return lo, hi, hi
    now_us = to_us(now)
    return lo, max(lo, min(hi, now_us)), now_us


def _prepare(inp: OeeInput) -> _Prepared:
    lo, hi, open_end = window_limits(inp.window, inp.now)
    if inp.shifts is None:
        scheduled = [(lo, hi)] if hi > lo else []
    else:
        shifts = union((to_us(s.start), to_us(s.end)) for s in inp.shifts)
        scheduled = SpanIndex(shifts).clip(lo, hi)
    notes: set[str] = set()
    states = _normalise_states(inp, open_end, notes)
    excluded = union(
        [(to_us(d.start), to_us(d.end)) for d in inp.planned_downtime]
        + [(s, e) for s, e, cls in states if cls is LossClass.PLANNED_DOWN]
    )
    planned = SpanIndex(subtract(scheduled, excluded))
    pieces = _split_states(states, planned, lo=lo, hi=hi, threshold=_threshold_us(inp))
    covered = union((s, e) for s, e, _ in states)
    counts = _counts(inp, planned, lo=lo, hi=hi)
    return _Prepared(
        lo=lo,
        hi=hi,
        scheduled=SpanIndex(scheduled),
        planned=planned,
        run=SpanIndex(pieces.run),
        micro=SpanIndex(pieces.micro),
        down=SpanIndex(pieces.down),
        no_data=SpanIndex(subtract(planned.spans, covered)),
        outside_run=SpanIndex(pieces.outside_run),
        failure_at=sorted(pieces.failure_at),
        micro_at=sorted(pieces.micro_at),
        counts=counts,
        count_times=[c.t for c in counts],
        notes=tuple(sorted(notes)),
    )


def _threshold_us(inp: OeeInput) -> int:
    return round(inp.micro_stop_s * US_PER_S)


@dataclass(slots=True)
class _Pieces:
    run: list[Span] = field(default_factory=list)
    micro: list[Span] = field(default_factory=list)
    down: list[Span] = field(default_factory=list)
    outside_run: list[Span] = field(default_factory=list)
    failure_at: list[int] = field(default_factory=list)
    micro_at: list[int] = field(default_factory=list)


def _split_states(
    states: Sequence[tuple[int, int, LossClass]],
    planned: SpanIndex,
    *,
    lo: int,
    hi: int,
    threshold: int,
) -> _Pieces:
    """Cut each state at planned production time; classify stops by their whole length."""
    out = _Pieces()
    for start, end, cls in states:
        inside = planned.clip(start, end)
        if cls is LossClass.RUNNING:
            out.run += inside
            window_part = [(max(start, lo), min(end, hi))] if min(end, hi) > max(start, lo) else []
            out.outside_run += subtract(window_part, inside)
        elif cls is LossClass.UNPLANNED_DOWN and inside:
            micro = end - start < threshold
            (out.micro if micro else out.down).extend(inside)
            (out.micro_at if micro else out.failure_at).append(inside[0][0])
    return out


def _counts(inp: OeeInput, planned: SpanIndex, *, lo: int, hi: int) -> list[_Count]:
    """Count rows inside the window, sorted, with their ideal cycle time and planned status."""
    rows = []
    cycles: dict[str | None, float | None] = {}  # a year of rows has a handful of products
    for c in inp.counts:
        t = to_us(c.time)
        if lo <= t < hi:
            if c.product not in cycles:
                cycles[c.product] = inp.cycle_of(c.product)
            ict = cycles[c.product]
            rows.append(_Count(t, c.total, c.good, c.reject, ict, planned.contains(t)))
    rows.sort(key=lambda r: r.t)
    return rows


def _mix_of(rows: Iterable[_Count]) -> tuple[CycleCount, ...]:
    acc: dict[float | None, list[int]] = {}
    for row in rows:
        sums = acc.setdefault(row.ict, [0, 0])
        sums[0] += row.total
        sums[1] += row.good
    return merge_mix(CycleCount(ict, total, good) for ict, (total, good) in acc.items())


def _result(p: _Prepared, lo: int, hi: int) -> OeeResult:
    """Sums of the prepared window over [lo, hi) (already inside the window)."""
    lo, hi = max(lo, p.lo), min(hi, p.hi)
    hi = max(hi, lo)
    i, j = bisect_left(p.count_times, lo), bisect_left(p.count_times, hi)
    inside = [c for c in p.counts[i:j] if c.inside]
    outside = [c for c in p.counts[i:j] if not c.inside]
    micro = p.micro.covered(lo, hi)
    no_data = p.no_data.covered(lo, hi)
    return OeeResult(
        calendar_us=hi - lo,
        scheduled_us=p.scheduled.covered(lo, hi),
        planned_us=p.planned.covered(lo, hi),
        run_us=p.run.covered(lo, hi) + micro,
        down_us=p.down.covered(lo, hi) + no_data,
        micro_stop_us=micro,
        no_data_us=no_data,
        outside_run_us=p.outside_run.covered(lo, hi),
        total=sum(c.total for c in inside),
        good=sum(c.good for c in inside),
        reject=sum(c.reject for c in inside),
        outside_total=sum(c.total for c in outside),
        outside_good=sum(c.good for c in outside),
        outside_reject=sum(c.reject for c in outside),
        micro_stops=bisect_left(p.micro_at, hi) - bisect_left(p.micro_at, lo),
        failures=bisect_left(p.failure_at, hi) - bisect_left(p.failure_at, lo),
        cycle_mix=_mix_of(inside),
        notes=p.notes,
    )


def compute_oee(inp: OeeInput) -> OeeResult:
    """OEE of the whole window."""
    p = _prepare(inp)
    return _result(p, p.lo, p.hi)


def bucket_points(window: TimeRange, edges: Sequence[datetime]) -> list[datetime]:
    """The buckets' bounds: the window's start, the edges inside it, its end."""
    start, end = window.start, window.end
    for e in edges:
        _check_aware(e, "bucket edge")
    if any(b <= a for a, b in pairwise(edges)):
        raise OeeInputError("bucket edges must be strictly increasing")
    if edges and (edges[0] < start or edges[-1] > end):
        raise OeeInputError(f"bucket edges must lie inside the window [{start}, {end}]")
    return [start, *(e for e in edges if start < e < end), end]


def compute_buckets(inp: OeeInput, edges: Sequence[datetime]) -> list[BucketResult]:
    """OEE per bucket; ``edges`` split the window (the window's own ends may be included).

    Edges come from the caller (hours, shifts, local days and weeks across DST). The
    buckets partition the window, so :func:`api.oee.result.rollup` of them equals
    :func:`compute_oee`.
    """
    points = bucket_points(inp.window, edges)
    p = _prepare(inp)
    return [BucketResult(a, b, _result(p, to_us(a), to_us(b))) for a, b in pairwise(points)]
