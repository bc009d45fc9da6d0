"""Shift calendars of sites and planned downtime (part of the planning routes)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status

from api.auth.deps import AdminDep, ViewerDep
from api.db import INT4_MAX, SessionDep
from api.errors import ErrorResponse
from api.planning import calendar_service, downtime_service
from api.planning.calendar_schemas import (
    CalendarPublic,
    ExceptionCreate,
    ExceptionPublic,
    PlannedCategory,
    PlannedDowntimeCreate,
    PlannedDowntimeList,
    PlannedDowntimePublic,
    PlannedDowntimeUpdate,
    ShiftCreate,
    ShiftPublic,
    ShiftUpdate,
)
from api.planning.types import Instant

Doc = dict[int | str, dict[str, Any]]
NOT_FOUND: Doc = {404: {"model": ErrorResponse, "description": "No such thing (see field)"}}
CONFLICT: Doc = {409: {"model": ErrorResponse, "description": "It clashes with what is stored"}}
NO_CONTENT: dict[str, Any] = {
    "status_code": status.HTTP_204_NO_CONTENT,
    "response_class": Response,
}
SiteId = Annotated[
    int, Path(ge=1, le=INT4_MAX, description="The site's asset id (level site)", examples=[1])
]
ShiftId = Annotated[int, Path(ge=1, le=INT4_MAX, description="The shift's id", examples=[1])]
ExceptionId = Annotated[
    int, Path(ge=1, le=INT4_MAX, description="The exception's id", examples=[1])
]
DowntimeId = Annotated[int, Path(ge=1, le=INT4_MAX, description="The entry's id", examples=[1])]
StartQuery = Annotated[
    Instant,
    Query(description="Range start, with a UTC offset", examples=["2026-03-23T00:00:00+01:00"]),
]
EndQuery = Annotated[
    Instant,
    Query(description="Range end (exclusive), after start", examples=["2026-04-06T00:00:00+02:00"]),
]

router = APIRouter()
shifts = APIRouter(tags=["shift calendars"])
downtime = APIRouter(prefix="/planned-downtime", tags=["planned downtime"])


def _gone() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- shifts ----------------------------------------------------------------------------


@shifts.get("/sites/{site_id}/shifts", response_model=list[ShiftPublic], responses=NOT_FOUND)
def list_shifts(site_id: SiteId, session: SessionDep, _key: ViewerDep) -> list[ShiftPublic]:
    """A site's weekly shifts (local wall-clock start and duration)."""
    return calendar_service.list_shifts(session, site_id)


@shifts.post(
    "/sites/{site_id}/shifts",
    response_model=ShiftPublic,
    status_code=201,
    responses={**NOT_FOUND, **CONFLICT},
)
def create_shift(
    site_id: SiteId, data: ShiftCreate, session: SessionDep, key: AdminDep
) -> ShiftPublic:
    """Add a weekly shift to a site (admin)."""
    return calendar_service.create_shift(session, site_id, data, actor=key)


@shifts.get("/shifts/{shift_id}", response_model=ShiftPublic, responses=NOT_FOUND)
def get_shift(shift_id: ShiftId, session: SessionDep, _key: ViewerDep) -> ShiftPublic:
    """One weekly shift."""
    return calendar_service.get_shift(session, shift_id)


@shifts.patch("/shifts/{shift_id}", response_model=ShiftPublic, responses={**NOT_FOUND, **CONFLICT})
def update_shift(
    shift_id: ShiftId, data: ShiftUpdate, session: SessionDep, key: AdminDep
) -> ShiftPublic:
    """Change a shift's name, weekday, start or duration (admin)."""
    return calendar_service.update_shift(session, shift_id, data, actor=key)


@shifts.delete("/shifts/{shift_id}", **NO_CONTENT, responses=NOT_FOUND)
def delete_shift(shift_id: ShiftId, session: SessionDep, key: AdminDep) -> Response:
    """Delete a weekly shift (admin)."""
    calendar_service.delete_shift(session, shift_id, actor=key)
    return _gone()


@shifts.get(
    "/sites/{site_id}/shift-exceptions", response_model=list[ExceptionPublic], responses=NOT_FOUND
)
def list_exceptions(
    site_id: SiteId,
    session: SessionDep,
    _key: ViewerDep,
    since: Annotated[
        date | None, Query(description="From this local date on", examples=["2026-01-01"])
    ] = None,
    until: Annotated[
        date | None, Query(description="Up to this local date (inclusive)", examples=["2026-12-31"])
    ] = None,
) -> list[ExceptionPublic]:
    """A site's holidays and extra shifts by date."""
    return calendar_service.list_exceptions(session, site_id, since=since, until=until)


@shifts.post(
    "/sites/{site_id}/shift-exceptions",
    response_model=ExceptionPublic,
    status_code=201,
    responses={**NOT_FOUND, **CONFLICT},
)
def create_exception(
    site_id: SiteId, data: ExceptionCreate, session: SessionDep, key: AdminDep
) -> ExceptionPublic:
    """Add a holiday (of one shift or the whole day) or an extra shift to a site (admin)."""
    return calendar_service.create_exception(session, site_id, data, actor=key)


@shifts.delete("/shift-exceptions/{exception_id}", **NO_CONTENT, responses=NOT_FOUND)
def delete_exception(exception_id: ExceptionId, session: SessionDep, key: AdminDep) -> Response:
    """Delete a holiday or an extra shift (admin)."""
    calendar_service.delete_exception(session, exception_id, actor=key)
    return _gone()


@shifts.get("/sites/{site_id}/calendar", response_model=CalendarPublic, responses=NOT_FOUND)
def calendar(
    site_id: SiteId, start: StartQuery, end: EndQuery, session: SessionDep, _key: ViewerDep
) -> CalendarPublic:
    """A site's shifts resolved over [start, end): UTC and local times, DST and holidays.

    At most 400 days at once. Windows are whole (they may reach outside the range);
    scheduled_s counts only the time inside it.
    """
    return calendar_service.calendar(session, site_id, start=start, end=end)


# --- planned downtime -----------------------------------------------------------------


@downtime.get("", response_model=PlannedDowntimeList, responses=NOT_FOUND)
def list_downtime(
    request: Request,
    session: SessionDep,
    _key: ViewerDep,
    asset_id: Annotated[
        int, Query(ge=1, le=INT4_MAX, description="A machine, line, area or site", examples=[7])
    ],
    start: StartQuery,
    end: EndQuery,
    category: Annotated[PlannedCategory | None, Query(description="Only this category")] = None,
    limit: Annotated[
        int, Query(ge=1, le=downtime_service.MAX_LIMIT)
    ] = downtime_service.DEFAULT_LIMIT,
) -> PlannedDowntimeList:
    """Planned downtime applying to an asset in [start, end): its own and its ancestors'."""
    return downtime_service.list_downtime(
        session, asset_id=asset_id, start=start, end=end, category=category, limit=limit,
        max_range_days=request.app.state.settings.max_range_days,
    )  # fmt: skip


@downtime.post("", response_model=PlannedDowntimePublic, status_code=201, responses=NOT_FOUND)
def create_downtime(
    data: PlannedDowntimeCreate, session: SessionDep, key: AdminDep
) -> PlannedDowntimePublic:
    """Schedule planned downtime of an asset and everything under it (admin)."""
    return downtime_service.create_downtime(session, data, actor=key)


@downtime.get("/{downtime_id}", response_model=PlannedDowntimePublic, responses=NOT_FOUND)
def get_downtime(
    downtime_id: DowntimeId, session: SessionDep, _key: ViewerDep
) -> PlannedDowntimePublic:
    """One planned downtime entry."""
    return downtime_service.get_downtime(session, downtime_id)


@downtime.patch("/{downtime_id}", response_model=PlannedDowntimePublic, responses=NOT_FOUND)
def update_downtime(
    downtime_id: DowntimeId, data: PlannedDowntimeUpdate, session: SessionDep, key: AdminDep
) -> PlannedDowntimePublic:
    """Change a planned downtime entry (admin)."""
    return downtime_service.update_downtime(session, downtime_id, data, actor=key)


@downtime.delete("/{downtime_id}", **NO_CONTENT, responses=NOT_FOUND)
def delete_downtime(downtime_id: DowntimeId, session: SessionDep, key: AdminDep) -> Response:
    """Delete a planned downtime entry (admin)."""
    downtime_service.delete_downtime(session, downtime_id, actor=key)
    return _gone()


router.include_router(shifts)
router.include_router(downtime)
