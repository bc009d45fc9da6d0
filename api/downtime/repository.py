"""All SQL of the downtime domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]
RUNNING = "running"

# The state intervals of an asset and everything under it, clipped to [start, end); an open
# interval ends now. Probes the (asset_id, start_time) primary key per asset.
_CLIPPED = """
WITH scope AS (
    SELECT id, path FROM assets
    WHERE id = :asset OR left(path, length(:path) + 1) = :path || '/'
), clipped AS (
    SELECT s.asset_id, a.path, s.state, s.reason, s.code,
           s.start_time AS interval_start, s.end_time AS interval_end,
           greatest(s.start_time, :start) AS start,
           least(coalesce(s.end_time, now()), :end) AS "end"
    FROM state_intervals s JOIN scope a ON a.id = s.asset_id
    WHERE s.start_time < :end AND coalesce(s.end_time, 'infinity') > :start
), timed AS (
    SELECT *, extract(epoch FROM "end" - start)::float8 AS duration_s
    FROM clipped WHERE "end" > start
)
"""

_STOPS = (
    _CLIPPED
    + """
SELECT * FROM timed
WHERE state <> :running
  AND (CAST(:state AS text) IS NULL OR state = :state)
  AND (CAST(:reason AS text) IS NULL OR reason = :reason)
  AND (CAST(:min_s AS float8) IS NULL OR duration_s >= :min_s)
ORDER BY start, path
LIMIT :limit
"""
)

_PARETO = (
    _CLIPPED
    + """
SELECT {key} AS key, count(*) AS count, sum(duration_s) AS duration_s
FROM timed WHERE state <> :running
GROUP BY 1 ORDER BY 3 DESC, 2 DESC, 1 NULLS LAST
"""
)

_TOTALS = (
    _CLIPPED
    + """
SELECT coalesce(sum(duration_s) FILTER (WHERE state = :running), 0) AS run_s,
       coalesce(sum(duration_s) FILTER (WHERE state <> :running), 0) AS down_s,
       count(*) FILTER (WHERE state <> :running) AS failures
FROM timed
"""
)


def _rows(session: Session, sql: str, params: Row) -> list[Row]:
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def asset(session: Session, asset_id: int) -> Row | None:
    """One asset by id."""
    rows = _rows(session, "SELECT id, path FROM assets WHERE id = :id", {"id": asset_id})
    return rows[0] if rows else None


def stops(
    session: Session,
    *,
    asset: Row,
    start: datetime,
    end: datetime,
    state: str | None,
    reason: str | None,
    min_duration_s: float | None,
    limit: int,
) -> list[Row]:
    """The stops under ``asset`` in the range, clipped, filtered, oldest first."""
    params = {
        "asset": asset["id"], "path": asset["path"], "start": start, "end": end,
        "running": RUNNING, "state": state, "reason": reason, "min_s": min_duration_s,
        "limit": limit,
    }  # fmt: skip
    return _rows(session, _STOPS, params)


def pareto(
    session: Session, *, asset: Row, start: datetime, end: datetime, by: str
) -> tuple[list[Row], Row]:
    """(count and duration per key, longest first; run/down time and failures)."""
    if by not in ("reason", "state"):  # never interpolate anything else
        raise ValueError(f"cannot group stops by {by!r}")
    params = {
        "asset": asset["id"], "path": asset["path"], "start": start, "end": end,
        "running": RUNNING,
    }  # fmt: skip
    entries = _rows(session, _PARETO.format(key=by), params)
    return entries, _rows(session, _TOTALS, params)[0]
