"""All SQL of the time-series domain (plain SQL: the same on PostgreSQL and TimescaleDB)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]
Point = tuple[datetime, float]
Rollup = Literal["samples_1m", "samples_1h"]
_GOOD = 0

# Each EXISTS is one probe of the (tag_id, time DESC) index.
_KINDS = """
SELECT EXISTS (SELECT 1 FROM samples WHERE tag_id = :tag AND time >= :start AND time < :end)
           AS numeric,
       EXISTS (SELECT 1 FROM samples_text WHERE tag_id = :tag AND time >= :start AND time < :end)
           AS text
"""

# Buckets over raw samples: the good ones only, as in the rollups (so switching between raw
# and rollup sources never changes what a bucket means).
_RAW_BUCKETS = f"""
SELECT date_bin(CAST(:width AS interval), time, :start) AS time,
       min(value) AS min, max(value) AS max, avg(value) AS avg, count(*) AS count
FROM samples
WHERE tag_id = :tag AND time >= :start AND time < :end
  AND quality = {_GOOD} AND value IS NOT NULL
GROUP BY 1 ORDER BY 1
"""

# Re-aggregating rollup buckets that start inside the range: min of mins, max of maxes and
# the count-weighted mean of the means.
_ROLLUP_BUCKETS = """
SELECT date_bin(CAST(:width AS interval), bucket, :start) AS time,
       min(min) AS min, max(max) AS max,
       sum(avg * count) / sum(count) AS avg, sum(count) AS count
FROM {table}
WHERE tag_id = :tag AND bucket >= :start AND bucket < :end AND count > 0
GROUP BY 1 ORDER BY 1
"""


# M4 over the good raw samples: per column of :width from :start, the first, last, lowest
# and highest sample, as distinct (time, value) points; api/timeseries/shape.py:m4 is the
# definition, ties included (the earliest sample wins; at equal times the lower value is
# the first). One hash aggregate and no sort (window functions sorted the rows four times:
# 2-3x slower): each pick is the min or max of a float8 array, compared element by element,
# with the time as whole microseconds since :start (exact in a float8 over any range the
# API allows).
_M4 = f"""
WITH good AS (
    SELECT date_bin(CAST(:width AS interval), time, :start) AS col, value,
           round(date_part('epoch', time - :start) * 1000000) AS us
    FROM samples
    WHERE tag_id = :tag AND time >= :start AND time < :end
      AND quality = {_GOOD} AND value IS NOT NULL
), per_column AS (
    SELECT min(ARRAY[us, value]) AS head, max(ARRAY[us, value]) AS tail,
           min(ARRAY[value, us]) AS low, max(ARRAY[value, -us]) AS high
    FROM good GROUP BY col
)
SELECT DISTINCT CAST(:start AS timestamptz) + p.us * interval '1 microsecond' AS time, p.value
FROM per_column,
     LATERAL (VALUES (head[1], head[2]), (tail[1], tail[2]), (low[2], low[1]),
                     (-high[2], high[1])) AS p (us, value)
ORDER BY 1, 2
"""

_GOOD_POINTS = f"""
SELECT time, value FROM samples
WHERE tag_id = :tag AND time >= :start AND time < :end AND quality = {_GOOD} AND value IS NOT NULL
ORDER BY time, value
"""

# Counting stops at :limit: the answer is "this many" or "at least :limit".
_COUNT_GOOD = f"""
SELECT count(*) FROM (
    SELECT 1 FROM samples
    WHERE tag_id = :tag AND time >= :start AND time < :end
      AND quality = {_GOOD} AND value IS NOT NULL
    LIMIT :limit
) capped
"""


def _rows(session: Session, sql: str, params: Row) -> list[Row]:
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def tag(session: Session, tag_id: int) -> Row | None:
    """One tag by id."""
    rows = _rows(session, "SELECT id, name, datatype FROM tags WHERE id = :id", {"id": tag_id})
    return rows[0] if rows else None


def kinds(session: Session, tag_id: int, *, start: datetime, end: datetime) -> Row:
    """Whether the tag has numeric and/or text samples in ``[start, end)``."""
    return _rows(session, _KINDS, {"tag": tag_id, "start": start, "end": end})[0]


def raw(
    session: Session, tag_id: int, *, start: datetime, end: datetime, limit: int, textual: bool
) -> list[Row]:
    """The first ``limit`` raw samples in ``[start, end)``, oldest first."""
    table = "samples_text" if textual else "samples"
    return _rows(
        session,
        f"SELECT time, value, quality FROM {table}"
        " WHERE tag_id = :tag AND time >= :start AND time < :end ORDER BY time LIMIT :limit",
        {"tag": tag_id, "start": start, "end": end, "limit": limit},
    )


def raw_buckets(
    session: Session, tag_id: int, *, start: datetime, end: datetime, width: timedelta
) -> list[Row]:
    """min/max/avg/count of the good raw samples per bucket of ``width`` from ``start``."""
    params = {"tag": tag_id, "start": start, "end": end, "width": width}
    return _rows(session, _RAW_BUCKETS, params)


def rollup_buckets(
    session: Session,
    tag_id: int,
    *,
    table: Rollup,
    start: datetime,
    end: datetime,
    width: timedelta,
) -> list[Row]:
    """The rollup rows of ``table`` re-aggregated into buckets of ``width`` from ``start``."""
    if table not in ("samples_1m", "samples_1h"):  # never interpolate anything else
        raise ValueError(f"not a rollup table: {table!r}")
    params = {"tag": tag_id, "start": start, "end": end, "width": width}
    return _rows(session, _ROLLUP_BUCKETS.format(table=table), params)


def count_good(session: Session, tag_id: int, *, start: datetime, end: datetime, limit: int) -> int:
    """The number of good samples in ``[start, end)``, counting no further than ``limit``."""
    params = {"tag": tag_id, "start": start, "end": end, "limit": limit}
    return int(session.execute(text(_COUNT_GOOD), params).scalar_one())


def good_points(session: Session, tag_id: int, *, start: datetime, end: datetime) -> list[Point]:
    """Every good sample in ``[start, end)`` as ``(time, value)``, oldest first."""
    params = {"tag": tag_id, "start": start, "end": end}
    return [(r[0], r[1]) for r in session.execute(text(_GOOD_POINTS), params)]


def m4(
    session: Session, tag_id: int, *, start: datetime, end: datetime, width: timedelta
) -> list[Point]:
    """The M4 points of the good samples, columns of ``width`` from ``start``, oldest first."""
    params = {"tag": tag_id, "start": start, "end": end, "width": width}
    return [(r[0], r[1]) for r in session.execute(text(_M4), params)]
