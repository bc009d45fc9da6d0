"""The audit log: every change made through the API, with the key that made it."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from api.auth.keys import ApiKey


def record(
    session: Session,
    *,
    actor: ApiKey,
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add an audit row in the caller's transaction (committed with the change it records)."""
    session.execute(
        text(
            "INSERT INTO audit_log (actor_key, action, entity, entity_id, before, after)"
            " VALUES (:actor, :action, :entity, :entity_id, CAST(:before AS jsonb),"
            " CAST(:after AS jsonb))"
        ),
        {
            "actor": actor.id,
            "action": action,
            "entity": entity,
            "entity_id": None if entity_id is None else str(entity_id),
            "before": _json(before),
            "after": _json(after),
        },
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)
