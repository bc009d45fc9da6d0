"""/api/v1/yield: first-pass yield and scrap rate of an asset, whole, per product or reason."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth.deps import ViewerDep
from api.db import INT4_MAX, Instant, SessionDep
from api.errors import ERRORS, ErrorResponse
from api.production import service
from api.production.schemas import YieldBy, YieldPublic

router = APIRouter(tags=["production"], responses=ERRORS)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such asset"}
}


@router.get("/yield", response_model=YieldPublic, responses=_NOT_FOUND)
def yield_(
    asset_id: Annotated[
        int,
        Query(
            ge=1,
            le=INT4_MAX,
            description="A machine, or a line/area/site (all machines under it)",
            examples=[12],
        ),
    ],
    start: Annotated[
        Instant, Query(description="Range start", examples=["2026-01-05T06:00:00+01:00"])
    ],
    end: Annotated[
        Instant,
        Query(description="Range end (exclusive)", examples=["2026-01-05T14:00:00+01:00"]),
    ],
    session: SessionDep,
    _key: ViewerDep,
    by: Annotated[
        YieldBy,
        Query(
            description="none: the whole; product: also per product; reason: also the rejects "
            "by reason (with the unattributed rest); product_reason: per product, each with "
            "its rejects by reason, and the rejects by reason overall",
            examples=["reason"],
        ),
    ] = "none",
) -> YieldPublic:
    """First-pass yield and scrap rate in [start, end), whole, per product or per reason.

    Counts are first-pass: the PLC counters do not count a reworked part again. Ratios
    are null when no parts were made. Rejects by reason come from per-reason counters;
    what none of them saw is unattributed (reason null), and where they saw more than the
    reject counter the excess is over_attributed, with a note.
    """
    return service.yield_of(session, asset_id=asset_id, start=start, end=end, by=by)
