"""Shift calendars of sites: weekly shifts, holidays and extra shifts, and the calendar
they resolve to (api.calendar does the expanding: the site's zone, DST, exceptions).

A shift belongs to a site (level 'site'); its times are wall-clock in the site's zone
(set with PATCH /assets/{id} timezone; a site without one is computed in UTC and flagged,
as the OEE endpoint does). Two weekly shifts of a site may not share a name and weekday:
holidays cancel shifts by name, so the pair names one shift.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from api.auth.keys import ApiKey
from api.calendar import (
    CalendarError,
    Shift,
    ShiftException,
    ShiftWindow,
    merge_windows,
    shift_windows,
)
from api.errors import Conflict, Invalid, NotFound
from api.planning import calendar_repository as repo
from api.planning.calendar_schemas import (
    CalendarPublic,
    CalendarWindow,
    ExceptionCreate,
    ExceptionPublic,
    ShiftCreate,
    ShiftPublic,
    ShiftUpdate,
)
from api.planning.common import asset_at, changes, record
from api.planning.types import WEEKDAYS

WindowKind = Literal["weekly", "extra"]
MAX_CALENDAR_DAYS = 400
SITE = ("site",)
# Windows last at most 24 wall-clock hours, 25 real ones over a DST fall-back night:
# computing two days either side of the range finds every window that overlaps it, whole.
_MARGIN = timedelta(days=2)


# --- shifts ----------------------------------------------------------------------------


def list_shifts(session: Session, site_id: int) -> list[ShiftPublic]:
    """A site's weekly shifts by weekday and start."""
    asset_at(session, site_id, levels=SITE, field="site_id")
    return [_shift(row) for row in repo.shifts(session, site_id)]


def get_shift(session: Session, shift_id: int) -> ShiftPublic:
    """One shift."""
    return _shift(_existing_shift(session, shift_id))


def create_shift(
    session: Session, site_id: int, data: ShiftCreate, *, actor: ApiKey
) -> ShiftPublic:
    """Add a weekly shift to a site (409 when it has one of that name that day); audited."""
    asset_at(session, site_id, levels=SITE, field="site_id", lock=True)
    _check_unique(session, site_id=site_id, name=data.name, weekday=data.weekday, shift_id=0)
    after = _shift(repo.insert_shift(session, {"site_id": site_id, **data.model_dump()}))
    record(session, actor=actor, action="create", entity="shift", entity_id=after.id,
           after=after)  # fmt: skip
    session.commit()
    return after


def update_shift(
    session: Session, shift_id: int, data: ShiftUpdate, *, actor: ApiKey
) -> ShiftPublic:
    """Change a shift's name, weekday, start or duration; audited."""
    row = _existing_shift(session, shift_id, lock=True)
    before = _shift(row)
    values = changes(data)
    if not values:
        return before
    merged = {**row, **values}
    _check_unique(session, site_id=row["site_id"], name=merged["name"],
                  weekday=merged["weekday"], shift_id=shift_id)  # fmt: skip
    after = _shift(repo.update_shift(session, shift_id, values))
    record(session, actor=actor, action="update", entity="shift", entity_id=shift_id,
           before=before, after=after)  # fmt: skip
    session.commit()
    return after


def delete_shift(session: Session, shift_id: int, *, actor: ApiKey) -> None:
    """Delete a shift; audited."""
    before = _shift(_existing_shift(session, shift_id, lock=True))
    repo.delete_shift(session, shift_id)
    record(session, actor=actor, action="delete", entity="shift", entity_id=shift_id,
           before=before)  # fmt: skip
    session.commit()


def _existing_shift(session: Session, shift_id: int, *, lock: bool = False) -> dict[str, Any]:
    row = repo.get_shift(session, shift_id, lock=lock)
    if row is None:
        raise NotFound(f"there is no shift {shift_id}", field="shift_id")
    return row


def _check_unique(
    session: Session, *, site_id: int, name: str, weekday: int, shift_id: int
) -> None:
    if repo.same_shift(session, site_id=site_id, name=name, weekday=weekday, other=shift_id):
        raise Conflict(
            f"site {site_id} has a shift {name!r} on {WEEKDAYS[weekday].title()}s already",
            field="name",
        )


def _shift(row: dict[str, Any]) -> ShiftPublic:
    start, duration = row["start_local"], row["duration"]
    end = (datetime.combine(date(2000, 1, 1), start) + duration).time()
    return ShiftPublic(
        **row,
        weekday_name=WEEKDAYS[row["weekday"]],
        duration_h=duration / timedelta(hours=1),
        end_local=end,
    )


# --- exceptions ------------------------------------------------------------------------


def list_exceptions(
    session: Session, site_id: int, *, since: date | None, until: date | None
) -> list[ExceptionPublic]:
    """A site's holidays and extra shifts, by date, optionally between two dates."""
    asset_at(session, site_id, levels=SITE, field="site_id")
    first, last = since or date(1, 1, 1), until or date(9999, 12, 31)
    return [
        ExceptionPublic(**r) for r in repo.exceptions(session, site_id, since=first, until=last)
    ]


def create_exception(
    session: Session, site_id: int, data: ExceptionCreate, *, actor: ApiKey
) -> ExceptionPublic:
    """Add a holiday or an extra shift on one local date of a site; audited."""
    asset_at(session, site_id, levels=SITE, field="site_id", lock=True)
    if data.kind == "holiday":
        _check_holiday(session, site_id=site_id, data=data)
    else:
        _check_extra(data)
    row = repo.insert_exception(session, {"site_id": site_id, **data.model_dump()})
    after = ExceptionPublic(**row)
    record(session, actor=actor, action="create", entity="shift_exception", entity_id=after.id,
           after=after)  # fmt: skip
    session.commit()
    return after


def delete_exception(session: Session, exception_id: int, *, actor: ApiKey) -> None:
    """Delete a holiday or extra shift; audited."""
    row = repo.get_exception(session, exception_id, lock=True)
    if row is None:
        raise NotFound(f"there is no shift exception {exception_id}", field="exception_id")
    repo.delete_exception(session, exception_id)
    record(session, actor=actor, action="delete", entity="shift_exception",
           entity_id=exception_id, before=ExceptionPublic(**row))  # fmt: skip
    session.commit()


def _check_holiday(session: Session, *, site_id: int, data: ExceptionCreate) -> None:
    for field in ("start_local", "duration"):
        if getattr(data, field) is not None:
            raise Invalid(f"a holiday has no {field} (only an extra shift has)", field=field)
    name, weekday = data.shift_name, data.date.weekday()
    if name is not None and not any(
        s["name"] == name and s["weekday"] == weekday for s in repo.shifts(session, site_id)
    ):
        raise Invalid(
            f"site {site_id} has no shift {name!r} on {WEEKDAYS[weekday].title()}s"
            f" ({data.date}) for a holiday to cancel; null cancels every shift that day",
            field="shift_name",
        )
    if repo.same_holiday(session, site_id=site_id, day=data.date, shift_name=name):
        what = "every shift" if name is None else f"shift {name!r}"
        raise Conflict(f"{data.date} is a holiday for {what} already", field="date")


def _check_extra(data: ExceptionCreate) -> None:
    for field in ("start_local", "duration"):
        if getattr(data, field) is None:
            raise Invalid(f"an extra shift needs {field}", field=field)


# --- the resolved calendar -------------------------------------------------------------


def calendar(session: Session, site_id: int, *, start: datetime, end: datetime) -> CalendarPublic:
    """The site's shift windows overlapping [start, end), with those holidays cancelled."""
    if end <= start:
        raise Invalid("end must be after start", field="end")
    if end - start > timedelta(days=MAX_CALENDAR_DAYS):
        raise Invalid(f"the calendar covers at most {MAX_CALENDAR_DAYS} days at once", field="end")
    site = asset_at(session, site_id, levels=SITE, field="site_id")
    tz, zone, flags = _zone(site["timezone"])
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    shifts = [
        Shift(r["name"], r["weekday"], r["start_local"], r["duration"])
        for r in repo.shifts(session, site_id)
    ]
    if not shifts:
        flags.append("no_shift_calendar")
    lo, hi = start - _MARGIN, end + _MARGIN
    windows, cancelled = _expand(session, site_id=site_id, shifts=shifts, tz=tz, lo=lo, hi=hi)
    inside = [(w, kind) for w, kind in windows if _overlaps(w, start=start, end=end)]
    clipped = [ShiftWindow(w.name, max(w.start, start), min(w.end, end)) for w, _ in inside]
    return CalendarPublic(
        site_id=site_id,
        timezone=zone,
        start=start,
        end=end,
        windows=[_window(w, kind=kind, tz=tz) for w, kind in inside],
        cancelled=[
            _window(w, kind="weekly", tz=tz)
            for w in cancelled
            if _overlaps(w, start=start, end=end)
        ],
        scheduled_s=sum((b - a).total_seconds() for a, b in merge_windows(clipped)),
        flags=flags,
    )


def _expand(
    session: Session, *, site_id: int, shifts: list[Shift], tz: ZoneInfo, lo: datetime, hi: datetime
) -> tuple[list[tuple[ShiftWindow, WindowKind]], list[ShiftWindow]]:
    """Whole windows in [lo, hi): weekly and extra ones by start, and those holidays removed."""
    rows = repo.exceptions(
        session, site_id, since=lo.astimezone(tz).date() - timedelta(days=1),
        until=hi.astimezone(tz).date(),
    )  # fmt: skip
    exceptions = [
        ShiftException(r["date"], r["kind"], r["shift_name"], r["start_local"], r["duration"])
        for r in rows
    ]
    holidays = [e for e in exceptions if e.kind == "holiday"]
    try:
        plain = shift_windows(shifts, tz=tz, start=lo, end=hi)
        weekly = shift_windows(shifts, tz=tz, start=lo, end=hi, exceptions=holidays)
        extra = shift_windows([], tz=tz, start=lo, end=hi, exceptions=exceptions)
    except CalendarError as err:
        raise Invalid(f"the stored calendar cannot be expanded: {err}", field="site_id") from None
    windows: list[tuple[ShiftWindow, WindowKind]] = [(w, "weekly") for w in weekly]
    windows += [(w, "extra") for w in extra]
    windows.sort(key=lambda pair: (pair[0].start, pair[0].end, pair[0].name))
    kept = set(weekly)
    return windows, [w for w in plain if w not in kept]


def _zone(name: str | None) -> tuple[ZoneInfo, str, list[str]]:
    if not name:
        return ZoneInfo("UTC"), "UTC", ["site_timezone_missing"]
    try:
        return ZoneInfo(name), name, []
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"the site's time zone {name!r} is not known", field="site_id") from None


def _overlaps(window: ShiftWindow, *, start: datetime, end: datetime) -> bool:
    return window.start < end and window.end > start


def _window(window: ShiftWindow, *, kind: WindowKind, tz: ZoneInfo) -> CalendarWindow:
    local_start = window.start.astimezone(tz)
    return CalendarWindow(
        name=window.name,
        kind=kind,
        date=local_start.date(),
        weekday=local_start.weekday(),
        start=window.start,
        end=window.end,
        start_local=local_start,
        end_local=window.end.astimezone(tz),
        duration_s=(window.end - window.start).total_seconds(),
    )
