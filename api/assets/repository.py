"""All SQL of the assets domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Row = dict[str, Any]
_COLUMNS = "id, name, level, parent_id, path, display_name, timezone, created_at"

# The latest sample of each tag: one index probe on (tag_id, time DESC) per tag and table,
# the newer of the numeric and the text sample wins.
_TAGS = """
SELECT t.id, t.name, t.datatype, t.unit, t.agent, t.first_seen,
       n.time AS n_time, n.value AS n_value, n.quality AS n_quality,
       x.time AS x_time, x.value AS x_value, x.quality AS x_quality
FROM tags t
LEFT JOIN LATERAL (
    SELECT s.time, s.value, s.quality FROM samples s
    WHERE s.tag_id = t.id ORDER BY s.time DESC LIMIT 1
) n ON true
LEFT JOIN LATERAL (
    SELECT s.time, s.value, s.quality FROM samples_text s
    WHERE s.tag_id = t.id ORDER BY s.time DESC LIMIT 1
) x ON true
WHERE t.asset_id = :asset_id
ORDER BY t.name
"""


def _rows(session: Session, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
    return [dict(r) for r in session.execute(text(sql), params or {}).mappings()]


def list_assets(session: Session, *, level: str | None, parent_id: int | None) -> list[Row]:
    """Assets, optionally of one level and/or under one parent, by path."""
    return _rows(
        session,
        f"SELECT {_COLUMNS} FROM assets WHERE (CAST(:level AS text) IS NULL OR level = :level)"
        " AND (CAST(:parent AS integer) IS NULL OR parent_id = :parent) ORDER BY path",
        {"level": level, "parent": parent_id},
    )


def get(session: Session, asset_id: int, *, lock: bool = False) -> Row | None:
    """One asset by id (``lock``: FOR UPDATE, for a change)."""
    rows = _rows(
        session,
        f"SELECT {_COLUMNS} FROM assets WHERE id = :id" + (" FOR UPDATE" if lock else ""),
        {"id": asset_id},
    )
    return rows[0] if rows else None


def children(session: Session, asset_id: int) -> list[Row]:
    """The direct children of an asset."""
    return _rows(
        session,
        f"SELECT {_COLUMNS} FROM assets WHERE parent_id = :id ORDER BY path",
        {"id": asset_id},
    )


def insert(session: Session, values: Row) -> Row:
    """Insert an asset; returns it."""
    return _rows(
        session,
        "INSERT INTO assets (name, level, parent_id, path, display_name, timezone)"
        " VALUES (:name, :level, :parent_id, :path, :display_name, :timezone)"
        f" RETURNING {_COLUMNS}",
        values,
    )[0]


def update(session: Session, asset_id: int, values: Row) -> Row:
    """Set the given columns of an asset; returns it."""
    sets = ", ".join(f"{column} = :{column}" for column in values)
    return _rows(
        session,
        f"UPDATE assets SET {sets} WHERE id = :id RETURNING {_COLUMNS}",
        {**values, "id": asset_id},
    )[0]


def repath_descendants(session: Session, *, old: str, new: str) -> int:
    """Rewrite the path prefix of everything under ``old``; returns how many moved."""
    # left() rather than LIKE: '_' in a name would be a LIKE wildcard.
    result = session.execute(
        text(
            "UPDATE assets SET path = :new || substr(path, length(:old) + 1)"
            " WHERE left(path, length(:old) + 1) = :old || '/'"
        ),
        {"old": old, "new": new},
    )
    return int(getattr(result, "rowcount", 0))


def delete(session: Session, asset_id: int) -> None:
    """Delete an asset (the database cascades to its children, tags and events)."""
    session.execute(text("DELETE FROM assets WHERE id = :id"), {"id": asset_id})


def tags_with_last(session: Session, asset_id: int) -> list[Row]:
    """The tags of an asset with their latest numeric and text samples."""
    return _rows(session, _TAGS, {"asset_id": asset_id})
