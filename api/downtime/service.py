"""Stops with their effective reasons, their Pareto with MTBF and MTTR, and root causes.

A stop is a piece of a state interval whose state is not a running one, with one
effective reason: the operator's where one was assigned (``/downtime/stops/reason``),
else the machine's. Its classification (planned, category, micro-stop) is in
:mod:`api.downtime.classify`, the operators' overlay in :mod:`api.downtime.overlay`.
Durations are clipped to the range asked for; an open stop ends now. A line, area or site
covers every machine under it, each with its own loss classes and micro-stop threshold.

Pareto: by default the entries hold the *unplanned* stops (what a plant manager acts on;
``planned=true`` or ``all`` for the others) without micro-stops, which are counted apart
(``micro_stops``, ``micro_stop_s``; ``include_micro=true`` puts them in the entries).
MTBF = run time / failures and MTTR = unplanned stop time / failures, where failures are
the unplanned stops that are not micro-stops and run time is running time plus
micro-stops (a micro-stop costs performance, not availability, as in OEE). Every stop
overlapping the range counts once, also when an operator split it (its parts still count
apart in the entries, each under its own reason), as in OEE.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.downtime import repository as repo
from api.downtime.classify import Stop
from api.downtime.effective import MachineStops, load
from api.downtime.schemas import (
    LossClassName,
    ParetoBy,
    ParetoEntry,
    ParetoPublic,
    PlannedScope,
    StopPublic,
    StopsPublic,
)
from api.errors import NotFound
from api.oee.calc import LossClass
from api.timeseries.service import check_range

MAX_RANGE = timedelta(days=400)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
ZERO = timedelta(0)


def asset_or_404(session: Session, asset_id: int) -> dict[str, Any]:
    """The asset, or a 404 naming the field."""
    row = repo.asset(session, asset_id)
    if row is None:
        raise NotFound(f"there is no asset {asset_id}", field="asset_id")
    return row


@dataclass(frozen=True, slots=True)
class Clipped:
    """A stop and the part of it inside the range."""

    machine: MachineStops
    stop: Stop
    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        """Its length inside the range."""
        return self.end - self.start


def clipped_stops(
    machines: list[MachineStops], *, start: datetime, end: datetime, now: datetime
) -> Iterator[Clipped]:
    """Every stop with a part inside [start, end), with that part."""
    for machine in machines:
        for stop in machine.stops:
            lo = max(stop.piece.start, start)
            hi = min(stop.piece.end or now, end)
            if hi > lo:
                yield Clipped(machine, stop, lo, hi)


@dataclass(frozen=True, slots=True)
class StopFilter:
    """What /downtime/stops keeps (None: any)."""

    state: str | None = None
    reason: str | None = None
    code: str | None = None
    category: str | None = None
    planned: bool | None = None
    micro: bool | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None

    def keeps(self, c: Clipped) -> bool:
        """Whether a clipped stop passes every filter given."""
        s, reason = c.stop, c.stop.piece.reason
        seconds = c.duration.total_seconds()
        checks = (
            (self.state, s.piece.state),
            (self.reason, reason.reason),
            (self.code, reason.code),
            (self.category, reason.category),
            (self.planned, s.planned),
            (self.micro, s.micro),
        )
        if any(want is not None and want != got for want, got in checks):
            return False
        if self.min_duration_s is not None and seconds < self.min_duration_s:
            return False
        return self.max_duration_s is None or seconds <= self.max_duration_s


def _class_name(cls: LossClass) -> LossClassName:
    return "planned_down" if cls is LossClass.PLANNED_DOWN else "unplanned_down"


def stop_public(c: Clipped) -> StopPublic:
    """The API shape of a clipped stop."""
    piece, reason = c.stop.piece, c.stop.piece.reason
    return StopPublic(
        asset_id=c.machine.asset_id, path=c.machine.path, state=piece.state,
        loss_class=_class_name(c.stop.loss_class), reason=reason.reason, code=reason.code,
        category=reason.category, planned=c.stop.planned, micro_stop=c.stop.micro,
        assigned=piece.assigned, assignment_id=piece.assignment_id,
        machine_reason=piece.interval.reason.reason, machine_code=piece.interval.reason.code,
        start=c.start, end=c.end, duration_s=c.duration.total_seconds(),
        interval_start=piece.interval.start, interval_end=piece.interval.end,
    )  # fmt: skip


def stops(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    filters: StopFilter | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> StopsPublic:
    """The stops of an asset (and the machines under it) in ``[start, end)``, oldest first."""
    check_range(start, end, longest=MAX_RANGE)
    asset = asset_or_404(session, asset_id)
    now = now or datetime.now(UTC)
    keep = filters or StopFilter()
    machines = load(session, asset, start=start, end=end, now=now)
    found = [c for c in clipped_stops(machines, start=start, end=end, now=now) if keep.keeps(c)]
    found.sort(key=lambda c: (c.start, c.machine.path))
    return StopsPublic(
        asset_id=asset_id, start=start, end=end,
        stops=[stop_public(c) for c in found[:limit]], truncated=len(found) > limit,
    )  # fmt: skip


def _key(c: Clipped, by: ParetoBy) -> str | None:
    if by == "state":
        return c.stop.piece.state
    value: str | None = getattr(c.stop.piece.reason, by)
    return value


def _in_scope(c: Clipped, planned: PlannedScope, include_micro: bool) -> bool:
    if c.stop.micro and not include_micro:
        return False
    return planned == "all" or c.stop.planned == (planned == "true")


def _entries(found: list[Clipped], by: ParetoBy) -> list[ParetoEntry]:
    groups: dict[str | None, list[Clipped]] = {}
    for c in found:
        groups.setdefault(_key(c, by), []).append(c)
    sums = [(k, len(cs), sum((c.duration for c in cs), ZERO)) for k, cs in groups.items()]
    sums.sort(key=lambda t: (-t[2], -t[1], t[0] is None, t[0] or ""))
    total = sum((t[2] for t in sums), ZERO)
    entries, running = [], ZERO
    for key, count, duration in sums:
        running += duration
        entries.append(
            ParetoEntry(
                key=key, count=count, duration_s=duration.total_seconds(),
                share=duration / total if total else 0.0,
                cumulative_share=running / total if total else 0.0,
            )
        )  # fmt: skip
    return entries


def _running(
    machines: list[MachineStops], *, start: datetime, end: datetime, now: datetime
) -> timedelta:
    total = ZERO
    for m in machines:
        for p in m.pieces:
            if m.classes.get(p.state) is LossClass.RUNNING:
                total += max(ZERO, min(p.end or now, end) - max(p.start, start))
    return total


def pareto(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    by: ParetoBy = "reason",
    planned: PlannedScope = "false",
    include_micro: bool = False,
    now: datetime | None = None,
) -> ParetoPublic:
    """Count and duration of stops per key, longest first; micro-stops apart; MTBF, MTTR."""
    check_range(start, end, longest=MAX_RANGE)
    asset = asset_or_404(session, asset_id)
    now = now or datetime.now(UTC)
    machines = load(session, asset, start=start, end=end, now=now)
    every = list(clipped_stops(machines, start=start, end=end, now=now))
    failures = [c for c in every if c.stop.failure]
    micro = [c for c in every if c.stop.micro]
    down = sum((c.duration for c in failures), ZERO)
    micro_time = sum((c.duration for c in micro), ZERO)
    run = _running(machines, start=start, end=end, now=now) + micro_time
    # One failure per machine stop: the parts of a split stop share their interval.
    n = len({(c.stop.asset_id, c.stop.piece.interval.start) for c in failures})
    return ParetoPublic(
        asset_id=asset_id, start=start, end=end, by=by, planned=planned,
        include_micro=include_micro,
        entries=_entries([c for c in every if _in_scope(c, planned, include_micro)], by),
        run_s=run.total_seconds(), down_s=down.total_seconds(),
        planned_down_s=sum((c.duration for c in every if c.stop.planned), ZERO).total_seconds(),
        micro_stops=len(micro), micro_stop_s=micro_time.total_seconds(), failures=n,
        mtbf_s=run / timedelta(seconds=1) / n if n else None,
        mttr_s=down / timedelta(seconds=1) / n if n else None,
    )  # fmt: skip
