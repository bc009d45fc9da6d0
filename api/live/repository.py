"""All SQL of the live view: one index probe per machine and table (LATERAL ... LIMIT 1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]

# The latest interval (the open one, when there is one, is always the latest: intervals
# never overlap); checking end_time after the LIMIT keeps it one probe even for a machine
# whose last interval is closed.
_MACHINES = """
SELECT a.id AS asset_id, a.path, a.display_name,
       si.state, si.reason, si.code, si.start_time AS since, si.end_time,
       pc.product, pc.time AS product_time
FROM assets a
LEFT JOIN LATERAL (
    SELECT s.state, s.reason, s.code, s.start_time, s.end_time FROM state_intervals s
    WHERE s.asset_id = a.id ORDER BY s.start_time DESC LIMIT 1
) si ON true
LEFT JOIN LATERAL (
    SELECT c.product, c.time FROM production_counts c
    WHERE c.asset_id = a.id ORDER BY c.time DESC LIMIT 1
) pc ON true
WHERE a.level = 'machine'
  AND (CAST(:site_path AS text) IS NULL OR left(a.path, length(:site_path) + 1) = :site_path || '/')
ORDER BY a.path
"""

# A site's gateways are the agents that publish tags of its assets.
_GATEWAYS = """
SELECT g.agent, g.status, g.since, g.last_seen FROM gateways g
WHERE CAST(:site_path AS text) IS NULL OR EXISTS (
    SELECT 1 FROM tags t JOIN assets a ON a.id = t.asset_id
    WHERE t.agent = g.agent
      AND (a.path = :site_path OR left(a.path, length(:site_path) + 1) = :site_path || '/')
)
ORDER BY g.agent
"""


def _rows(session: Session, sql: str, params: Row) -> list[Row]:
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def site(session: Session, site_id: int) -> Row | None:
    """One asset (to check it is a site) by id."""
    rows = _rows(session, "SELECT id, level, path FROM assets WHERE id = :id", {"id": site_id})
    return rows[0] if rows else None


def machines(session: Session, *, site_path: str | None) -> list[Row]:
    """Every machine (of a site) with its latest state interval and latest count."""
    return _rows(session, _MACHINES, {"site_path": site_path})


def gateways(session: Session, *, site_path: str | None) -> list[Row]:
    """The gateways (publishing tags of a site)."""
    return _rows(session, _GATEWAYS, {"site_path": site_path})


def now(session: Session) -> Any:
    """The database's clock (the one the ingest stamps with)."""
    return session.execute(text("SELECT now()")).scalar_one()
