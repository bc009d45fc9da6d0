"""The OEE calculation core: the worked example, edge cases as tables, and properties."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.oee import (
    DEFAULT_STATE_CLASSES,
    CycleCount,
    LossClass,
    OeeInput,
    OeeInputError,
    OeeResult,
    PlannedDowntime,
    ProductionCount,
    StateInterval,
    TimeRange,
    combine_site,
    compute_buckets,
    compute_oee,
    rollup,
    segments,
)
from api.oee.calc import _normalise_states, _prepare, _Prepared, window_limits
from api.oee.timeline import to_us

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """T0 + minutes."""
    return T0 + timedelta(minutes=minutes)


def state(start: float, end: float | None, name: str, **kw: object) -> StateInterval:
    """A state interval between two minute offsets."""
    return StateInterval(at(start), None if end is None else at(end), name, **kw)  # type: ignore[arg-type]


def count(
    minute: float, total: int, reject: int = 0, product: str | None = None
) -> ProductionCount:
    """A count row at a minute offset."""
    return ProductionCount(at(minute), total, total - reject, reject, product)


def shift(start: float, end: float) -> TimeRange:
    """A range between two minute offsets."""
    return TimeRange(at(start), at(end))


def breaks(*spans: tuple[float, float]) -> list[PlannedDowntime]:
    """Planned breaks between minute offsets."""
    return [PlannedDowntime(at(a), at(b), "break") for a, b in spans]


def worked_example() -> OeeInput:
    """480 min shift, 60 min of breaks, 47 min down, ict 1.0 s, 19,271 total, 423 reject."""
    states = [
        state(0, 120, "running"),
        state(120, 150, "break"),
        state(150, 200, "running"),
        state(200, 247, "faulted", reason="jam"),
        state(247, 300, "running"),
        state(300, 330, "break"),
        state(330, 480, "running"),
    ]
    counts = [count(60, 5000, 100), count(190, 4000, 123), count(299, 4271, 100)]
    counts.append(count(479, 6000, 100))
    return OeeInput(
        window=shift(0, 480),
        planned_downtime=breaks((120, 150), (300, 330)),
        states=states,
        counts=counts,
        ideal_cycle_s={"SKU-1": 1.0},
        default_ideal_cycle_s=1.0,
    )


def test_worked_example() -> None:
    r = compute_oee(worked_example())
    assert (r.planned_s, r.run_s, r.down_s) == (420 * 60, 373 * 60, 47 * 60)
    assert (r.total, r.good, r.reject, r.failures) == (19271, 18848, 423, 1)
    assert r.availability == pytest.approx(0.8881, abs=1e-4)
    assert r.performance == pytest.approx(0.8611, abs=1e-4)
    assert r.quality == pytest.approx(0.9780, abs=1e-4)
    assert r.oee == pytest.approx(0.7479, abs=1e-4)
    assert r.mtbf_s == 373 * 60 and r.mttr_s == 47 * 60
    assert r.flags == []
    # The loss waterfall explains the figure: planned = run + down, run = ideal + perf loss...
    assert r.availability_loss_s == r.down_s
    assert r.ideal_time_s == 19271.0 and r.good_ideal_time_s == 18848.0
    assert r.performance_loss_s == pytest.approx(373 * 60 - 19271)
    assert r.quality_loss_s == pytest.approx(423.0)


def test_worked_example_by_hour_sums_to_the_whole() -> None:
    inp = worked_example()
    edges = [at(m) for m in range(0, 481, 60)]
    buckets = compute_buckets(inp, edges)
    assert len(buckets) == 8
    assert [b.start for b in buckets] == edges[:-1]
    assert [b.result.down_s for b in buckets] == [0, 0, 0, 40 * 60, 7 * 60, 0, 0, 0]
    assert [b.result.failures for b in buckets] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert rollup([b.result for b in buckets]) == compute_oee(inp)


def test_zero_planned_time_gives_no_ratio() -> None:
    inp = OeeInput(
        window=shift(0, 480),
        shifts=[],
        states=[state(0, 480, "running")],
        counts=[count(10, 100, 5)],
        default_ideal_cycle_s=1.0,
    )
    r = compute_oee(inp)
    assert (r.calendar_s, r.planned_s, r.run_s, r.total) == (480 * 60, 0, 0, 0)
    assert (r.outside_run_s, r.outside_total, r.outside_reject) == (480 * 60, 100, 5)
    ratios = (r.availability, r.performance, r.quality, r.oee, r.teep, r.mtbf_s, r.mttr_s)
    assert ratios == (None,) * 7
    empty = compute_oee(OeeInput(window=shift(0, 0)))
    assert empty.calendar_s == 0 and empty.oee is None and empty.teep is None


def test_no_counts_is_a_real_zero_performance() -> None:
    r = compute_oee(OeeInput(window=shift(0, 60), states=[state(0, 60, "running")]))
    assert (r.availability, r.performance, r.quality, r.oee) == (1.0, 0.0, None, 0.0)


def test_machine_down_all_shift_has_zero_oee() -> None:
    inp = OeeInput(window=shift(0, 60), states=[state(0, 60, "faulted")], default_ideal_cycle_s=1)
    r = compute_oee(inp)
    assert (r.availability, r.performance, r.quality, r.oee, r.failures) == (0, None, None, 0, 1)


def test_performance_over_100_is_flagged_not_clipped() -> None:
    inp = OeeInput(
        window=shift(0, 10),
        states=[state(0, 10, "running")],
        counts=[count(5, 900)],  # 900 parts at 1 s ideal in 600 s: the ideal is wrong
        default_ideal_cycle_s=1.0,
    )
    r = compute_oee(inp)
    assert r.performance == 1.5 and r.oee == 1.5
    assert r.performance_loss_s == -300.0
    assert "performance_over_100" in r.flags


def test_micro_stops_count_against_performance() -> None:
    states = [
        state(0, 10, "running"),
        state(10, 10.5, "faulted"),  # 30 s: micro
        state(10.5, 20, "running"),
        state(20, 20.5, "idle"),  # 30 s: micro
        state(20.5, 30, "running"),
        state(30, 35, "faulted"),  # 5 min: a failure
        state(35, 60, "running"),
    ]
    inp = OeeInput(window=shift(0, 60), states=states, micro_stop_s=60)
    r = compute_oee(inp)
    assert (r.micro_stops, r.micro_stop_s, r.failures, r.down_s) == (2, 60.0, 1, 300.0)
    assert r.run_s == 55 * 60 and r.availability == pytest.approx(55 / 60)
    no_threshold = compute_oee(replace(inp, micro_stop_s=0))
    assert (no_threshold.micro_stops, no_threshold.failures, no_threshold.down_s) == (0, 3, 360)


def test_stop_split_at_a_bucket_edge_is_classified_by_its_whole_length() -> None:
    states = [
        state(0, 59.5, "running"),
        state(59.5, 60.5, "faulted"),  # 60 s, 30 s in each hour: not micro at 45 s
        state(60.5, 119.8, "running"),
        state(119.8, 120.2, "faulted"),  # 24 s: micro in both hours
        state(120.2, 180, "running"),
    ]
    inp = OeeInput(window=shift(0, 180), states=states, micro_stop_s=45)
    hours = [b.result for b in compute_buckets(inp, [at(60), at(120)])]
    assert [h.down_s for h in hours] == [30.0, 30.0, 0.0]
    assert [h.failures for h in hours] == [1, 0, 0]  # counted once, where it began
    assert [h.micro_stop_s for h in hours] == pytest.approx([0, 12, 12])
    assert [h.micro_stops for h in hours] == [0, 1, 0]
    assert rollup(hours) == compute_oee(inp)


def test_stop_cut_by_the_window_or_a_break_keeps_its_whole_length() -> None:
    states = [
        state(-5, 0.5, "faulted"),  # 5.5 min long, 30 s inside the window
        state(0.5, 29.8, "running"),
        state(29.8, 40, "faulted"),  # 10 min long, 12 s before a break, 10 s after it
        state(40, 60, "running"),
    ]
    inp = OeeInput(
        window=shift(0, 60),
        planned_downtime=breaks((30, 39 + 50 / 60)),
        states=states,
        micro_stop_s=60,
    )
    r = compute_oee(inp)
    assert (r.failures, r.micro_stops, r.micro_stop_s) == (2, 0, 0)
    assert r.down_s == pytest.approx(30 + 12 + 10, abs=0.01)


def test_product_change_uses_each_products_ideal_cycle() -> None:
    inp = OeeInput(
        window=shift(0, 60),
        states=[state(0, 60, "running")],
        counts=[count(10, 1000, 100, "A"), count(40, 500, 0, "B"), count(50, 200, 0, "C")],
        ideal_cycle_s={"A": 1.0, "B": 2.0},
        default_ideal_cycle_s=3.0,  # C is unknown: the default applies
    )
    r = compute_oee(inp)
    assert r.ideal_time_s == 1000 * 1 + 500 * 2 + 200 * 3
    assert r.good_ideal_time_s == 900 * 1 + 500 * 2 + 200 * 3
    assert r.performance == pytest.approx(2600 / 3600)
    assert r.quality == pytest.approx(2500 / 2600)  # ideal-time weighted for a mix
    assert r.count_quality == pytest.approx(1600 / 1700)
    assert r.oee == pytest.approx(2500 / 3600)
    assert "product_mix" in r.flags
    unknown = compute_oee(replace(inp, default_ideal_cycle_s=None))
    assert unknown.performance is None and unknown.oee is None and unknown.teep is None
    assert unknown.quality == pytest.approx(1600 / 1700)
    assert "no_ideal_cycle_time" in unknown.flags


def test_interval_crossing_bucket_edges_is_split() -> None:
    inp = OeeInput(
        window=shift(0, 180),
        states=[state(-30, 90, "running"), state(90, 150, "faulted"), state(150, 200, "running")],
        counts=[count(59.99, 10), count(60, 20), count(179.99, 5), count(180, 99)],
        default_ideal_cycle_s=1.0,
    )
    hours = [b.result for b in compute_buckets(inp, [at(0), at(60), at(120), at(180)])]
    assert [(h.run_s, h.down_s) for h in hours] == [(3600, 0), (1800, 1800), (1800, 1800)]
    assert [h.total for h in hours] == [10, 20, 5]  # a count at an edge opens the next bucket
    assert [h.failures for h in hours] == [0, 1, 0]
    assert rollup(hours) == compute_oee(inp)


def test_open_interval_runs_until_now() -> None:
    inp = OeeInput(
        window=shift(0, 480),
        states=[state(0, 30, "running"), state(30, None, "faulted")],
        now=at(100),
    )
    r = compute_oee(inp)
    assert (r.calendar_s, r.planned_s, r.run_s, r.down_s) == (6000, 6000, 1800, 4200)
    future = compute_buckets(inp, [at(240)])[1].result
    assert future.calendar_s == 0 and future.availability is None
    whole_window = compute_oee(replace(inp, now=None))  # open until the window's end
    assert whole_window.down_s == 450 * 60


def test_planned_downtime_over_a_stop_is_not_counted_twice() -> None:
    inp = OeeInput(
        window=shift(0, 480),
        planned_downtime=[PlannedDowntime(at(130), at(190), "planned_maintenance")],
        states=[state(0, 100, "running"), state(100, 160, "faulted"), state(160, 480, "running")],
    )
    r = compute_oee(inp)
    assert r.planned_s == 420 * 60 and r.planned_downtime_s == 60 * 60
    assert r.down_s == 30 * 60 and r.run_s == 390 * 60
    assert r.planned_s == r.run_s + r.down_s


def test_running_through_a_break_is_reported_apart() -> None:
    inp = OeeInput(
        window=shift(0, 480),
        planned_downtime=breaks((240, 300)),
        states=[state(0, 480, "running")],
        counts=[count(100, 1000), count(250, 400, 10), count(400, 1000)],
        default_ideal_cycle_s=1.0,
    )
    r = compute_oee(inp)
    assert (r.planned_s, r.run_s, r.availability) == (420 * 60, 420 * 60, 1.0)
    assert (r.outside_run_s, r.outside_total, r.outside_good) == (3600, 400, 390)
    assert r.total == 2000
    assert "production_outside_planned_time" in r.flags


def test_planned_reason_and_state_mapping() -> None:
    states = [
        state(0, 20, "running"),
        state(20, 30, "idle", planned=True, category="no_orders"),  # planned reason
        state(30, 40, "starved"),
        state(40, 50, "mystery"),  # unmapped: an availability loss, flagged
        state(50, 60, "running"),
    ]
    inp = OeeInput(window=shift(0, 60), states=states)
    r = compute_oee(inp)
    assert (r.planned_s, r.run_s, r.down_s, r.failures) == (3000, 1800, 1200, 2)
    assert "unmapped_state" in r.flags
    lenient = {"running": LossClass.RUNNING, "starved": LossClass.PLANNED_DOWN}
    r2 = compute_oee(replace(inp, state_classes=lenient))
    assert (r2.planned_s, r2.down_s) == (2400, 600)


def test_gaps_and_overlaps_in_state_data() -> None:
    inp = OeeInput(
        window=shift(0, 60),
        states=[state(0, 40, "running"), state(30, 50, "faulted")],  # overlap; 50..60 missing
    )
    r = compute_oee(inp)
    assert (r.run_s, r.down_s, r.no_data_s, r.failures) == (1800, 1800, 600, 1)
    assert r.mttr_s == 1200  # the gap is an availability loss, not a repair
    assert {"overlapping_states", "no_state_data"} <= set(r.flags)


def test_shifts_not_covering_the_day_make_teep_below_oee() -> None:
    inp = OeeInput(
        window=shift(0, 24 * 60),
        shifts=[shift(0, 480), shift(480, 960)],
        planned_downtime=breaks((200, 230)),
        states=[state(0, 24 * 60, "running")],
        counts=[count(100, 20000, 500)],
        default_ideal_cycle_s=2.0,
    )
    r = compute_oee(inp)
    assert r.oee is not None and r.teep is not None
    assert r.scheduled_s == 960 * 60 and r.planned_s == 930 * 60
    assert r.teep < r.oee
    assert r.teep == pytest.approx(r.oee * r.planned_s / r.calendar_s)


@pytest.mark.parametrize(
    ("day", "hours"), [(datetime(2026, 3, 29), 23), (datetime(2026, 10, 25), 25)]
)
def test_dst_day_has_the_hours_it_has(day: datetime, hours: int) -> None:
    tz = ZoneInfo("Europe/Berlin")
    start = day.replace(tzinfo=tz).astimezone(UTC)
    end = (day + timedelta(days=1)).replace(tzinfo=tz).astimezone(UTC)
    edges = [start + timedelta(hours=h) for h in range(hours + 1)]  # the caller's hours
    assert edges[-1] == end
    inp = OeeInput(
        window=TimeRange(start, end),
        states=[StateInterval(start, end, "running")],
        counts=[ProductionCount(start + timedelta(hours=2, minutes=30), 100, 100, 0)],
        default_ideal_cycle_s=1.0,
    )
    buckets = compute_buckets(inp, edges)
    assert len(buckets) == hours
    assert all(b.result.calendar_s == 3600 for b in buckets)
    assert compute_oee(inp).calendar_s == hours * 3600
    assert rollup([b.result for b in buckets]) == compute_oee(inp)


def test_rollup_recomputes_ratios_and_site_combines_good_ideal_time() -> None:
    fast = OeeInput(window=shift(0, 60), states=[state(0, 60, "running")], counts=[count(30, 3600)])
    fast = replace(fast, default_ideal_cycle_s=1.0)  # OEE 100 %
    slow = replace(fast, counts=[count(30, 100)], shifts=[shift(0, 600)], window=shift(0, 600))
    slow = replace(slow, states=[state(0, 600, "running")])  # 100 s of 36000: OEE 1/360
    a, b = compute_oee(fast), compute_oee(slow)
    site = combine_site([a, b])
    assert site.oee == pytest.approx(3700 / 39600)  # not (1 + 1/360) / 2
    assert site.members == 2 and site.planned_s == 39600
    assert rollup([a, b]).oee == site.oee
    assert rollup([]) == OeeResult() and rollup([]).oee is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TimeRange(datetime(2026, 1, 1), T0), "timezone-aware"),
        (lambda: TimeRange(at(10), at(0)), "before it starts"),
        (lambda: ProductionCount(T0, 10, 5, 4), "!= total"),
        (lambda: ProductionCount(T0, -1, 0, 0), "total must be"),
        (lambda: StateInterval(T0, None, ""), "empty state"),
        (lambda: OeeInput(window=shift(0, 1), ideal_cycle_s={"A": 0}), "product 'A'"),
        (lambda: OeeInput(window=shift(0, 1), micro_stop_s=math.nan), "micro_stop_s"),
        (lambda: compute_buckets(OeeInput(window=shift(0, 60)), [at(30), at(20)]), "increasing"),
        (lambda: compute_buckets(OeeInput(window=shift(0, 60)), [at(90)]), "inside the window"),
    ],
)
def test_bad_input_names_the_problem(make: object, message: str) -> None:
    with pytest.raises(OeeInputError, match=message):
        make()  # type: ignore[operator]


# --- properties ------------------------------------------------------------------------

HORIZON_US = 8 * 3600 * 1_000_000
instants = st.integers(min_value=-HORIZON_US // 8, max_value=HORIZON_US + HORIZON_US // 8)


def _t(us: int) -> datetime:
    return T0 + timedelta(microseconds=us)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[OeeInput, list[datetime]]:
    """Random but valid rows; states may overlap, leave gaps or stay open."""
    lo = draw(st.integers(0, HORIZON_US // 4))
    hi = draw(st.integers(lo, HORIZON_US))
    spans = st.tuples(instants, st.integers(0, HORIZON_US // 3))
    shifts = draw(st.none() | st.lists(spans, max_size=3))
    states = [
        StateInterval(_t(s), None if open_ else _t(s + d), name, planned=planned)
        for s, d, name, planned, open_ in draw(
            st.lists(
                st.tuples(
                    instants,
                    st.integers(0, HORIZON_US // 4),
                    st.sampled_from(["running", "faulted", "idle", "break", "odd"]),
                    st.booleans(),
                    st.booleans(),
                ),
                max_size=12,
            )
        )
    ]
    counts = [
        ProductionCount(_t(t), good + reject, good, reject, product)
        for t, good, reject, product in draw(
            st.lists(
                st.tuples(
                    instants,
                    st.integers(0, 5000),
                    st.integers(0, 500),
                    st.sampled_from(["A", "B", None]),
                ),
                max_size=10,
            )
        )
    ]
    inp = OeeInput(
        window=TimeRange(_t(lo), _t(hi)),
        shifts=None if shifts is None else [TimeRange(_t(s), _t(s + d)) for s, d in shifts],
        planned_downtime=[
            PlannedDowntime(_t(s), _t(s + d)) for s, d in draw(st.lists(spans, max_size=3))
        ],
        states=states,
        counts=counts,
        ideal_cycle_s={"A": draw(st.floats(0.05, 5.0)), "B": 1.7},
        default_ideal_cycle_s=draw(st.none() | st.floats(0.1, 3.0)),
        micro_stop_s=draw(st.sampled_from([0.0, 30.0, 600.0])),
        now=draw(st.none() | st.builds(_t, instants)),
    )
    inner = draw(st.lists(st.integers(lo, hi), max_size=6, unique=True))
    return inp, [_t(e) for e in sorted(inner)]


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_properties_of_every_result(case: tuple[OeeInput, list[datetime]]) -> None:
    inp, edges = case
    whole = compute_oee(inp)
    buckets = [b.result for b in compute_buckets(inp, edges)]
    assert rollup(buckets) == whole  # seconds and counts add up exactly
    assert rollup([whole]) == whole
    for r in [whole, *buckets]:
        assert r.calendar_us >= r.scheduled_us >= r.planned_us >= 0
        assert r.planned_us == r.run_us + r.down_us
        assert r.run_us >= r.micro_stop_us >= 0 and r.down_us >= r.no_data_us >= 0
        assert r.total == r.good + r.reject
        a, p, q, oee = r.availability, r.performance, r.quality, r.oee
        assert a is None or 0 <= a <= 1
        assert q is None or 0 <= q <= 1
        assert p is None or p >= 0
        over = p is not None and p > 1
        no_run = p is None and r.run_us == 0 and r.total > 0 and r.ideal_time_s is not None
        assert ("performance_over_100" in r.flags) == (over or no_run)
        assert ("parts_without_run_time" in r.flags) == no_run
        if None not in (a, p, q, oee):
            assert oee == pytest.approx(a * p * q, rel=1e-9)  # type: ignore[operator]
        if r.planned_us == 0:
            assert (a, oee, r.teep) == (None, None, None)


# ---------------------------------------------------------------------------------------
# api/oee/segments.py: the window cut for the database, and results assembled from sums.


def _segment_case(inp: OeeInput, edges: list[datetime]) -> tuple[segments.Plan, _Prepared]:
    """The plan the service makes for ``inp`` (planned stops as the database gives them)."""
    prepared = _prepare(inp)
    open_end = window_limits(inp.window, inp.now)[2]
    stops = [
        (s, e)
        for s, e, cls in _normalise_states(inp, open_end, set())
        if cls is LossClass.PLANNED_DOWN
    ]
    downtime = [(to_us(d.start), to_us(d.end)) for d in inp.planned_downtime]
    fr = segments.frame(inp.window, shifts=inp.shifts, edges=edges, now=inp.now)
    return segments.plan(fr, downtime + stops), prepared


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_segments_cut_at_every_bucket_edge_and_planned_edge(
    case: tuple[OeeInput, list[datetime]],
) -> None:
    inp, edges = case
    p, prepared = _segment_case(inp, edges)
    assert p.planned.spans == prepared.planned.spans
    if not p.bounds:
        assert prepared.hi == prepared.lo
        return
    assert (p.bounds[0], p.bounds[-1]) == (prepared.lo, prepared.hi)
    assert all(a < b for a, b in pairwise(p.bounds))
    for k, (a, b) in enumerate(pairwise(p.bounds)):
        # Planned or not, and the bucket, hold over the whole segment.
        assert p.planned.covered(a, b) == (b - a if p.inside[k] else 0)
        i = p.bucket[k]
        assert p.frame.point_us[i] <= a and b <= p.frame.point_us[i + 1]


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_segments_assemble_what_compute_buckets_gives(
    case: tuple[OeeInput, list[datetime]],
) -> None:
    """Sums made here from the pure core's pieces, as the database makes them: the same
    results, bucket by bucket (tests/api/test_oee_api.py holds the database to it)."""
    inp, edges = case
    p, prepared = _segment_case(inp, edges)
    fr = p.frame
    sums: dict[int, segments.StateSums] = {}
    counts = []
    for i, (a, b) in enumerate(pairwise(fr.point_us)):
        lo, hi = max(a, fr.lo), max(min(b, fr.hi), max(a, fr.lo))
        between = [t for t in prepared.failure_at if lo <= t < hi]
        micro_at = [t for t in prepared.micro_at if lo <= t < hi]
        sums[i] = segments.StateSums(
            run_us=prepared.run.covered(lo, hi),
            micro_us=prepared.micro.covered(lo, hi),
            down_us=prepared.down.covered(lo, hi),
            outside_run_us=prepared.outside_run.covered(lo, hi),
            failures=len(between),
            micro_stops=len(micro_at),
        )
        for c in inp.counts:
            if lo <= to_us(c.time) < hi:
                inside = prepared.planned.contains(to_us(c.time))
                counts.append(segments.CountSum(i, inside, c.product, c.total, c.good, c.reject))
    cycles = {k: inp.cycle_of(k) for k in ("A", "B", None)}
    machine = segments.MachineSums(p, sums, counts, cycles, prepared.notes)
    if "overlapping_states" not in prepared.notes:  # (the database refuses overlaps)
        cut, _ = segments.cut_states(p, _rows_of(inp), segments.threshold_us(inp.micro_stop_s))
        assert {i: cut.get(i, segments.StateSums()) for i in sums} == sums
    assert segments.assemble(fr, [machine]) == compute_buckets(inp, edges)
    # Two machines: what rollup gives for theirs, bucket by bucket.
    twice = segments.assemble(fr, [machine, machine])
    assert [b.result for b in twice] == [
        rollup([b.result] * 2) for b in compute_buckets(inp, edges)
    ]


def _rows_of(inp: OeeInput) -> segments.StateRows:
    """The StateRows the database gives for ``inp``'s states."""
    open_end = window_limits(inp.window, inp.now)[2]
    kinds = [
        segments.UNMAPPED if (c := inp.state_classes.get(iv.state)) is None
        else segments.RUNNING if c is LossClass.RUNNING else segments.STOPPED
        for iv in inp.states
    ]  # fmt: skip
    return segments.StateRows(
        np.array([to_us(iv.start) for iv in inp.states], dtype=np.int64),
        np.array([open_end if iv.end is None else to_us(iv.end) for iv in inp.states],
                 dtype=np.int64),
        np.array(kinds, dtype=np.uint8),
    )  # fmt: skip


def _state_rows(states: list[tuple[int, int, str]]) -> segments.StateRows:
    """StateRows of (start µs, end µs, state) with the default classes."""
    kinds = {s: segments.RUNNING if c is LossClass.RUNNING else segments.STOPPED
             for s, c in DEFAULT_STATE_CLASSES.items()}  # fmt: skip
    return segments.StateRows(
        np.array([s for s, _, _ in states], dtype=np.int64),
        np.array([e for _, e, _ in states], dtype=np.int64),
        np.array([kinds.get(k, segments.UNMAPPED) for _, _, k in states], dtype=np.uint8),
    )


def test_states_are_cut_per_segment_and_a_stop_counts_once() -> None:
    # Two hour buckets; breaks 30-40 min and 55-65 min (across the bucket edge).
    minute, s = 60_000_000, 1_000_000
    fr = segments.frame(
        TimeRange(T0, T0 + timedelta(hours=2)), shifts=None, edges=[T0 + timedelta(hours=1)],
        now=None,
    )  # fmt: skip
    lo = fr.lo
    p = segments.plan(
        fr, [(lo + 30 * minute, lo + 40 * minute), (lo + 55 * minute, lo + 65 * minute)]
    )
    rows = _state_rows([
        (lo - 5 * minute, lo + 20 * minute, "running"),  # clipped at the window's start
        (lo + 20 * minute, lo + 20 * minute + 3 * s, "faulted"),  # a micro-stop (3 s)
        (lo + 20 * minute + 3 * s, lo + 25 * minute, "running"),
        # Across the first break: one failure; its time in the break is not planned time.
        (lo + 25 * minute, lo + 50 * minute, "faulted"),
        (lo + 50 * minute, lo + 50 * minute + 10 * s, "faulted"),  # 10 s: not a micro-stop
        (lo + 50 * minute + 10 * s, lo + 56 * minute, "running"),  # 1 min in the break
        # Begins in the second break, in bucket 0: it fails where planned time resumes.
        (lo + 56 * minute, lo + 80 * minute, "faulted"),
        (lo + 80 * minute, lo + 80 * minute, "odd"),  # no time: not noted
        (lo + 80 * minute, lo + 130 * minute, "running"),  # clipped at the window's end
        (lo + 200 * minute, lo + 210 * minute, "odd"),  # outside the window, still noted
    ])  # fmt: skip
    sums, notes = segments.cut_states(p, rows, threshold_us=10 * s)
    assert sums[0] == segments.StateSums(
        run_us=20 * minute + (5 * minute - 3 * s) + (5 * minute - 10 * s),
        micro_us=3 * s,
        down_us=15 * minute + 10 * s,  # 25-30, 40-50 and the 10 s
        outside_run_us=minute,
        failures=2,
        micro_stops=1,
    )
    assert sums[1] == segments.StateSums(run_us=40 * minute, down_us=15 * minute, failures=1)
    assert notes == ("unmapped_state",)
    # A window with no time left: no sums, and the note still holds.
    empty = segments.plan(segments.frame(TimeRange(T0, T0 + timedelta(hours=2)), shifts=None,
                                         edges=[], now=T0), [])  # fmt: skip
    assert segments.cut_states(empty, rows, threshold_us=0) == ({}, ("unmapped_state",))


@given(
    st.lists(
        st.tuples(
            st.none() | st.floats(0.001, 1e4) | st.integers(1, 100),
            st.integers(0, 10**9),
            st.integers(0, 10**9),
        ),
        max_size=150,
    )
)
def test_ideal_time_is_the_exact_fraction_sum(mix: list[tuple[float | None, int, int]]) -> None:
    r = OeeResult(cycle_mix=tuple(CycleCount(c, t + g, g) for c, t, g in mix))
    want = None
    if all(c is not None for c, _, _ in mix):
        want = sum((Fraction(c) * (t + g) for c, t, g in mix), Fraction(0))  # type: ignore[arg-type]
    assert r._ideal(good_only=False) == want
    assert r.ideal_time_s == (None if want is None else float(want))
