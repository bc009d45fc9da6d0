"""What the planning services share: asset checks, PATCH bodies, audit rows, write errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import audit
from api.auth.keys import ApiKey
from api.errors import ApiError, Invalid, NotFound
from api.planning import repository as repo

T = TypeVar("T")
UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"


def asset_at(
    session: Session, asset_id: int, *, levels: tuple[str, ...], field: str, lock: bool = False
) -> dict[str, Any]:
    """The asset ``asset_id`` (404 when missing), which must be at one of ``levels`` (422)."""
    row = repo.asset(session, asset_id, lock=lock)
    if row is None:
        raise NotFound(f"there is no asset {asset_id}", field=field)
    if row["level"] not in levels:
        wanted = " or ".join(levels)
        raise Invalid(
            f"asset {asset_id} ({row['path']}) is a {row['level']}; this needs a {wanted}",
            field=field,
        )
    return row


def changes(data: BaseModel, *, nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a PATCH body sets; a null in a field that cannot be null is a 422."""
    values = {name: getattr(data, name) for name in data.model_fields_set}
    for name, value in values.items():
        if value is None and name not in nullable:
            raise Invalid(f"{name} cannot be null", field=name)
    return values


def record(
    session: Session,
    *,
    actor: ApiKey,
    action: str,
    entity: str,
    entity_id: object,
    before: BaseModel | None = None,
    after: BaseModel | None = None,
) -> None:
    """An audit row for a change, with the public shapes before and after (as JSON)."""
    audit.record(
        session,
        actor=actor,
        action=action,
        entity=entity,
        entity_id=entity_id,
        before=None if before is None else before.model_dump(mode="json"),
        after=None if after is None else after.model_dump(mode="json"),
    )


def write(
    session: Session,
    run: Callable[[], T],
    *,
    unique: ApiError | None = None,
    foreign_key: ApiError | None = None,
) -> T:
    """Run a write; a unique or foreign-key violation raises the error given for it."""
    try:
        return run()
    except IntegrityError as err:
        session.rollback()
        state = getattr(err.orig, "sqlstate", None)
        if state == UNIQUE_VIOLATION and unique is not None:
            raise unique from None
        if state == FOREIGN_KEY_VIOLATION and foreign_key is not None:
            raise foreign_key from None
        raise
