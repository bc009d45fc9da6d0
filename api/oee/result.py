"""The result of an OEE calculation: exact sums, and every figure derived from them on read.

:class:`OeeResult` holds integer microseconds and counts, and the product mix as ideal
cycle times with their counts; ratios and seconds are computed when read, exactly (ideal
times are fractions until then), so bucket results add up to the whole. :func:`rollup`
sums results (never an average of percentages); :func:`combine_site` gives a site's
figures from its lines'. The rules are in :mod:`api.oee.calc`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, NamedTuple

from api.oee.timeline import US_PER_S


@dataclass(frozen=True, slots=True)
class CycleCount:
    """Parts made at one ideal cycle time (None: unknown)."""

    ideal_cycle_s: float | None
    total: int
    good: int


def _mix_key(c: CycleCount) -> tuple[bool, float]:
    return (c.ideal_cycle_s is None, c.ideal_cycle_s or 0.0)


def merge_mix(items: Iterable[CycleCount]) -> tuple[CycleCount, ...]:
    """One canonical entry per ideal cycle time, sorted; empty entries dropped."""
    acc: dict[float | None, tuple[int, int]] = {}
    for c in items:
        total, good = acc.get(c.ideal_cycle_s, (0, 0))
        acc[c.ideal_cycle_s] = (total + c.total, good + c.good)
    merged = (CycleCount(k, t, g) for k, (t, g) in acc.items() if t)
    return tuple(sorted(merged, key=_mix_key))


def _ideal_time(mix: Iterable[CycleCount], *, good_only: bool) -> Fraction | None:
    """Σ ideal cycle time × count (good or total), exact; None if a cycle time is unknown.

    The sum of Fraction(ict) × count, in integers: a float is n / d with d a power of
    two, so one common denominator serves (a year of a site's product mix in one bucket
    would otherwise make thousands of Fractions, each reduced by a gcd).
    """
    num, den = 0, 1
    for c in mix:
        if c.ideal_cycle_s is None:
            return None
        n, d = c.ideal_cycle_s.as_integer_ratio()
        if d != den:
            lcm = den // math.gcd(den, d) * d
            num *= lcm // den
            den = lcm
        num += n * (den // d) * (c.good if good_only else c.total)
    return Fraction(num, den)


class _Q(NamedTuple):
    """An exact ratio without Fraction's gcd: a time in µs as seconds, say."""

    numerator: int
    denominator: int


_Exact = Fraction | int | _Q


def _ratio(num: _Exact, den: _Exact) -> float | None:
    """num / den, correctly rounded (None when den is 0). CPython divides ints correctly
    rounded, as float(Fraction) does (it divides the same way), so no Fraction is made."""
    if not den.numerator:
        return None
    return (num.numerator * den.denominator) / (num.denominator * den.numerator)


def _s(us: int) -> _Q:
    return _Q(us, US_PER_S)


def _seconds(us: int) -> float:
    return us / US_PER_S


# The figures of a result, in reading order, as ``OeeResult.as_dict`` gives them.
_FIGURES = (
    *("calendar_s", "scheduled_s", "planned_downtime_s", "planned_s", "run_s", "down_s"),
    *("micro_stop_s", "no_data_s", "outside_run_s", "total", "good", "reject"),
    *("outside_total", "outside_good", "outside_reject", "micro_stops", "failures"),
    *("ideal_time_s", "good_ideal_time_s", "availability", "performance", "quality"),
    *("count_quality", "oee", "teep", "mtbf_s", "mttr_s", "availability_loss_s"),
    *("performance_loss_s", "quality_loss_s", "flags"),
)


@dataclass(frozen=True, slots=True)
class OeeResult:
    """Sums (exact ints) for one asset and time range; every ratio is derived on read.

    Explains itself: planned = run + down; run = ideal time + performance loss;
    ideal time = good × ict + quality loss; OEE = good × ict / planned = A × P × Q.
    """

    calendar_us: int = 0
    scheduled_us: int = 0
    planned_us: int = 0
    run_us: int = 0  # includes micro_stop_us
    down_us: int = 0  # unplanned stops + no_data_us
    micro_stop_us: int = 0
    no_data_us: int = 0
    outside_run_us: int = 0  # running outside planned production time (not in run_us)
    total: int = 0
    good: int = 0
    reject: int = 0
    outside_total: int = 0  # parts counted outside planned production time
    outside_good: int = 0
    outside_reject: int = 0
    micro_stops: int = 0
    failures: int = 0
    cycle_mix: tuple[CycleCount, ...] = ()
    notes: tuple[str, ...] = ()  # flags about the input (overlapping_states, unmapped_state)
    # (ideal time, good ideal time) once computed: every ratio reads them
    _ideal_times: tuple[Fraction | None, Fraction | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # --- durations in seconds
    @property
    def calendar_s(self) -> float:
        """Calendar time of the range (cut at ``now``)."""
        return _seconds(self.calendar_us)

    @property
    def scheduled_s(self) -> float:
        """Calendar time inside shifts."""
        return _seconds(self.scheduled_us)

    @property
    def planned_downtime_s(self) -> float:
        """Scheduled time taken out by planned downtime."""
        return _seconds(self.scheduled_us - self.planned_us)

    @property
    def planned_s(self) -> float:
        """Planned production time."""
        return _seconds(self.planned_us)

    @property
    def run_s(self) -> float:
        """Run time inside planned production time (micro-stops included)."""
        return _seconds(self.run_us)

    @property
    def down_s(self) -> float:
        """Unplanned down time (stops and gaps in the state data)."""
        return _seconds(self.down_us)

    @property
    def micro_stop_s(self) -> float:
        """Time in micro-stops (part of run time)."""
        return _seconds(self.micro_stop_us)

    @property
    def no_data_s(self) -> float:
        """Planned production time without any state data (part of down time)."""
        return _seconds(self.no_data_us)

    @property
    def outside_run_s(self) -> float:
        """Running time outside planned production time (not in run time)."""
        return _seconds(self.outside_run_us)

    # --- ideal times (exact, None when a counted part has no ideal cycle time)
    def _ideal(self, *, good_only: bool) -> Fraction | None:
        times = self._ideal_times
        if times is None:
            mix = self.cycle_mix
            times = (_ideal_time(mix, good_only=False), _ideal_time(mix, good_only=True))
            object.__setattr__(self, "_ideal_times", times)  # a cache: the value is derived
        return times[1 if good_only else 0]

    @property
    def ideal_time_s(self) -> float | None:
        """Σ ideal cycle time × total count."""
        ideal = self._ideal(good_only=False)
        return None if ideal is None else float(ideal)

    @property
    def good_ideal_time_s(self) -> float | None:
        """Σ ideal cycle time × good count: fully productive time."""
        ideal = self._ideal(good_only=True)
        return None if ideal is None else float(ideal)

    # --- ratios
    @property
    def availability(self) -> float | None:
        """Run time / planned production time."""
        return _ratio(self.run_us, self.planned_us)

    @property
    def performance(self) -> float | None:
        """Ideal time / run time (not clipped)."""
        ideal = self._ideal(good_only=False)
        return None if ideal is None else _ratio(ideal, _s(self.run_us))

    @property
    def count_quality(self) -> float | None:
        """Good / total, by count."""
        return _ratio(self.good, self.total)

    @property
    def quality(self) -> float | None:
        """Good ideal time / ideal time (= good / total for one product)."""
        ideal = self._ideal(good_only=False)
        if ideal is None or not self.total:
            return self.count_quality
        return _ratio(self._ideal(good_only=True) or 0, ideal)

    @property
    def oee(self) -> float | None:
        """Good ideal time / planned production time (= A × P × Q)."""
        good_ideal = self._ideal(good_only=True)
        return None if good_ideal is None else _ratio(good_ideal, _s(self.planned_us))

    @property
    def teep(self) -> float | None:
        """Good ideal time / calendar time (= OEE × planned / calendar; None with OEE)."""
        good_ideal = self._ideal(good_only=True)
        if not self.planned_us:
            return None
        return None if good_ideal is None else _ratio(good_ideal, _s(self.calendar_us))

    @property
    def mtbf_s(self) -> float | None:
        """Run time / failures."""
        return _ratio(_s(self.run_us), self.failures)

    @property
    def mttr_s(self) -> float | None:
        """Unplanned stop time (gaps excluded) / failures."""
        return _ratio(_s(self.down_us - self.no_data_us), self.failures)

    # --- losses in seconds
    @property
    def availability_loss_s(self) -> float:
        """Planned − run: the down time."""
        return _seconds(self.planned_us - self.run_us)

    @property
    def performance_loss_s(self) -> float | None:
        """Run − ideal time (negative when performance is above 100 %)."""
        ideal = self._ideal(good_only=False)
        if ideal is None:
            return None
        d = ideal.denominator
        return (self.run_us * d - ideal.numerator * US_PER_S) / (US_PER_S * d)

    @property
    def quality_loss_s(self) -> float | None:
        """Ideal time − good ideal time: the ideal time spent on rejects."""
        ideal, good = self._ideal(good_only=False), self._ideal(good_only=True)
        return None if ideal is None or good is None else float(ideal - good)

    @property
    def flags(self) -> list[str]:
        """What a reader should know before trusting the figures."""
        found = set(self.notes)
        perf = self.performance
        if perf is not None and perf > 1:
            found.add("performance_over_100")
        elif not self.run_us and self._ideal(good_only=False):
            # Parts made in planned time with no running time recorded: the ideal time
            # exceeds the run time (P is infinite, so None), and OEE may pass 100 %.
            found.update(("performance_over_100", "parts_without_run_time"))
        if any(c.ideal_cycle_s is None for c in self.cycle_mix):
            found.add("no_ideal_cycle_time")
        if len(self.cycle_mix) > 1:
            found.add("product_mix")
        if self.no_data_us:
            found.add("no_state_data")
        if self.outside_run_us or self.outside_total:
            found.add("production_outside_planned_time")
        return sorted(found)

    def as_dict(self) -> dict[str, Any]:
        """Every figure by name (seconds, counts, ratios, losses, flags) for a schema."""
        return {name: getattr(self, name) for name in _FIGURES}


@dataclass(frozen=True, slots=True)
class BucketResult:
    """The result of one bucket [start, end)."""

    start: datetime
    end: datetime
    result: OeeResult


_SUMMED = tuple(
    name
    for name in OeeResult.__dataclass_fields__
    if name not in ("cycle_mix", "notes", "_ideal_times")
)


def rollup(results: Sequence[OeeResult]) -> OeeResult:
    """Sum of results (buckets of one asset, or machines the caller chose): ratios recomputed.

    Never an average of percentages. For a line, the caller passes its designated
    bottleneck or end-of-line machine (the parts of a line pass every machine, so summing
    the machines of one line counts each part several times); for a site, see
    :func:`combine_site`.
    """
    sums = {name: sum(getattr(r, name) for r in results) for name in _SUMMED}
    return OeeResult(
        **sums,
        cycle_mix=merge_mix(c for r in results for c in r.cycle_mix),
        notes=tuple(sorted({n for r in results for n in r.notes})),
    )


@dataclass(frozen=True, slots=True)
class SiteOee:
    """A site's OEE: Σ(good × ict) / Σ planned over the lines' designated machines."""

    members: int
    calendar_us: int
    planned_us: int
    good_ideal_time_s: float | None
    oee: float | None
    teep: float | None
    flags: tuple[str, ...]

    @property
    def planned_s(self) -> float:
        """Σ planned production time of the members."""
        return _seconds(self.planned_us)

    @property
    def calendar_s(self) -> float:
        """Σ calendar time of the members."""
        return _seconds(self.calendar_us)


def combine_site(line_results: Sequence[OeeResult]) -> SiteOee:
    """Site OEE from one result per line (its bottleneck or end-of-line machine)."""
    total = rollup(line_results)
    return SiteOee(
        members=len(line_results),
        calendar_us=total.calendar_us,
        planned_us=total.planned_us,
        good_ideal_time_s=total.good_ideal_time_s,
        oee=total.oee,
        teep=total.teep,
        flags=tuple(total.flags),
    )
