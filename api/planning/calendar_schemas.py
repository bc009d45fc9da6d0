"""Shift calendars (weekly shifts, holidays and extra shifts, the resolved windows) and
planned downtime."""

from __future__ import annotations

import datetime as dt
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.planning.types import (
    Id,
    Instant,
    LocalTime,
    LocalTimeOut,
    Note,
    ShiftDuration,
    ShiftName,
    Weekday,
)

# What planned downtime is for; each takes its time out of planned production time.
PlannedCategory = Literal[
    "break",  # meals, rest breaks
    "planned_maintenance",  # scheduled maintenance, inspections
    "no_orders",  # nothing to make (idle capacity by plan)
    "changeover",  # a scheduled product change (its target time)
    "cleaning",  # scheduled cleaning, CIP
    "meeting",  # shift handover, team meetings
    "training",
    "other",
]
ExceptionKind = Literal["holiday", "extra"]
# A calendar day of the Python / PostgreSQL range that windows can be computed for.


def _day(value: dt.date) -> dt.date:
    if not 1970 <= value.year <= 9000:
        raise ValueError("must lie between the years 1970 and 9000")
    return value


Day = Annotated[dt.date, AfterValidator(_day), Field(examples=["2026-12-25"])]


# --- shifts ----------------------------------------------------------------------------


class ShiftBase(BaseModel):
    """What every shift shape shares."""

    name: ShiftName
    weekday: Weekday
    start_local: LocalTime
    duration: ShiftDuration


class ShiftCreate(ShiftBase):
    """A weekly shift of a site: it starts on ``weekday`` at ``start_local`` (site time)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "early", "weekday": "monday", "start_local": "06:00", "duration": "PT8H"},
                {"name": "night", "weekday": 4, "start_local": "22:00", "duration": 8},
            ]
        },
    )


class ShiftUpdate(BaseModel):
    """Fields to change (none may be null)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"start_local": "05:30"}]}
    )

    name: ShiftName | None = None
    weekday: Weekday | None = None
    start_local: LocalTime | None = None
    duration: ShiftDuration | None = None


class ShiftPublic(BaseModel):
    """A weekly shift; its local end is wall-clock (a DST night shift is 7 or 9 hours)."""

    id: int
    site_id: int
    name: str
    weekday: int = Field(description="0 = Monday")
    weekday_name: str
    start_local: LocalTimeOut
    duration: timedelta = Field(description="ISO 8601, e.g. PT8H")
    duration_h: float
    end_local: LocalTimeOut = Field(description="Local wall-clock end (may be the next day)")


# --- shift exceptions ------------------------------------------------------------------


class ExceptionCreate(BaseModel):
    """A holiday (no shift, or no ``shift_name`` shift, starts that day) or an extra shift."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"date": "2026-12-25", "kind": "holiday", "note": "Christmas"},
                {"date": "2026-05-04", "kind": "holiday", "shift_name": "night"},
                {
                    "date": "2026-05-09",
                    "kind": "extra",
                    "shift_name": "saturday-early",
                    "start_local": "06:00",
                    "duration": "PT6H",
                },
            ]
        },
    )

    date: Day
    kind: ExceptionKind
    shift_name: ShiftName | None = Field(
        default=None,
        description="holiday: the one shift it cancels (null: every shift that day);"
        " extra: its name (default 'extra')",
    )
    start_local: LocalTime | None = Field(default=None, description="extra only")
    duration: ShiftDuration | None = Field(default=None, description="extra only")
    note: Note | None = None


class ExceptionPublic(BaseModel):
    """A holiday or an extra shift of a site on one local date."""

    id: int
    site_id: int
    date: dt.date
    kind: ExceptionKind
    shift_name: str | None
    start_local: LocalTimeOut | None
    duration: timedelta | None
    note: str | None


# --- the resolved calendar ------------------------------------------------------------


class CalendarWindow(BaseModel):
    """One occurrence of a shift, whole (it may reach outside the range asked for)."""

    name: str
    kind: Literal["weekly", "extra"]
    date: dt.date = Field(description="The local date it starts on")
    weekday: int
    start: datetime = Field(description="UTC")
    end: datetime = Field(description="UTC")
    start_local: datetime = Field(description="In the site's zone, with its offset")
    end_local: datetime = Field(description="In the site's zone, with its offset")
    duration_s: float = Field(description="Real length (a DST night: an hour more or less)")


class CalendarPublic(BaseModel):
    """A site's shifts resolved over [start, end): windows, and those holidays cancelled."""

    site_id: int
    timezone: str = Field(description="The site's zone ('UTC' when it has none: flagged)")
    start: datetime
    end: datetime
    windows: list[CalendarWindow]
    cancelled: list[CalendarWindow] = Field(description="Weekly windows a holiday removed")
    scheduled_s: float = Field(description="Time inside [start, end) in a shift (overlaps once)")
    flags: list[str] = Field(description="site_timezone_missing, no_shift_calendar")


# --- planned downtime -----------------------------------------------------------------


class PlannedDowntimeBase(BaseModel):
    """What every planned downtime shape shares."""

    note: Note | None = Field(default=None, examples=["Lunch"])


class PlannedDowntimeCreate(PlannedDowntimeBase):
    """Time of an asset (and every machine under it) taken out of planned production."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "asset_id": 7,
                    "category": "break",
                    "start": "2026-03-02T09:00:00+01:00",
                    "end": "2026-03-02T09:30:00+01:00",
                    "note": "Lunch",
                }
            ]
        },
    )

    asset_id: Id
    category: PlannedCategory
    start: Instant
    end: Instant


class PlannedDowntimeUpdate(PlannedDowntimeBase):
    """Fields to change (``note`` may be null; the others not)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"end": "2026-03-02T09:45:00+01:00"}]},
    )

    asset_id: Id | None = None
    category: PlannedCategory | None = None
    start: Instant | None = None
    end: Instant | None = None


class PlannedDowntimePublic(PlannedDowntimeBase):
    """One planned downtime entry."""

    id: int
    asset_id: int
    asset_path: str
    category: PlannedCategory
    start: datetime
    end: datetime


class PlannedDowntimeEntry(PlannedDowntimePublic):
    """An entry as it applies to the asset asked for."""

    inherited: bool = Field(description="It belongs to an asset above (it applies here too)")


class PlannedDowntimeList(BaseModel):
    """Planned downtime applying to an asset in [start, end) (its own and its ancestors')."""

    asset_id: int
    start: datetime
    end: datetime
    entries: list[PlannedDowntimeEntry]
    truncated: bool = Field(description="More matched than the limit; the first are shown")
