"""Yield: first-pass yield and scrap rate from the production counts.

First-pass yield = good / total and scrap rate = reject / total over the counts whose
time falls in ``[start, end)``, of the asset and every machine under it. The counts are
first-pass counts: the PLC counters count a part once, when it first passes, so a
reworked part is not counted again and good / total is the first-pass yield. A ratio of
no parts is None, never 0 or NaN.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.errors import NotFound
from api.production import repository as repo
from api.production.schemas import ProductYield, YieldBy, YieldFigures, YieldPublic
from api.timeseries.service import check_range

MAX_RANGE = timedelta(days=400)


def figures(*, total: int, good: int, reject: int) -> dict[str, Any]:
    """The counts with their ratios (None when ``total`` is 0)."""
    return {
        "total": total, "good": good, "reject": reject,
        "first_pass_yield": good / total if total else None,
        "scrap_rate": reject / total if total else None,
    }  # fmt: skip


def yield_of(
    session: Session, *, asset_id: int, start: datetime, end: datetime, by: YieldBy = "none"
) -> YieldPublic:
    """The yield of an asset (and the machines under it) in ``[start, end)``."""
    check_range(start, end, longest=MAX_RANGE)
    asset = repo.asset(session, asset_id)
    if asset is None:
        raise NotFound(f"there is no asset {asset_id}", field="asset_id")
    rows = repo.counts_per_product(session, asset=asset, start=start, end=end)
    whole = {k: sum(int(r[k]) for r in rows) for k in ("total", "good", "reject")}
    products = [
        ProductYield(
            product=r["product"],
            **figures(total=int(r["total"]), good=int(r["good"]), reject=int(r["reject"])),
        )
        for r in rows
    ]
    return YieldPublic(
        asset_id=asset_id, start=start, end=end, by=by,
        whole=YieldFigures(**figures(**whole)),
        products=products if by == "product" else [],
    )  # fmt: skip
