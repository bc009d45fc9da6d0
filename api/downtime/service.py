"""Stops and their Pareto, MTBF and MTTR.

A stop is a state interval whose state is not ``running`` (every other state: fault,
idle, starved, blocked, setup, ...). The loss classes of the OEE module (planned or not,
micro-stops) may refine this later; until then MTBF = run time / stops and MTTR = stop
time / stops, with every stop overlapping the range counted once and consecutive stop
intervals counted apart. Durations are clipped to the range; an open stop ends now.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.downtime import repository as repo
from api.downtime.schemas import ParetoBy, ParetoEntry, ParetoPublic, StopPublic, StopsPublic
from api.errors import NotFound
from api.timeseries.service import check_range

MAX_RANGE = timedelta(days=400)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def _asset(session: Session, asset_id: int) -> dict[str, Any]:
    row = repo.asset(session, asset_id)
    if row is None:
        raise NotFound(f"there is no asset {asset_id}", field="asset_id")
    return row


def stops(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    state: str | None = None,
    reason: str | None = None,
    min_duration_s: float | None = None,
    limit: int = DEFAULT_LIMIT,
) -> StopsPublic:
    """The stops of an asset (and the machines under it) in ``[start, end)``."""
    check_range(start, end, longest=MAX_RANGE)
    asset = _asset(session, asset_id)
    rows = repo.stops(
        session, asset=asset, start=start, end=end, state=state, reason=reason,
        min_duration_s=min_duration_s, limit=limit + 1,
    )  # fmt: skip
    return StopsPublic(
        asset_id=asset_id, start=start, end=end,
        stops=[StopPublic(**r) for r in rows[:limit]], truncated=len(rows) > limit,
    )  # fmt: skip


def pareto(
    session: Session, *, asset_id: int, start: datetime, end: datetime, by: ParetoBy
) -> ParetoPublic:
    """Count and duration of the stops per reason or state, longest first; MTBF, MTTR."""
    check_range(start, end, longest=MAX_RANGE)
    asset = _asset(session, asset_id)
    entries, totals = repo.pareto(session, asset=asset, start=start, end=end, by=by)
    failures = int(totals["failures"])
    run_s, down_s = float(totals["run_s"]), float(totals["down_s"])
    return ParetoPublic(
        asset_id=asset_id, start=start, end=end, by=by,
        entries=[ParetoEntry(**e) for e in entries],
        run_s=run_s, down_s=down_s, failures=failures,
        mtbf_s=run_s / failures if failures else None,
        mttr_s=down_s / failures if failures else None,
    )  # fmt: skip
