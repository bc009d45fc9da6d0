"""All SQL of shift calendars (shifts, exceptions) and planned downtime."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from api.planning.repository import Row, first, rows

_FOR_UPDATE = " FOR UPDATE"

# --- shifts ----------------------------------------------------------------------------

_SHIFT = "id, site_id, name, weekday, start_local, duration"


def shifts(session: Session, site_id: int) -> list[Row]:
    """A site's weekly shifts by weekday and start."""
    return rows(
        session,
        f"SELECT {_SHIFT} FROM shifts WHERE site_id = :s ORDER BY weekday, start_local, name",
        {"s": site_id},
    )


def get_shift(session: Session, shift_id: int, *, lock: bool = False) -> Row | None:
    """One shift."""
    return first(
        session,
        f"SELECT {_SHIFT} FROM shifts WHERE id = :id" + (_FOR_UPDATE if lock else ""),
        {"id": shift_id},
    )


def same_shift(session: Session, *, site_id: int, name: str, weekday: int, other: int) -> bool:
    """Whether the site has a shift of that name on that weekday (other than id ``other``)."""
    found = first(
        session,
        "SELECT 1 AS x FROM shifts WHERE site_id = :s AND name = :n AND weekday = :w"
        " AND id <> :other",
        {"s": site_id, "n": name, "w": weekday, "other": other},
    )
    return found is not None


def insert_shift(session: Session, values: Row) -> Row:
    """Insert a shift; returns it."""
    return rows(
        session,
        "INSERT INTO shifts (site_id, name, weekday, start_local, duration)"
        f" VALUES (:site_id, :name, :weekday, :start_local, :duration) RETURNING {_SHIFT}",
        values,
    )[0]


def update_shift(session: Session, shift_id: int, values: Row) -> Row:
    """Set the given columns of a shift (names from the schema); returns it."""
    sets = ", ".join(f"{column} = :{column}" for column in values)
    return rows(
        session,
        f"UPDATE shifts SET {sets} WHERE id = :id RETURNING {_SHIFT}",
        {**values, "id": shift_id},
    )[0]


def delete_shift(session: Session, shift_id: int) -> None:
    """Delete a shift."""
    session.execute(text("DELETE FROM shifts WHERE id = :id"), {"id": shift_id})


# --- shift exceptions ------------------------------------------------------------------

_EXCEPTION = "id, site_id, date, kind, shift_name, start_local, duration, note"


def exceptions(session: Session, site_id: int, *, since: date, until: date) -> list[Row]:
    """A site's holidays and extra shifts between two local dates (inclusive), by date."""
    return rows(
        session,
        f"SELECT {_EXCEPTION} FROM shift_exceptions"
        " WHERE site_id = :s AND date BETWEEN :since AND :until ORDER BY date, kind, id",
        {"s": site_id, "since": since, "until": until},
    )


def get_exception(session: Session, exception_id: int, *, lock: bool = False) -> Row | None:
    """One exception."""
    return first(
        session,
        f"SELECT {_EXCEPTION} FROM shift_exceptions WHERE id = :id" + (_FOR_UPDATE if lock else ""),
        {"id": exception_id},
    )


def same_holiday(session: Session, *, site_id: int, day: date, shift_name: str | None) -> bool:
    """Whether that holiday (the whole day, or that one shift) is recorded already."""
    found = first(
        session,
        "SELECT 1 AS x FROM shift_exceptions WHERE site_id = :s AND date = :d"
        " AND kind = 'holiday' AND shift_name IS NOT DISTINCT FROM CAST(:n AS text)",
        {"s": site_id, "d": day, "n": shift_name},
    )
    return found is not None


def insert_exception(session: Session, values: Row) -> Row:
    """Insert an exception; returns it."""
    return rows(
        session,
        "INSERT INTO shift_exceptions (site_id, date, kind, shift_name, start_local, duration,"
        " note) VALUES (:site_id, :date, :kind, :shift_name, :start_local, :duration, :note)"
        f" RETURNING {_EXCEPTION}",
        values,
    )[0]


def delete_exception(session: Session, exception_id: int) -> None:
    """Delete an exception."""
    session.execute(text("DELETE FROM shift_exceptions WHERE id = :id"), {"id": exception_id})


# --- planned downtime ------------------------------------------------------------------

_DOWNTIME = (
    "SELECT p.id, p.asset_id, a.path AS asset_path, p.category, p.start_time AS start,"
    ' p.end_time AS "end", p.note FROM planned_downtime p JOIN assets a ON a.id = p.asset_id'
)


def planned_downtime(
    session: Session, path: str, *, start: datetime, end: datetime, category: str | None, limit: int
) -> list[Row]:
    """Entries of the asset at ``path`` or any asset above it overlapping [start, end)."""
    # The same rule as api.oee.repository.planned_downtime: an ancestor's path is a prefix.
    return rows(
        session,
        f"{_DOWNTIME} WHERE (a.path = :path OR left(:path, length(a.path) + 1) = a.path || '/')"
        " AND p.start_time < :end AND p.end_time > :start"
        " AND (CAST(:category AS text) IS NULL OR p.category = :category)"
        " ORDER BY p.start_time, p.id LIMIT :limit",
        {"path": path, "start": start, "end": end, "category": category, "limit": limit},
    )


def get_downtime(session: Session, downtime_id: int, *, lock: bool = False) -> Row | None:
    """One planned downtime entry with its asset's path."""
    return first(
        session,
        f"{_DOWNTIME} WHERE p.id = :id" + (" FOR UPDATE OF p" if lock else ""),
        {"id": downtime_id},
    )


def insert_downtime(session: Session, values: Row) -> int:
    """Insert an entry; returns its id."""
    found = first(
        session,
        "INSERT INTO planned_downtime (asset_id, category, start_time, end_time, note)"
        " VALUES (:asset_id, :category, :start, :end, :note) RETURNING id",
        values,
    )
    assert found is not None  # INSERT … RETURNING gives its row
    return int(found["id"])


def update_downtime(session: Session, downtime_id: int, values: Row) -> None:
    """Set an entry's asset, category, start, end and note."""
    session.execute(
        text(
            "UPDATE planned_downtime SET asset_id = :asset_id, category = :category,"
            " start_time = :start, end_time = :end, note = :note WHERE id = :id"
        ),
        {**values, "id": downtime_id},
    )


def delete_downtime(session: Session, downtime_id: int) -> None:
    """Delete an entry."""
    session.execute(text("DELETE FROM planned_downtime WHERE id = :id"), {"id": downtime_id})
