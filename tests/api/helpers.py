"""Rows the API tests insert directly."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session


def insert_asset(
    session: Session, *, name: str, level: str, parent: dict[str, Any] | None
) -> dict[str, Any]:
    """Insert one asset under ``parent`` (None: a root); returns its id and path."""
    path = name if parent is None else f"{parent['path']}/{name}"
    row = session.execute(
        text(
            "INSERT INTO assets (name, level, parent_id, path) VALUES (:n, :l, :p, :path)"
            " RETURNING id, path"
        ),
        {"n": name, "l": level, "p": parent["id"] if parent else None, "path": path},
    )
    return dict(row.mappings().one())
