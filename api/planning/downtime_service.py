"""Planned downtime: scheduled time of an asset taken out of planned production time.

An entry on a site, area or line applies to every machine under it (OEE reads the
machine's own entries and those of every asset above it; so does the list here). An
enterprise is not above any site in the asset paths, so entries cannot go there. An
entry lasts at most MAX_DAYS: longer plans (a shutdown of months) are several entries,
which keeps one mistyped year from silently emptying a year of planned time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.auth.keys import ApiKey
from api.errors import Invalid, NotFound
from api.planning import calendar_repository as repo
from api.planning.calendar_schemas import (
    PlannedDowntimeCreate,
    PlannedDowntimeEntry,
    PlannedDowntimeList,
    PlannedDowntimePublic,
    PlannedDowntimeUpdate,
)
from api.planning.common import asset_at, changes, record, write

MAX_DAYS = 31
LEVELS = ("site", "area", "line", "machine")
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000


def list_downtime(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    category: str | None,
    limit: int,
    max_range_days: int,
) -> PlannedDowntimeList:
    """Entries of an asset and the assets above it overlapping [start, end), by start."""
    if end <= start:
        raise Invalid("end must be after start", field="end")
    if end - start > timedelta(days=max_range_days):
        raise Invalid(
            f"at most {max_range_days} days may be asked for at once (LINEPULSE_MAX_RANGE_DAYS)",
            field="end",
        )
    asset = asset_at(session, asset_id, levels=LEVELS, field="asset_id")
    rows = repo.planned_downtime(
        session, asset["path"], start=start, end=end, category=category, limit=limit + 1
    )
    entries = [PlannedDowntimeEntry(**r, inherited=r["asset_id"] != asset_id) for r in rows]
    return PlannedDowntimeList(
        asset_id=asset_id,
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        entries=entries[:limit],
        truncated=len(entries) > limit,
    )


def get_downtime(session: Session, downtime_id: int) -> PlannedDowntimePublic:
    """One entry."""
    return PlannedDowntimePublic(**_existing(session, downtime_id))


def create_downtime(
    session: Session, data: PlannedDowntimeCreate, *, actor: ApiKey
) -> PlannedDowntimePublic:
    """Add an entry to an asset; audited."""
    values = data.model_dump()
    _check(values)
    asset_at(session, data.asset_id, levels=LEVELS, field="asset_id")
    new_id = write(
        session,
        lambda: repo.insert_downtime(session, values),
        foreign_key=_vanished(data.asset_id),
    )
    after = get_downtime(session, new_id)
    record(session, actor=actor, action="create", entity="planned_downtime", entity_id=new_id,
           after=after)  # fmt: skip
    session.commit()
    return after


def update_downtime(
    session: Session, downtime_id: int, data: PlannedDowntimeUpdate, *, actor: ApiKey
) -> PlannedDowntimePublic:
    """Change an entry's asset, category, times or note; audited."""
    row = _existing(session, downtime_id, lock=True)
    before = PlannedDowntimePublic(**row)
    values = changes(data, nullable=("note",))
    if not values:
        return before
    merged = {k: row[k] for k in ("asset_id", "category", "start", "end", "note")} | values
    _check(merged)
    if "asset_id" in values:
        asset_at(session, values["asset_id"], levels=LEVELS, field="asset_id")
    write(
        session,
        lambda: repo.update_downtime(session, downtime_id, merged),
        foreign_key=_vanished(merged["asset_id"]),
    )
    after = get_downtime(session, downtime_id)
    record(session, actor=actor, action="update", entity="planned_downtime",
           entity_id=downtime_id, before=before, after=after)  # fmt: skip
    session.commit()
    return after


def delete_downtime(session: Session, downtime_id: int, *, actor: ApiKey) -> None:
    """Delete an entry; audited."""
    before = PlannedDowntimePublic(**_existing(session, downtime_id, lock=True))
    repo.delete_downtime(session, downtime_id)
    record(session, actor=actor, action="delete", entity="planned_downtime",
           entity_id=downtime_id, before=before)  # fmt: skip
    session.commit()


def _check(values: dict[str, Any]) -> None:
    start, end = values["start"], values["end"]
    if end <= start:
        raise Invalid(f"end ({end.isoformat()}) must be after start ({start.isoformat()})",
                      field="end")  # fmt: skip
    if end - start > timedelta(days=MAX_DAYS):
        days = (end - start) / timedelta(days=1)
        raise Invalid(
            f"a planned downtime lasts at most {MAX_DAYS} days (this one {days:.1f});"
            " enter a longer one as several entries",
            field="end",
        )


def _existing(session: Session, downtime_id: int, *, lock: bool = False) -> dict[str, Any]:
    row = repo.get_downtime(session, downtime_id, lock=lock)
    if row is None:
        raise NotFound(f"there is no planned downtime {downtime_id}", field="downtime_id")
    return row


def _vanished(asset_id: int) -> NotFound:
    return NotFound(f"there is no asset {asset_id}", field="asset_id")
