"""/api/v1/downtime: stops, their Pareto, a line's root causes, operators' reasons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from api.auth.deps import OperatorDep, ViewerDep
from api.db import INT4_MAX, Instant, SessionDep
from api.downtime import reasons, root_service, service
from api.downtime.schemas import (
    ParetoBy,
    ParetoPublic,
    PlannedScope,
    RootCausePublic,
    StopReasonCreate,
    StopReasonPublic,
    StopReasonsPublic,
    StopSplit,
    StopsPublic,
)
from api.errors import ERRORS, ErrorResponse

router = APIRouter(prefix="/downtime", tags=["downtime"], responses=ERRORS)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such asset"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "The asset or the code changed meanwhile"}
}
AssetQuery = Annotated[
    int,
    Query(
        ge=1,
        le=INT4_MAX,
        description="A machine, or a line/area/site (all machines under it)",
        examples=[7],
    ),
]
StartQuery = Annotated[
    Instant, Query(description="Range start", examples=["2026-01-05T06:00:00+01:00"])
]
EndQuery = Annotated[
    Instant,
    Query(description="Range end (exclusive)", examples=["2026-01-05T14:00:00+01:00"]),
]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]
Seconds = Annotated[float | None, Query(ge=0, le=1e9)]
ByQuery = Annotated[
    ParetoBy, Query(description="Group by reason, code, category or state", examples=["code"])
]


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
    reason: Annotated[Text, Query(description="Only this effective reason")] = None,
    code: Annotated[Text, Query(description="Only this effective code", examples=["JAM"])] = None,
    category: Annotated[
        Text, Query(description="Only this category of the reason tree", examples=["mechanical"])
    ] = None,
    planned: Annotated[bool | None, Query(description="Only planned (true) or unplanned")] = None,
    micro: Annotated[bool | None, Query(description="Only micro-stops (true) or others")] = None,
    min_duration_s: Annotated[
        Seconds, Query(description="Only stops this long (inside the range)", examples=[60])
    ] = None,
    max_duration_s: Annotated[
        Seconds, Query(description="Only stops at most this long (inside the range)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = service.DEFAULT_LIMIT,
) -> StopsPublic:
    """Stops in [start, end), clipped to the range, with effective reason and classification."""
    filters = service.StopFilter(
        state=state, reason=reason, code=code, category=category, planned=planned, micro=micro,
        min_duration_s=min_duration_s, max_duration_s=max_duration_s,
    )  # fmt: skip
    return service.stops(
        session, asset_id=asset_id, start=start, end=end, filters=filters, limit=limit
    )


@router.get("/pareto", response_model=ParetoPublic, responses=_NOT_FOUND)
def pareto(
    asset_id: AssetQuery,
    start: StartQuery,
    end: EndQuery,
    session: SessionDep,
    _key: ViewerDep,
    by: ByQuery = "reason",
    planned: Annotated[
        PlannedScope,
        Query(description="Entries of unplanned stops (false), planned (true) or all"),
    ] = "false",
    include_micro: Annotated[
        bool, Query(description="Micro-stops in the entries too (always counted apart)")
    ] = False,
) -> ParetoPublic:
    """Count and duration of stops per key, longest first; micro-stops apart; MTBF, MTTR."""
    return service.pareto(
        session, asset_id=asset_id, start=start, end=end, by=by, planned=planned,
        include_micro=include_micro,
    )  # fmt: skip


@router.get("/root-cause", response_model=RootCausePublic, responses=_NOT_FOUND)
def root_cause(
    asset_id: Annotated[int, Query(ge=1, le=INT4_MAX, description="A line", examples=[3])],
    start: StartQuery,
    end: EndQuery,
    session: SessionDep,
    _key: ViewerDep,
    limit: Annotated[
        int, Query(ge=1, le=root_service.MAX_EPISODES, description="Episodes listed at most")
    ] = root_service.DEFAULT_EPISODES,
) -> RootCausePublic:
    """Which machine of a line caused its starved and blocked time and its output's stops."""
    return root_service.root_cause(session, asset_id=asset_id, start=start, end=end, limit=limit)


@router.get("/stops/reasons", response_model=StopReasonsPublic, responses=_NOT_FOUND)
def list_reasons(
    asset_id: AssetQuery,
    start: StartQuery,
    end: EndQuery,
    session: SessionDep,
    _key: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=reasons.MAX_LIMIT)] = reasons.DEFAULT_LIMIT,
) -> StopReasonsPublic:
    """Operators' reasons overlapping [start, end), with who gave them and when."""
    return reasons.list_reasons(session, asset_id=asset_id, start=start, end=end, limit=limit)


@router.post(
    "/stops/reason",
    response_model=StopReasonPublic,
    status_code=status.HTTP_201_CREATED,
    responses=_CONFLICT,
)
def assign_reason(
    data: StopReasonCreate, session: SessionDep, key: OperatorDep
) -> StopReasonPublic:
    """Give a reason to [start, end) of a machine's stop time (operator); audited."""
    return reasons.assign(session, data, actor=key)


@router.post(
    "/stops/split",
    response_model=list[StopReasonPublic],
    status_code=status.HTTP_201_CREATED,
    responses=_CONFLICT,
)
def split_stop(data: StopSplit, session: SessionDep, key: OperatorDep) -> list[StopReasonPublic]:
    """Split the stop starting at start into consecutive parts with reasons (operator)."""
    return reasons.split(session, data, actor=key)


@router.delete(
    "/stops/reason/{reason_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={404: {"model": ErrorResponse, "description": "No such stop reason"}},
)
def delete_reason(
    reason_id: Annotated[
        int, Path(ge=1, le=INT4_MAX, description="The stop reason's id", examples=[12])
    ],
    session: SessionDep,
    key: OperatorDep,
) -> Response:
    """Delete an operator's reason; the machine's own applies again (operator); audited."""
    reasons.delete(session, reason_id, actor=key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
