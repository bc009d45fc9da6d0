"""Rows the API tests insert directly."""

from __future__ import annotations

import uuid
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


def unique_name(stem: str) -> str:
    """``stem`` with a random suffix (tests share one database per module)."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def ok(response: Any, code: int = 200) -> Any:
    """The response's JSON (None when empty) after checking its status."""
    assert response.status_code == code, response.text
    return response.json() if response.content else None


def error_of(response: Any, code: int, field: str | None = None) -> dict[str, Any]:
    """The response's ``error`` object after checking its status (and field)."""
    assert response.status_code == code, response.text
    error: dict[str, Any] = response.json()["error"]
    if field is not None:
        assert error["field"] == field, error
    return error
