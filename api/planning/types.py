"""Value types the planning schemas share: ids, labels, instants, weekdays, shift lengths.

Every text is bounded and free of control characters (the pattern also refuses lone
surrogates, which PostgreSQL could not store); every instant has an offset and a year the
database and Python can both hold.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from api.calendar import MAX_SHIFT
from api.db import INT4_MAX, in_years

Id = Annotated[int, Field(ge=1, le=INT4_MAX)]
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: object) -> object:
    """A clear message for control characters and lone surrogates (the pattern holds too)."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters (tabs, newlines, NUL, …)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode text (a lone surrogate)") from None
    return value


def _text(max_length: int, pattern: str = PRINTABLE) -> Any:
    return (
        BeforeValidator(_printable),
        StringConstraints(min_length=1, max_length=max_length, pattern=pattern),
    )


Label = Annotated[str, *_text(200)]
Note = Annotated[str, *_text(2000)]
# Product codes are what gateways report with each count (the wire contract allows 256).
ProductCode = Annotated[
    str,
    *_text(256),
    Field(description="The product code gateways report with counts", examples=["SKU-1"]),
]
# Reason codes appear in URLs, so no '/'.
ReasonCode = Annotated[
    str,
    *_text(128, r"^[^\x00-\x1f\x7f/]+$"),
    Field(
        description="The machine's stop code (as its gateway reports it; no '/')", examples=["E31"]
    ),
]
StateName = Annotated[
    str,
    *_text(64),
    Field(description="A machine state as gateways report it", examples=["idle"]),
]
ShiftName = Annotated[str, *_text(64), Field(examples=["early"])]
Category = Annotated[
    str,
    *_text(64),
    Field(description="A downtime reason's category (plant-defined)", examples=["mechanical"]),
]
LossClassName = Literal["running", "unplanned_down", "planned_down"]


def _in_years(value: datetime) -> datetime:
    """In the years the database holds (api.db.in_years), as UTC."""
    return in_years(value).astimezone(UTC)


Instant = Annotated[AwareDatetime, AfterValidator(_in_years)]
# A wall-clock time in a response, as OpenAPI's partial-time ("06:00:00"): pydantic's
# default "time" format requires an offset, which local shift times do not have.
LocalTimeOut = Annotated[
    time,
    WithJsonSchema({"type": "string", "format": "partial-time", "examples": ["06:00:00"]}),
]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WeekdayName = Literal[
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "mon", "tue", "wed", "thu", "fri", "sat", "sun",
]  # fmt: skip


_WEEKDAY_FORMS = "weekday must be 0-6 (0 = Monday) or a day name such as 'monday'"


def _weekday(value: object) -> int:
    """A weekday number 0-6, from a number or a day name ('monday', 'Mon', '0')."""
    if isinstance(value, str):
        key = value.strip().lower()
        for number, name in enumerate(WEEKDAYS):
            if key in (name, name[:3]):
                return number
        value = int(key) if key.isdigit() and len(key) == 1 else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 6:
        raise ValueError(_WEEKDAY_FORMS)
    return value


Weekday = Annotated[
    int,
    BeforeValidator(
        _weekday, json_schema_input_type=Annotated[int, Field(ge=0, le=6)] | WeekdayName
    ),
    Field(description="0 = Monday … 6 = Sunday, or a day name", examples=[0]),
]

_HOURS_MINUTES = re.compile(r"^\d:\d\d")


def _wall_clock(value: object) -> object:
    """Only a text such as '06:00' or '6:00' (a number would be read as UTC seconds)."""
    if not isinstance(value, str | time):
        raise ValueError("must be a local wall-clock time such as '06:00'")
    if isinstance(value, str) and _HOURS_MINUTES.match(value):
        return "0" + value
    return value


def _no_offset(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("is a local wall-clock time in the site's zone: give it without offset")
    return value


LocalTime = Annotated[
    time,
    BeforeValidator(_wall_clock, json_schema_input_type=str),
    AfterValidator(_no_offset),
    Field(description="Local wall-clock time in the site's zone", examples=["06:00"]),
]


_TIMEDELTA = TypeAdapter(timedelta)
_DURATION_FORMS = "an ISO 8601 duration such as 'PT8H' or 'PT7H30M', or a number of hours"


def _hours(value: object) -> object:
    """A number of hours or an ISO 8601 text ('PT8H', also '08:00') as a duration."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | timedelta):
        raise ValueError(f"duration must be {_DURATION_FORMS}")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and 0 < value <= 24):
            raise ValueError("duration in hours must be > 0 and at most 24")
        return timedelta(hours=value)
    if isinstance(value, str):
        try:
            return _TIMEDELTA.validate_python(value)
        except ValidationError:
            raise ValueError(f"{value[:40]!r} is not {_DURATION_FORMS}") from None
    return value


def _shift_length(value: timedelta) -> timedelta:
    if not timedelta(0) < value <= MAX_SHIFT:
        raise ValueError("duration must be more than 0 and at most 24 hours")
    return value


ShiftDuration = Annotated[
    timedelta,
    BeforeValidator(_hours, json_schema_input_type=str | float),
    AfterValidator(_shift_length),
    Field(
        description="ISO 8601 duration ('PT8H', 'PT7H30M') or hours (8, 7.5); at most 24 h",
        examples=["PT8H"],
    ),
]
