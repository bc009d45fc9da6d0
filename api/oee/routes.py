"""/api/v1/oee: OEE of one asset over a time range, whole and by bucket."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.auth.deps import ViewerDep
from api.calendar import Bucket
from api.db import INT4_MAX, Instant, SessionDep
from api.errors import ERRORS, ErrorResponse
from api.oee import service
from api.oee.schemas import OeeResponse

router = APIRouter(prefix="/oee", tags=["oee"], responses=ERRORS)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such asset"}
}


@router.get("", response_model=OeeResponse, responses=_NOT_FOUND)
def get_oee(
    request: Request,
    session: SessionDep,
    _key: ViewerDep,
    asset_id: Annotated[int, Query(ge=1, le=INT4_MAX, description="A machine, line, area or site")],
    start: Annotated[Instant, Query(description="Range start, with a UTC offset")],
    end: Annotated[Instant, Query(description="Range end (exclusive), after start")],
    bucket: Annotated[
        Bucket, Query(description="Split by local hour, shift, local day or week (Monday)")
    ] = "none",
) -> OeeResponse:
    """OEE (availability × performance × quality) and TEEP of an asset over [start, end).

    A line's figures are those of its machine flagged is_line_output; a site's or an
    area's combine its lines (OEE and TEEP only). Hour, day and week buckets follow the
    site's time zone (a DST day is 23 or 25 hours); shift buckets follow its calendar.
    """
    return service.oee(
        session,
        asset_id=asset_id,
        start=start,
        end=end,
        bucket=bucket,
        max_range_days=request.app.state.settings.max_range_days,
        helpers=request.app.state.oee_helpers,
    )
