"""All SQL of the downtime domain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]

# First key of the two-int advisory lock ("LPSR": linepulse stop reasons): one writer of an
# asset's reasons at a time, without locking the assets row that ingest references.
LOCK_NAMESPACE = 0x4C505352

# An asset and everything under it.
_SCOPE = """
SELECT id, path FROM assets
WHERE id = :asset OR left(path, length(:path) + 1) = :path || '/'
"""

# State intervals of the scope overlapping [start, end), whole (not clipped), with what the
# reason tree says of the machine's code. The range test matches the table's exclusion
# constraint, so its GiST index serves it.
_INTERVALS = f"""
WITH scope AS ({_SCOPE})
SELECT s.asset_id, a.path, s.start_time, s.end_time, s.state, s.reason, s.code,
       r.category, coalesce(r.planned, false) AS planned
FROM state_intervals s JOIN scope a ON a.id = s.asset_id
LEFT JOIN downtime_reasons r ON r.code = s.code
WHERE tstzrange(s.start_time, coalesce(s.end_time, 'infinity'::timestamptz))
      && tstzrange(:start, :end)
ORDER BY s.asset_id, s.start_time
"""

_REASON_COLUMNS = """
sr.id, sr.asset_id, a.path, sr.start_time, sr.end_time, sr.code, r.reason, r.category,
r.planned, sr.note, sr.created_by, k.name AS created_by_name, sr.created_at
"""

# Operators' reasons of the scope overlapping [start, end), with their reason and author.
_ASSIGNMENTS = f"""
WITH scope AS ({_SCOPE})
SELECT {_REASON_COLUMNS}
FROM stop_reasons sr JOIN scope a ON a.id = sr.asset_id
JOIN downtime_reasons r ON r.code = sr.code
LEFT JOIN api_keys k ON k.id = sr.created_by
WHERE tstzrange(sr.start_time, sr.end_time) && tstzrange(:start, :end)
ORDER BY sr.asset_id, sr.start_time
LIMIT :limit
"""


def _rows(session: Session, sql: str, params: Row) -> list[Row]:
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def asset(session: Session, asset_id: int) -> Row | None:
    """One asset by id: id, path, level."""
    rows = _rows(session, "SELECT id, path, level FROM assets WHERE id = :id", {"id": asset_id})
    return rows[0] if rows else None


def intervals(session: Session, *, scope: Row, start: datetime, end: datetime) -> list[Row]:
    """State intervals under ``scope`` overlapping [start, end), by asset and start."""
    params = {"asset": scope["id"], "path": scope["path"], "start": start, "end": end}
    return _rows(session, _INTERVALS, params)


def assignments(
    session: Session,
    *,
    scope: Row,
    start: datetime,
    end: datetime | None,
    limit: int | None = None,
) -> list[Row]:
    """Operators' reasons under ``scope`` overlapping [start, end) (end None: no end)."""
    params = {
        "asset": scope["id"], "path": scope["path"], "start": start, "end": end, "limit": limit,
    }  # fmt: skip
    return _rows(session, _ASSIGNMENTS, params)


def loss_class_rows(session: Session, asset_ids: Sequence[int]) -> list[Row]:
    """``state_loss_classes`` rows: the global ones (asset_id NULL) and those of the assets."""
    return _rows(
        session,
        "SELECT asset_id, state, loss_class FROM state_loss_classes"
        " WHERE asset_id IS NULL OR asset_id = ANY(:ids)",
        {"ids": list(asset_ids)},
    )


def machine_settings(session: Session, asset_ids: Sequence[int]) -> dict[int, Row]:
    """Micro-stop threshold and line-output flag of the assets that have settings."""
    rows = _rows(
        session,
        "SELECT asset_id, micro_stop_s, is_line_output FROM machine_settings"
        " WHERE asset_id = ANY(:ids)",
        {"ids": list(asset_ids)},
    )
    return {int(r["asset_id"]): r for r in rows}


def interval_at(session: Session, asset_id: int, t: datetime) -> Row | None:
    """The asset's state interval holding the instant ``t`` (the last begun at or before it)."""
    rows = _rows(
        session,
        "SELECT start_time, end_time, state FROM state_intervals WHERE asset_id = :id"
        " AND start_time <= :t AND coalesce(end_time, 'infinity'::timestamptz) > :t"
        " ORDER BY start_time DESC LIMIT 1",
        {"id": asset_id, "t": t},
    )
    return rows[0] if rows else None


def line_machines(session: Session, line_id: int) -> list[Row]:
    """The machines of a line (its direct children of level machine), by path."""
    return _rows(
        session,
        "SELECT id, path FROM assets WHERE parent_id = :id AND level = 'machine' ORDER BY path",
        {"id": line_id},
    )


# --- operators' reasons: writes --------------------------------------------------------


def lock_asset_reasons(session: Session, asset_id: int) -> None:
    """Serialise writers of one asset's reasons until the transaction ends."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": LOCK_NAMESPACE, "id": asset_id}
    )


def reason_code(session: Session, code: str) -> Row | None:
    """One entry of the reason tree."""
    rows = _rows(
        session,
        "SELECT code, reason, category, planned FROM downtime_reasons WHERE code = :code",
        {"code": code},
    )
    return rows[0] if rows else None


def overlapping_reasons(
    session: Session, asset_id: int, *, start: datetime, end: datetime
) -> list[Row]:
    """The asset's stored reasons overlapping [start, end), locked, oldest first."""
    return _rows(
        session,
        "SELECT id, asset_id, start_time, end_time, code, note, created_by, created_at"
        " FROM stop_reasons WHERE asset_id = :id"
        " AND tstzrange(start_time, end_time) && tstzrange(:start, :end)"
        " ORDER BY start_time FOR UPDATE",
        {"id": asset_id, "start": start, "end": end},
    )


def insert_reason(session: Session, values: Row) -> int:
    """Store an operator's reason; returns its id."""
    row = session.execute(
        text(
            "INSERT INTO stop_reasons (asset_id, start_time, end_time, code, note, created_by"
            ", created_at) VALUES (:asset_id, :start_time, :end_time, :code, :note, :created_by"
            ", coalesce(CAST(:created_at AS timestamptz), now())) RETURNING id"
        ),
        {"created_at": None, **values},
    )
    return int(row.scalar_one())


def set_reason_range(session: Session, reason_id: int, *, start: datetime, end: datetime) -> None:
    """Move a stored reason's range (what is left of it after a newer one took a part)."""
    session.execute(
        text("UPDATE stop_reasons SET start_time = :s, end_time = :e WHERE id = :id"),
        {"id": reason_id, "s": start, "e": end},
    )


def delete_reason(session: Session, reason_id: int) -> None:
    """Delete a stored reason."""
    session.execute(text("DELETE FROM stop_reasons WHERE id = :id"), {"id": reason_id})


def get_reason(session: Session, reason_id: int, *, lock: bool = False) -> Row | None:
    """One stored reason with its reason text and author (``lock``: FOR UPDATE OF it)."""
    rows = _rows(
        session,
        f"SELECT {_REASON_COLUMNS} FROM stop_reasons sr JOIN assets a ON a.id = sr.asset_id"
        " JOIN downtime_reasons r ON r.code = sr.code"
        " LEFT JOIN api_keys k ON k.id = sr.created_by WHERE sr.id = :id"
        + (" FOR UPDATE OF sr" if lock else ""),
        {"id": reason_id},
    )
    return rows[0] if rows else None
