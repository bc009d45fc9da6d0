"""All SQL of the OEE endpoint: the asset, its calendar, states, counts and settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]
# date_bin origin spelled in UTC so the session time zone cannot shift it.
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


def _rows(session: Session, sql: str, params: dict[str, Any]) -> list[Row]:
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def asset_with_site(session: Session, asset_id: int) -> Row | None:
    """The asset with its site's id and time zone (the root of its path)."""
    rows = _rows(
        session,
        "SELECT a.id, a.name, a.level, a.path, s.id AS site_id, s.timezone"
        " FROM assets a LEFT JOIN assets s"
        " ON s.path = split_part(a.path, '/', 1) AND s.level = 'site'"
        " WHERE a.id = :id",
        {"id": asset_id},
    )
    return rows[0] if rows else None


def line_outputs(session: Session, line_id: int) -> list[Row]:
    """Machines of a line flagged ``is_line_output``."""
    return _rows(
        session,
        "SELECT a.id, a.path FROM assets a JOIN machine_settings m ON m.asset_id = a.id"
        " WHERE a.parent_id = :id AND a.level = 'machine' AND m.is_line_output ORDER BY a.path",
        {"id": line_id},
    )


def lines_under(session: Session, path: str) -> list[Row]:
    """The lines below an asset path (a site or an area)."""
    return _rows(
        session,
        "SELECT id, path FROM assets WHERE level = 'line'"
        " AND left(path, length(:path) + 1) = :path || '/' ORDER BY path",
        {"path": path},
    )


def shifts(session: Session, site_id: int) -> list[Row]:
    """The weekly shifts of a site."""
    return _rows(
        session,
        "SELECT name, weekday, start_local, duration FROM shifts WHERE site_id = :id"
        " ORDER BY weekday, start_local",
        {"id": site_id},
    )


def shift_exceptions(session: Session, site_id: int, *, first: Any, last: Any) -> list[Row]:
    """Holidays and extra shifts of a site between two local dates (inclusive)."""
    return _rows(
        session,
        "SELECT date, kind, shift_name, start_local, duration FROM shift_exceptions"
        " WHERE site_id = :id AND date BETWEEN :first AND :last ORDER BY date",
        {"id": site_id, "first": first, "last": last},
    )


def planned_downtime(session: Session, path: str, *, start: datetime, end: datetime) -> list[Row]:
    """Planned downtime of the asset or any asset above it, overlapping [start, end)."""
    return _rows(
        session,
        "SELECT p.start_time, p.end_time, p.category FROM planned_downtime p"
        " JOIN assets a ON a.id = p.asset_id"
        " WHERE (a.path = :path OR left(:path, length(a.path) + 1) = a.path || '/')"
        " AND p.start_time < :end AND p.end_time > :start ORDER BY p.start_time",
        {"path": path, "start": start, "end": end},
    )


def state_intervals(
    session: Session, asset_id: int, *, start: datetime, end: datetime
) -> list[Row]:
    """State intervals overlapping [start, end), with whether their reason is planned."""
    # The range test matches the table's exclusion constraint, so its GiST index serves it.
    return _rows(
        session,
        "SELECT i.start_time, i.end_time, i.state, i.reason,"
        " coalesce(r.planned, false) AS planned, r.category"
        " FROM state_intervals i LEFT JOIN downtime_reasons r ON r.code = i.code"
        " WHERE i.asset_id = :id"
        " AND tstzrange(i.start_time, coalesce(i.end_time, 'infinity'::timestamptz))"
        " && tstzrange(:start, :end) ORDER BY i.start_time",
        {"id": asset_id, "start": start, "end": end},
    )


def counts_per_minute(
    session: Session, asset_id: int, *, start: datetime, end: datetime
) -> list[Row]:
    """Counts in [start, end) summed per minute and product (a minute's start, not before
    ``start``): a year of second-by-second rows arrives as at most one row a minute."""
    return _rows(
        session,
        f"SELECT greatest(date_bin('1 minute', time, {_ORIGIN}), :start) AS time, product,"
        " sum(total)::bigint AS total, sum(good)::bigint AS good, sum(reject)::bigint AS reject"
        " FROM production_counts WHERE asset_id = :id AND time >= :start AND time < :end"
        " GROUP BY 1, 2 ORDER BY 1",
        {"id": asset_id, "start": start, "end": end},
    )


def ideal_cycles(session: Session, asset_id: int, products: list[str]) -> dict[str, float]:
    """Ideal cycle time per product code: the machine's own, else the product's."""
    if not products:
        return {}
    rows = _rows(
        session,
        "SELECT p.code, coalesce(c.ideal_cycle_s, p.ideal_cycle_s) AS ideal_cycle_s"
        " FROM products p LEFT JOIN product_cycle_times c"
        " ON c.product_id = p.id AND c.asset_id = :id WHERE p.code = ANY(:codes)",
        {"id": asset_id, "codes": products},
    )
    return {r["code"]: float(r["ideal_cycle_s"]) for r in rows if r["ideal_cycle_s"] is not None}


def loss_classes(session: Session, asset_id: int) -> dict[str, str]:
    """State -> loss class: the defaults (asset NULL), overridden by the asset's own."""
    rows = _rows(
        session,
        "SELECT state, loss_class FROM state_loss_classes"
        " WHERE asset_id IS NULL OR asset_id = :id ORDER BY asset_id NULLS FIRST",
        {"id": asset_id},
    )
    return {r["state"]: r["loss_class"] for r in rows}


def micro_stop_s(session: Session, asset_id: int) -> float:
    """The machine's micro-stop threshold (0 when it has no settings)."""
    rows = _rows(
        session, "SELECT micro_stop_s FROM machine_settings WHERE asset_id = :id", {"id": asset_id}
    )
    return float(rows[0]["micro_stop_s"]) if rows else 0.0
