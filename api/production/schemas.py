"""Yield of an asset over a range: as a whole, per product, per reject reason."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

YieldBy = Literal["none", "product", "reason", "product_reason"]


class YieldFigures(BaseModel):
    """Part counts and the ratios made of them."""

    total: int = Field(description="Parts made (good + reject)")
    good: int
    reject: int
    first_pass_yield: float | None = Field(
        description="good / total, 0..1; None when total is 0. The PLC counters count each "
        "part once, at its first pass: reworked parts are not counted again."
    )
    scrap_rate: float | None = Field(description="reject / total, 0..1; None when total is 0")


class ReasonRejects(BaseModel):
    """The rejects of one reason (or the unattributed ones)."""

    reason: str | None = Field(
        description="The reason as the PLC counts it; None: unattributed, the rejects no "
        "reason counter saw (reject − Σ reasons per machine and product, never negative)"
    )
    count: int = Field(description="Rejected parts")
    share: float | None = Field(
        description="count / the sum of the entries' counts, 0..1 (that sum is reject unless "
        "over_attributed > 0); None when there are no rejects"
    )
    rate: float | None = Field(
        description="count / total parts, 0..1; the rates add up to scrap_rate unless "
        "over_attributed > 0; None when total is 0"
    )


class ProductYield(YieldFigures):
    """The figures of one product."""

    product: str | None = Field(description="Product code; None: counted without a product")
    reasons: list[ReasonRejects] = Field(
        description="by=product_reason: this product's rejects by reason, most first, "
        "unattributed last (when any); empty otherwise"
    )
    over_attributed: int | None = Field(
        description="by=product_reason: rejects the reason counters counted beyond the reject "
        "counter (per machine); None otherwise"
    )


class YieldPublic(BaseModel):
    """The yield of an asset (and the machines under it) in ``[start, end)``."""

    asset_id: int
    start: datetime
    end: datetime
    by: YieldBy
    whole: YieldFigures = Field(description="All counts in the range")
    products: list[ProductYield] = Field(
        description="by=product or product_reason: one row per product, most parts first; "
        "empty otherwise"
    )
    reasons: list[ReasonRejects] = Field(
        description="by=reason or product_reason: all rejects by reason, most first, "
        "unattributed last (when any); empty otherwise"
    )
    over_attributed: int | None = Field(
        description="by=reason or product_reason: rejects the reason counters counted beyond "
        "the reject counters, summed per machine and product (0 when they agree); None otherwise"
    )
    note: str | None = Field(description="What to know before trusting the breakdown")
