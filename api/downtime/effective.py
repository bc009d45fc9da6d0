"""The effective stops of an asset: state intervals with operators' reasons laid over them.

Loads the rows (intervals, assignments, loss classes, micro-stop thresholds) and runs the
pure :func:`api.downtime.overlay.overlay` and :mod:`api.downtime.classify` on them, per
machine. OEE applies the same reasons in SQL (api.oee.repository.excluded_spans), checked
against the pure core with reasons in tests/api/test_oee_api.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.downtime import repository as repo
from api.downtime.classify import Stop, classify_all, loss_class, state_classes
from api.downtime.overlay import Assignment, Interval, Piece, Reason, overlay
from api.oee.calc import LossClass

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MachineStops:
    """One asset's pieces (running ones included) and its classified stops."""

    asset_id: int
    path: str
    pieces: list[Piece]
    stops: list[Stop]
    classes: Mapping[str, LossClass]
    micro_stop_s: float
    is_line_output: bool


def _interval(row: Row) -> Interval:
    reason = Reason(row["code"], row["reason"], row["category"], bool(row["planned"]))
    return Interval(row["start_time"], row["end_time"], row["state"], reason)


def _assignment(row: Row) -> Assignment:
    reason = Reason(row["code"], row["reason"], row["category"], bool(row["planned"]))
    return Assignment(int(row["id"]), row["start_time"], row["end_time"], reason)


def classes_by_asset(session: Session, asset_ids: list[int]) -> dict[int, Mapping[str, LossClass]]:
    """The state → loss class map of each asset (defaults, global rows, its own rows)."""
    rows = repo.loss_class_rows(session, asset_ids)
    common = {r["state"]: r["loss_class"] for r in rows if r["asset_id"] is None}
    own: dict[int, dict[str, str]] = defaultdict(dict)
    for r in rows:
        if r["asset_id"] is not None:
            own[int(r["asset_id"])][r["state"]] = r["loss_class"]
    return {a: state_classes(common, own.get(a, {})) for a in asset_ids}


def load(
    session: Session, scope: Row, *, start: datetime, end: datetime, now: datetime
) -> list[MachineStops]:
    """Every asset under ``scope`` (itself included) with intervals overlapping [start, end)."""
    interval_rows = repo.intervals(session, scope=scope, start=start, end=end)
    if not interval_rows:
        return []
    # Assignments over the intervals' whole extent, so that pieces are whole, not clipped.
    lo = min(r["start_time"] for r in interval_rows)
    ends = [r["end_time"] for r in interval_rows]
    hi = None if None in ends else max(e for e in ends if e is not None)
    by_asset: dict[int, list[Row]] = defaultdict(list)
    for r in interval_rows:
        by_asset[int(r["asset_id"])].append(r)
    assigned: dict[int, list[Assignment]] = defaultdict(list)
    for r in repo.assignments(session, scope=scope, start=lo, end=hi):
        assigned[int(r["asset_id"])].append(_assignment(r))
    ids = sorted(by_asset)
    classes = classes_by_asset(session, ids)
    settings = repo.machine_settings(session, ids)
    return [
        _machine(
            asset_id, rows, assigned[asset_id], classes[asset_id], settings.get(asset_id), now=now
        )
        for asset_id, rows in sorted(by_asset.items(), key=lambda kv: kv[1][0]["path"])
    ]


def _machine(
    asset_id: int,
    rows: list[Row],
    assignments: list[Assignment],
    classes: Mapping[str, LossClass],
    settings: Row | None,
    *,
    now: datetime,
) -> MachineStops:
    def is_stop(state: str) -> bool:
        return loss_class(state, classes) is not LossClass.RUNNING

    pieces = overlay([_interval(r) for r in rows], assignments, is_stop=is_stop)
    micro_s = float(settings["micro_stop_s"]) if settings else 0.0
    stops = classify_all(asset_id, pieces, classes=classes, micro_stop_s=micro_s, now=now)
    return MachineStops(
        asset_id=asset_id,
        path=rows[0]["path"],
        pieces=pieces,
        stops=stops,
        classes=classes,
        micro_stop_s=micro_s,
        is_line_output=bool(settings and settings["is_line_output"]),
    )
