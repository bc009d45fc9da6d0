"""All SQL of the production domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]

# The counts of an asset and every asset under it whose time is in [start, end), per
# product. Probes the (asset_id, time) index per asset of the subtree.
_PER_PRODUCT = """
WITH scope AS (
    SELECT id FROM assets
    WHERE id = :asset OR left(path, length(:path) + 1) = :path || '/'
)
SELECT c.product, sum(c.total)::bigint AS total, sum(c.good)::bigint AS good,
       sum(c.reject)::bigint AS reject
FROM production_counts c JOIN scope s ON s.id = c.asset_id
WHERE c.time >= :start AND c.time < :end
GROUP BY c.product
ORDER BY 2 DESC, 1 NULLS LAST
"""


def asset(session: Session, asset_id: int) -> Row | None:
    """One asset by id."""
    sql = text("SELECT id, path FROM assets WHERE id = :id")
    found = session.execute(sql, {"id": asset_id}).mappings().first()
    return dict(found) if found else None


def counts_per_product(
    session: Session, *, asset: Row, start: datetime, end: datetime
) -> list[Row]:
    """Total, good and reject per product (None included) under ``asset``, most first."""
    params = {"asset": asset["id"], "path": asset["path"], "start": start, "end": end}
    return [dict(r) for r in session.execute(text(_PER_PRODUCT), params).mappings()]
