"""The rules of the asset tree: parents by level, paths, time zones, audit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import audit
from api.assets import repository as repo
from api.assets.schemas import (
    PARENT_LEVEL,
    ZONED_LEVELS,
    AssetCreate,
    AssetDetail,
    AssetNode,
    AssetPublic,
    AssetUpdate,
    LastValue,
    Quality,
    TagPublic,
)
from api.auth.keys import ApiKey
from api.errors import Conflict, Invalid, NotFound

QUALITY: dict[int, Quality] = {0: "good", 1: "uncertain", 2: "bad"}


def list_assets(session: Session, *, level: str | None, parent_id: int | None) -> list[AssetPublic]:
    """Assets in path order, filtered by level and parent."""
    rows = repo.list_assets(session, level=level, parent_id=parent_id)
    return [AssetPublic(**row) for row in rows]


def tree(session: Session) -> list[AssetNode]:
    """The whole tree: roots with their subtrees."""
    nodes = {
        row["id"]: AssetNode(**row) for row in repo.list_assets(session, level=None, parent_id=None)
    }
    roots: list[AssetNode] = []
    for node in nodes.values():  # path order, so children stay sorted
        parent = nodes.get(node.parent_id) if node.parent_id is not None else None
        (parent.children if parent is not None else roots).append(node)
    return roots


def get_asset(session: Session, asset_id: int) -> AssetDetail:
    """One asset and its direct children."""
    row = _existing(session, asset_id)
    children = [AssetPublic(**c) for c in repo.children(session, asset_id)]
    return AssetDetail(**row, children=children)


def create(session: Session, data: AssetCreate, *, actor: ApiKey) -> AssetPublic:
    """Create an asset under a parent of the right level; audited."""
    parent_path = _parent_path(session, level=data.level, parent_id=data.parent_id)
    _check_zone(data.level, data.timezone)
    path = data.name if parent_path is None else f"{parent_path}/{data.name}"
    values = data.model_dump() | {"path": path}
    row = _write(session, path, lambda: repo.insert(session, values))
    audit.record(
        session, actor=actor, action="create", entity="asset", entity_id=row["id"], after=row
    )
    session.commit()
    return AssetPublic(**row)


def update(session: Session, asset_id: int, data: AssetUpdate, *, actor: ApiKey) -> AssetPublic:
    """Change an asset; renaming or moving re-paths its subtree; audited."""
    before = _existing(session, asset_id, lock=True)
    changes: dict[str, Any] = {k: getattr(data, k) for k in data.model_fields_set}
    if changes.get("name", "") is None:
        raise Invalid("name cannot be null", field="name")
    if "timezone" in changes:
        _check_zone(before["level"], changes["timezone"])
    if "parent_id" in changes:
        if changes["parent_id"] == asset_id:
            raise Invalid("an asset cannot be its own parent", field="parent_id")
        parent_path = _parent_path(session, level=before["level"], parent_id=changes["parent_id"])
    else:
        parent_path = before["path"].rpartition("/")[0] or None
    name = changes.get("name", before["name"])
    path = name if parent_path is None else f"{parent_path}/{name}"
    if path != before["path"]:
        changes["path"] = path
    if not changes:
        return AssetPublic(**before)
    row = _write(session, path, lambda: _apply(session, asset_id, changes, before["path"]))
    audit.record(
        session,
        actor=actor,
        action="update",
        entity="asset",
        entity_id=asset_id,
        before=before,
        after=row,
    )
    session.commit()
    return AssetPublic(**row)


def _apply(session: Session, asset_id: int, changes: dict[str, Any], old_path: str) -> Any:
    row = repo.update(session, asset_id, changes)
    if "path" in changes:
        repo.repath_descendants(session, old=old_path, new=changes["path"])
    return row


def delete(session: Session, asset_id: int, *, recursive: bool, actor: ApiKey) -> None:
    """Delete an asset; one with children only when ``recursive``; audited."""
    before = _existing(session, asset_id, lock=True)
    kids = repo.children(session, asset_id)
    if kids and not recursive:
        raise Conflict(
            f"asset {asset_id} has {len(kids)} children; delete them first or pass"
            " recursive=true (which also deletes their tags, states and counts)",
            field="recursive",
        )
    repo.delete(session, asset_id)
    audit.record(
        session, actor=actor, action="delete", entity="asset", entity_id=asset_id, before=before
    )
    session.commit()


def tags(session: Session, asset_id: int) -> list[TagPublic]:
    """The tags of an asset with their latest value, time and quality."""
    _existing(session, asset_id)
    return [_tag(row) for row in repo.tags_with_last(session, asset_id)]


def _tag(row: dict[str, Any]) -> TagPublic:
    last = None
    numeric, textual = row["n_time"], row["x_time"]
    if textual is not None and (numeric is None or textual > numeric):
        last = LastValue(time=textual, value=row["x_value"], quality=QUALITY[row["x_quality"]])
    elif numeric is not None:
        last = LastValue(time=numeric, value=row["n_value"], quality=QUALITY[row["n_quality"]])
    keep = ("id", "name", "datatype", "unit", "agent", "first_seen")
    return TagPublic(**{k: row[k] for k in keep}, last=last)


def _existing(session: Session, asset_id: int, *, lock: bool = False) -> dict[str, Any]:
    row = repo.get(session, asset_id, lock=lock)
    if row is None:
        raise NotFound(f"there is no asset {asset_id}", field="asset_id")
    return row


def _parent_path(session: Session, *, level: str, parent_id: int | None) -> str | None:
    """The parent's path, after checking the parent has the level ``level`` needs."""
    wanted = PARENT_LEVEL[level]
    if wanted is None:
        if parent_id is not None:
            raise Invalid(f"a {level} is a root of the tree: it has no parent", field="parent_id")
        return None
    if parent_id is None:
        raise Invalid(f"a {level} needs a parent {wanted} (parent_id)", field="parent_id")
    parent = repo.get(session, parent_id)
    if parent is None:
        raise Invalid(f"there is no asset {parent_id} to be the parent", field="parent_id")
    if parent["level"] != wanted:
        raise Invalid(
            f"a {level}'s parent must be a {wanted};"
            f" asset {parent_id} is at level {parent['level']}",
            field="parent_id",
        )
    return str(parent["path"])


def _check_zone(level: str, zone: str | None) -> None:
    if zone is not None and level not in ZONED_LEVELS:
        raise Invalid(f"only sites have a time zone (a {level} uses its site's)", field="timezone")


def _write(session: Session, path: str, write: Callable[[], Any]) -> dict[str, Any]:
    """Run ``write``; a clash on the unique path is a 409 naming the field."""
    try:
        row: dict[str, Any] = write()
    except IntegrityError as err:
        session.rollback()
        if getattr(err.orig, "sqlstate", None) == "23505":
            raise Conflict(
                f"an asset with the path {path!r} exists already", field="name"
            ) from None
        raise
    return row
