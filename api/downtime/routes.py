"""/api/v1/downtime: stop events and their Pareto with MTBF and MTTR."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.auth.deps import ViewerDep
from api.db import INT4_MAX, SessionDep
from api.downtime import service
from api.downtime.schemas import ParetoBy, ParetoPublic, StopsPublic
from api.errors import ERRORS, ErrorResponse

router = APIRouter(prefix="/downtime", tags=["downtime"], responses=ERRORS)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such asset"}
}
AssetQuery = Annotated[
    int,
    Query(ge=1, le=INT4_MAX, description="A machine, or a line/area/site (all machines under it)"),
]
StartQuery = Annotated[
    AwareDatetime, Query(description="Range start", examples=["2026-01-05T06:00:00+01:00"])
]
EndQuery = Annotated[
    AwareDatetime,
    Query(description="Range end (exclusive)", examples=["2026-01-05T14:00:00+01:00"]),
]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/stops", response_model=StopsPublic, responses=_NOT_FOUND)
def stops(
    asset_id: AssetQuery,
    start: StartQuery,
    end: EndQuery,
    session: SessionDep,
    _key: ViewerDep,
    state: Annotated[
        Text, Query(description="Only stops in this state", examples=["fault"])
    ] = None,
    reason: Annotated[Text, Query(description="Only stops with this reason")] = None,
    min_duration_s: Annotated[
        float | None, Query(ge=0, le=1e9, description="Only stops this long (inside the range)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = service.DEFAULT_LIMIT,
) -> StopsPublic:
    """Stop events (any state but running) in [start, end), clipped to the range."""
    return service.stops(
        session, asset_id=asset_id, start=start, end=end, state=state, reason=reason,
        min_duration_s=min_duration_s, limit=limit,
    )  # fmt: skip


@router.get("/pareto", response_model=ParetoPublic, responses=_NOT_FOUND)
def pareto(
    asset_id: AssetQuery,
    start: StartQuery,
    end: EndQuery,
    session: SessionDep,
    _key: ViewerDep,
    by: Annotated[ParetoBy, Query(description="Group stops by reason or by state")] = "reason",
) -> ParetoPublic:
    """Count and total duration of stops per reason or state, longest first; MTBF and MTTR."""
    return service.pareto(session, asset_id=asset_id, start=start, end=end, by=by)
