"""The pure parts of downtime: operators' reasons laid over intervals, and stop classification."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.downtime.classify import classify, state_classes, threshold_us
from api.downtime.overlay import Assignment, Interval, Piece, Reason, overlay
from api.oee.calc import LossClass

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
MACHINE = Reason("M1", "machine says jam", "mechanical", False)
JAM = Reason("JAM", "jam", "mechanical", False)
BREAK = Reason("BRK", "break", "organisational", True)


def at(minutes: float) -> datetime:
    """T0 + minutes."""
    return T0 + timedelta(minutes=minutes)


def iv(start: float, end: float | None, state: str = "fault") -> Interval:
    """An interval between minute offsets with the machine's reason."""
    return Interval(at(start), None if end is None else at(end), state, MACHINE)


def spans(pieces: list[Piece]) -> list[tuple[float, float | None, str | None, int | None]]:
    """(start, end, code, assignment id) per piece, times in minutes from T0."""
    return [
        (
            (p.start - T0) / timedelta(minutes=1),
            None if p.end is None else (p.end - T0) / timedelta(minutes=1),
            p.reason.code,
            p.assignment_id,
        )
        for p in pieces
    ]


@pytest.mark.parametrize(
    ("intervals", "assignments", "expected"),
    [
        # No assignment: the interval as it is.
        ([iv(0, 10)], [], [(0, 10, "M1", None)]),
        # One inside: three pieces.
        (
            [iv(0, 10)],
            [(1, 3, 7, JAM)],
            [(0, 3, "M1", None), (3, 7, "JAM", 1), (7, 10, "M1", None)],
        ),
        # Covering the whole interval and beyond: one assigned piece.
        ([iv(0, 10)], [(1, -5, 15, JAM)], [(0, 10, "JAM", 1)]),
        # Two adjacent (a split) over two intervals.
        (
            [iv(0, 10), iv(10, 20, "idle")],
            [(1, 0, 4, JAM), (2, 4, 15, BREAK)],
            [(0, 4, "JAM", 1), (4, 10, "BRK", 2), (10, 15, "BRK", 2), (15, 20, "M1", None)],
        ),
        # An open interval: the tail stays open.
        (
            [iv(0, None)],
            [(1, 5, 8, JAM)],
            [(0, 5, "M1", None), (5, 8, "JAM", 1), (8, None, "M1", None)],
        ),
        # Running time is never given an operator's reason (after a rebuild, say).
        ([iv(0, 10, "running")], [(1, 2, 5, JAM)], [(0, 10, "M1", None)]),
        # Touching ends do not overlap.
        ([iv(10, 20)], [(1, 0, 10, JAM), (2, 20, 30, JAM)], [(10, 20, "M1", None)]),
    ],
)
def test_overlay_table(
    intervals: list[Interval],
    assignments: list[tuple[int, float, float, Reason]],
    expected: list[tuple[float, float | None, str, int | None]],
) -> None:
    given_assignments = [Assignment(i, at(s), at(e), r) for i, s, e, r in assignments]
    assert spans(overlay(intervals, given_assignments)) == expected


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[Interval], list[Assignment]]:
    """Intervals (with gaps, the last maybe open) and disjoint assignments, in minutes."""
    points = sorted(draw(st.sets(st.integers(0, 200), min_size=2, max_size=14)))
    states = st.sampled_from(["running", "fault", "idle", "starved"])
    intervals: list[Interval] = []
    for lo, hi in pairwise(points):
        if draw(st.booleans()) or not intervals:  # else: a gap without state data
            intervals.append(iv(lo, hi, draw(states)))
    if draw(st.booleans()):
        last = intervals[-1]
        intervals[-1] = Interval(last.start, None, last.state, last.reason)
    cuts = sorted(draw(st.sets(st.integers(-20, 240), max_size=12)))
    assignments = []
    for n, (lo, hi) in enumerate(zip(cuts[::2], cuts[1::2], strict=False)):
        reason = Reason(
            f"C{n}", f"reason {n}", draw(st.sampled_from(["a", "b"])), draw(st.booleans())
        )
        assignments.append(Assignment(n + 1, at(lo), at(hi), reason))
    return intervals, draw(st.permutations(assignments))


def _length(start: datetime, end: datetime | None, horizon: datetime) -> timedelta:
    return (end or horizon) - start


@settings(max_examples=300, deadline=None)
@given(_scenario())
def test_pieces_tile_each_interval_exactly(
    scenario: tuple[list[Interval], list[Assignment]],
) -> None:
    intervals, assignments = scenario
    pieces = overlay(intervals, assignments)
    for interval in intervals:
        own = [p for p in pieces if p.interval is interval]
        assert own, "every interval has at least one piece"
        assert own[0].start == interval.start and own[-1].end == interval.end
        for a, b in pairwise(own):
            assert a.end == b.start  # consecutive: nothing lost, nothing doubled
        assert all(p.end is None or p.end > p.start for p in own)
        assert all(p.end is not None for p in own[:-1])
    assert len({id(p.interval) for p in pieces}) == len(intervals)


@settings(max_examples=300, deadline=None)
@given(_scenario())
def test_assigned_time_is_the_overlap_of_stops_and_assignments(
    scenario: tuple[list[Interval], list[Assignment]],
) -> None:
    intervals, assignments = scenario
    horizon = at(1000)  # later than any assignment: open intervals end here for the sums
    pieces = overlay(intervals, assignments)
    by_id = {a.id: a for a in assignments}
    expected = timedelta(0)
    for interval in intervals:
        if interval.state == "running":
            continue
        end = interval.end or horizon
        for a in assignments:
            expected += max(timedelta(0), min(a.end, end) - max(a.start, interval.start))
    got = timedelta(0)
    for p in pieces:
        if p.assigned:
            a = by_id[p.assignment_id or 0]
            assert p.reason == a.reason and p.state != "running"
            assert a.start <= p.start and p.end is not None and p.end <= a.end
            got += p.end - p.start
        else:
            assert p.reason == p.interval.reason
            if p.state != "running":  # no assignment reaches into an unassigned stop piece
                p_end = p.end or horizon
                assert all(a.end <= p.start or a.start >= p_end for a in assignments)
    assert got == expected
    total = sum((_length(p.start, p.end, horizon) for p in pieces), timedelta(0))
    assert total == sum((_length(i.start, i.end, horizon) for i in intervals), timedelta(0))


# --- classification ------------------------------------------------------------------------


CLASSES = state_classes(
    {"idle": "planned_down"}, {"idle": "unplanned_down", "setup": "planned_down"}
)


def _piece(start: float, end: float | None, state: str, reason: Reason = MACHINE) -> Piece:
    interval = iv(start, end, state)
    return Piece(interval.start, interval.end, interval, reason)


def test_loss_classes_follow_defaults_then_global_then_the_asset() -> None:
    assert CLASSES["running"] is LossClass.RUNNING  # a default
    assert CLASSES["idle"] is LossClass.UNPLANNED_DOWN  # the asset's row beats the global one
    assert CLASSES["setup"] is LossClass.PLANNED_DOWN  # the asset's own state
    assert state_classes({"idle": "planned_down"}, {})["idle"] is LossClass.PLANNED_DOWN


@pytest.mark.parametrize(
    ("piece", "threshold_s", "expected"),
    [
        (_piece(0, 1, "running"), 120, None),
        # A 1-minute fault below a 2-minute threshold: a micro-stop.
        (_piece(0, 1, "fault"), 120, ("unplanned_down", False, True)),
        # The whole stop counts, not the piece an operator split off or the range clipped.
        (Piece(at(0), at(1), iv(0, 10, "fault"), JAM, 4), 120, ("unplanned_down", False, False)),
        # A planned reason: planned, never a micro-stop.
        (_piece(0, 1, "fault", BREAK), 120, ("unplanned_down", True, False)),
        # A planned state (the asset's own mapping).
        (_piece(0, 1, "setup"), 120, ("planned_down", True, False)),
        # A state nobody mapped: an unplanned stop.
        (_piece(0, 30, "mystery"), 120, ("unplanned_down", False, False)),
        # An open stop is measured up to now (T0 + 60 min below).
        (_piece(59, None, "fault"), 120, ("unplanned_down", False, True)),
        (_piece(50, None, "fault"), 120, ("unplanned_down", False, False)),
        # Exactly the threshold is not below it.
        (_piece(0, 2, "fault"), 120, ("unplanned_down", False, False)),
        # Odd thresholds the column allows answer, never raise.
        (_piece(0, 2, "fault"), math.inf, ("unplanned_down", False, True)),
        (_piece(0, 2, "fault"), math.nan, ("unplanned_down", False, False)),
    ],
)
def test_classify(
    piece: Piece, threshold_s: float, expected: tuple[str, bool, bool] | None
) -> None:
    stop = classify(1, piece, classes=CLASSES, micro_stop_s=threshold_s, now=at(60))
    if expected is None:
        assert stop is None
    else:
        assert stop is not None
        assert (stop.loss_class.value, stop.planned, stop.micro) == expected
        assert stop.failure is (not stop.planned and not stop.micro)


def test_threshold_rounds_like_oee() -> None:
    assert threshold_us(1.5) == 1_500_000 and threshold_us(0) == 0
