"""Yield of an asset over a range, as a whole and per product."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

YieldBy = Literal["none", "product"]


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


class ProductYield(YieldFigures):
    """The figures of one product."""

    product: str | None = Field(description="Product code; None: counted without a product")


class YieldPublic(BaseModel):
    """The yield of an asset (and the machines under it) in ``[start, end)``."""

    asset_id: int
    start: datetime
    end: datetime
    by: YieldBy
    whole: YieldFigures = Field(description="All counts in the range")
    products: list[ProductYield] = Field(
        description="One row per product, most parts first (by=product; empty for by=none)"
    )
