"""Yield: first-pass yield and scrap rate from the production counts, and rejects by reason.

First-pass yield = good / total and scrap rate = reject / total over the counts whose
time falls in ``[start, end)``, of the asset and every machine under it. The counts are
first-pass counts: the PLC counters count a part once, when it first passes, so a
reworked part is not counted again and good / total is the first-pass yield. A ratio of
no parts is None, never 0 or NaN.

By reason, the rejects come from ``production_rejects`` over the same range and subtree;
what no reason counter saw is unattributed (see ``reasons.py``). Every view sums the same
count rows, so whole, per-product and per-reason totals agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.errors import NotFound
from api.production import repository as repo
from api.production.reasons import Attribution, Cell, attribute
from api.production.schemas import (
    ProductYield,
    ReasonRejects,
    YieldBy,
    YieldFigures,
    YieldPublic,
)
from api.timeseries.service import check_range

MAX_RANGE = timedelta(days=400)
_KEYS = ("total", "good", "reject")


def figures(*, total: int, good: int, reject: int) -> dict[str, Any]:
    """The counts with their ratios (None when ``total`` is 0)."""
    return {
        "total": total, "good": good, "reject": reject,
        "first_pass_yield": good / total if total else None,
        "scrap_rate": reject / total if total else None,
    }  # fmt: skip


def reason_rows(attribution: Attribution, *, total: int) -> list[ReasonRejects]:
    """The reasons, most first, then the unattributed rejects (when any), with share and rate."""
    entries: list[tuple[str | None, int]] = list(attribution.reasons)
    if attribution.unattributed:
        entries.append((None, attribution.unattributed))
    seen = sum(count for _, count in entries)
    return [
        ReasonRejects(
            reason=reason,
            count=count,
            share=count / seen if seen else None,
            rate=count / total if total else None,
        )
        for reason, count in entries
    ]


def yield_of(
    session: Session, *, asset_id: int, start: datetime, end: datetime, by: YieldBy = "none"
) -> YieldPublic:
    """The yield of an asset (and the machines under it) in ``[start, end)``."""
    check_range(start, end, longest=MAX_RANGE)
    asset = repo.asset(session, asset_id)
    if asset is None:
        raise NotFound(f"there is no asset {asset_id}", field="asset_id")
    cells = repo.counts_per_cell(session, asset=asset, start=start, end=end)
    whole = {k: sum(int(c[k]) for c in cells) for k in _KEYS}
    head: dict[str, Any] = {
        "asset_id": asset_id, "start": start, "end": end, "by": by,
        "whole": YieldFigures(**figures(**whole)),
    }  # fmt: skip
    if by in ("none", "product"):
        products = _products(cells) if by == "product" else []
        return YieldPublic(**head, products=products, reasons=[], over_attributed=None, note=None)
    found = repo.rejects_per_reason(session, asset=asset, start=start, end=end)
    rejects = {_cell(c): int(c["reject"]) for c in cells}
    reasons = [(_cell(r), str(r["reason"]), int(r["count"])) for r in found]
    overall = attribute(rejects, reasons)
    products = _products(cells, rejects=rejects, reasons=reasons) if by == "product_reason" else []
    return YieldPublic(
        **head, products=products, reasons=reason_rows(overall, total=whole["total"]),
        over_attributed=overall.over_attributed, note=_note(overall, reasons),
    )  # fmt: skip


def _cell(row: dict[str, Any]) -> Cell:
    return (int(row["asset_id"]), row["product"])


def _products(
    cells: list[dict[str, Any]],
    *,
    rejects: dict[Cell, int] | None = None,
    reasons: list[tuple[Cell, str, int]] | None = None,
) -> list[ProductYield]:
    """Per product, most parts first (ties by code, None last); with reasons when given."""
    # A product only the reason counters saw still gets its row (all counts 0).
    named = {cell[1] for cell, _, _ in reasons or ()}
    sums = {p: dict.fromkeys(_KEYS, 0) for p in named | {c["product"] for c in cells}}
    for c in cells:
        for k in _KEYS:
            sums[c["product"]][k] += int(c[k])
    order = sorted(sums, key=lambda p: (-sums[p]["total"], p is None, p or ""))
    return [
        ProductYield(
            product=p,
            **figures(**sums[p]),
            **_product_reasons(p, sums[p]["total"], rejects=rejects, reasons=reasons),
        )
        for p in order
    ]


def _product_reasons(
    product: str | None,
    total: int,
    *,
    rejects: dict[Cell, int] | None,
    reasons: list[tuple[Cell, str, int]] | None,
) -> dict[str, Any]:
    if rejects is None or reasons is None:
        return {"reasons": [], "over_attributed": None}
    mine = attribute(
        {cell: n for cell, n in rejects.items() if cell[1] == product},
        (r for r in reasons if r[0][1] == product),
    )
    return {"reasons": reason_rows(mine, total=total), "over_attributed": mine.over_attributed}


def _note(overall: Attribution, reasons: list[tuple[Cell, str, int]]) -> str | None:
    if overall.over_attributed:
        return (
            f"the reason counters counted {overall.over_attributed} rejects more than the reject"
            " counters of the same machine and product (a part counted under two reasons, or"
            " counts either side of the range's edge): unattributed is 0 there, never negative,"
            " and the reasons' rates add up to more than scrap_rate"
        )
    if not reasons and overall.unattributed:
        return "no reason counter counted in this range: every reject is unattributed"
    return None
