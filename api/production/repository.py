"""All SQL of the production domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]

# The asset and every asset under it (a sibling whose path merely starts the same is not).
_SCOPE = """
WITH scope AS (
    SELECT id FROM assets
    WHERE id = :asset OR left(path, length(:path) + 1) = :path || '/'
)
"""

# The counts whose time is in [start, end), per machine and product. Probes the
# (asset_id, time) index per asset of the subtree.
_PER_CELL = (
    _SCOPE
    + """
SELECT c.asset_id, c.product, sum(c.total)::bigint AS total, sum(c.good)::bigint AS good,
       sum(c.reject)::bigint AS reject
FROM production_counts c JOIN scope s ON s.id = c.asset_id
WHERE c.time >= :start AND c.time < :end
GROUP BY c.asset_id, c.product
"""
)

# The rejects by reason whose time is in [start, end), per machine, product and reason.
_REASONS_PER_CELL = (
    _SCOPE
    + """
SELECT r.asset_id, r.product, r.reason, sum(r.count)::bigint AS count
FROM production_rejects r JOIN scope s ON s.id = r.asset_id
WHERE r.time >= :start AND r.time < :end
GROUP BY r.asset_id, r.product, r.reason
"""
)


def asset(session: Session, asset_id: int) -> Row | None:
    """One asset by id."""
    sql = text("SELECT id, path FROM assets WHERE id = :id")
    found = session.execute(sql, {"id": asset_id}).mappings().first()
    return dict(found) if found else None


def _scoped(session: Session, sql: str, *, asset: Row, start: datetime, end: datetime) -> list[Row]:
    params = {"asset": asset["id"], "path": asset["path"], "start": start, "end": end}
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def counts_per_cell(session: Session, *, asset: Row, start: datetime, end: datetime) -> list[Row]:
    """Total, good and reject per machine and product (None included) under ``asset``."""
    return _scoped(session, _PER_CELL, asset=asset, start=start, end=end)


def rejects_per_reason(
    session: Session, *, asset: Row, start: datetime, end: datetime
) -> list[Row]:
    """Rejects per machine, product and reason under ``asset``."""
    return _scoped(session, _REASONS_PER_CELL, asset=asset, start=start, end=end)
