"""Operators' reasons for stop time: assign, split, delete, list. Every change is audited.

An assignment gives ``[start, end)`` of one machine a code of the reason tree; it is stored
apart from the state intervals (``stop_reasons``), which ingest rewrites when late events
arrive, and laid over them when stops are read (:mod:`api.downtime.overlay`).

* Assign: the range must lie within the machine's stop time (states of a non-running loss
  class, no gap without state data, an open stop only up to now); the code must be in the
  reason tree. Earlier assignments overlapping the range lose the overlapping part: they
  are trimmed, split in two, or deleted.
* Split: the stop that starts exactly at ``start`` is cut into consecutive parts, each with
  its reason; the ends strictly increase and the last is at most the stop's end (now for
  an open stop). A split is assignments of adjacent ranges, made in one transaction.

Writers of one machine's reasons are serialised (an advisory lock), so a check and the
write that follows it see the same assignments.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import audit
from api.auth.keys import ApiKey
from api.downtime import repository as repo
from api.downtime.classify import loss_class
from api.downtime.effective import classes_by_asset, load
from api.downtime.schemas import (
    SplitPart,
    StopReasonCreate,
    StopReasonPublic,
    StopReasonsPublic,
    StopSplit,
)
from api.downtime.service import MAX_RANGE, asset_or_404
from api.errors import Conflict, Invalid, NotFound
from api.oee.calc import LossClass
from api.timeseries.service import check_range

Row = dict[str, Any]
T = TypeVar("T")
ENTITY = "stop_reason"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def _machine(session: Session, asset_id: int) -> Row:
    row = repo.asset(session, asset_id)
    if row is None:
        raise Invalid(f"there is no asset {asset_id}", field="asset_id")
    return row


def _code(session: Session, code: str, field: str) -> None:
    if repo.reason_code(session, code) is None:
        raise Invalid(
            f"{code[:64]!r} is not a code of the downtime reason tree (downtime_reasons)",
            field=field,
        )


def _fmt(dt: datetime) -> str:
    # As given (no conversion: 0001-01-01T00:00+14:00 has no UTC datetime in Python).
    return dt.isoformat()


def _check_stop_time(
    session: Session, asset: Row, *, start: datetime, end: datetime, now: datetime
) -> None:
    """A 422 naming the first part of [start, end) that is not the asset's stop time."""
    machines = load(session, asset, start=start, end=end, now=now)
    own = next((m for m in machines if m.asset_id == asset["id"]), None)
    pieces, classes = (own.pieces, own.classes) if own is not None else ([], {})
    cursor, gap_end = start, end
    for piece in pieces:
        p_end = piece.end or now
        if p_end <= cursor:
            continue
        if piece.start > cursor:
            gap_end = min(piece.start, end)
            break
        if loss_class(piece.state, classes) is LossClass.RUNNING:
            raise Invalid(
                f"asset {asset['id']} was {piece.state} from {_fmt(max(piece.start, cursor))}"
                f" to {_fmt(min(p_end, end))}: a reason can only be given to stop time",
                field="start" if cursor == start else "end",
            )
        cursor = p_end
        if cursor >= end:
            return
    raise Invalid(
        f"asset {asset['id']} has no state data from {_fmt(cursor)} to {_fmt(gap_end)}:"
        " a reason can only be given to stop time",
        field="start" if cursor == start else "end",
    )


def _replace_overlapping(
    session: Session, asset_id: int, *, start: datetime, end: datetime, actor: ApiKey
) -> None:
    """Take [start, end) out of the asset's stored reasons: trim, split or delete them."""
    for old in repo.overlapping_reasons(session, asset_id, start=start, end=end):
        left = (old["start_time"], start) if old["start_time"] < start else None
        right = (end, old["end_time"]) if old["end_time"] > end else None
        kept = left or right
        if kept is None:
            repo.delete_reason(session, old["id"])
            _audit(session, actor, "delete", old["id"], before=old)
            continue
        repo.set_reason_range(session, old["id"], start=kept[0], end=kept[1])
        after = old | {"start_time": kept[0], "end_time": kept[1]}
        _audit(session, actor, "update", old["id"], before=old, after=after)
        if left and right:
            copy = old | {"start_time": right[0], "end_time": right[1]}
            del copy["id"]
            new_id = repo.insert_reason(session, copy)
            _audit(session, actor, "create", new_id, after=copy | {"id": new_id})


def _audit(
    session: Session,
    actor: ApiKey,
    action: str,
    reason_id: int,
    *,
    before: Row | None = None,
    after: Row | None = None,
) -> None:
    audit.record(
        session, actor=actor, action=action, entity=ENTITY, entity_id=reason_id,
        before=before, after=after,
    )  # fmt: skip


def _insert(
    session: Session,
    asset_id: int,
    part: SplitPart | StopReasonCreate,
    *,
    start: datetime,
    actor: ApiKey,
) -> int:
    _replace_overlapping(session, asset_id, start=start, end=part.end, actor=actor)
    values = {
        "asset_id": asset_id, "start_time": start, "end_time": part.end, "code": part.code,
        "note": part.note, "created_by": actor.id,
    }  # fmt: skip
    new_id = repo.insert_reason(session, values)
    _audit(session, actor, "create", new_id, after=values | {"id": new_id})
    return new_id


def _written(session: Session, write: Callable[[], T]) -> T:
    """Run ``write`` and commit; a row the database refuses is a 409 (e.g. deleted meanwhile)."""
    try:
        result = write()
        session.commit()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(
            "the reason could not be stored: the asset or the code changed meanwhile; try again"
        ) from err
    return result


def _public(session: Session, reason_id: int) -> StopReasonPublic:
    row = repo.get_reason(session, reason_id)
    if row is None:  # deleted between commit and read
        raise NotFound(f"there is no stop reason {reason_id}", field="reason_id")
    return _reason_public(row)


def _reason_public(row: Row) -> StopReasonPublic:
    return StopReasonPublic(**row | {"start": row["start_time"], "end": row["end_time"]})


def assign(
    session: Session, data: StopReasonCreate, *, actor: ApiKey, now: datetime | None = None
) -> StopReasonPublic:
    """Give [start, end) of a machine's stop time a reason; replaces earlier ones there."""
    now = now or datetime.now(UTC)
    if data.end > now:
        raise Invalid(f"end {_fmt(data.end)} is in the future (now is {_fmt(now)})", field="end")
    check_range(data.start, data.end, longest=MAX_RANGE)
    asset = _machine(session, data.asset_id)
    _code(session, data.code, "code")

    def write() -> int:
        repo.lock_asset_reasons(session, data.asset_id)
        _check_stop_time(session, asset, start=data.start, end=data.end, now=now)
        return _insert(session, data.asset_id, data, start=data.start, actor=actor)

    return _public(session, _written(session, write))


def _stop_at(session: Session, asset: Row, start: datetime, now: datetime) -> datetime:
    """The end (now for an open one) of the asset's stop that starts exactly at ``start``."""
    row = repo.interval_at(session, int(asset["id"]), start)
    if row is None or row["start_time"] != start:
        hint = "" if row is None else f"; the state then began at {_fmt(row['start_time'])}"
        raise Invalid(
            f"no stop of asset {asset['id']} starts at {_fmt(start)}{hint}", field="start"
        )
    classes = classes_by_asset(session, [int(asset["id"])])[int(asset["id"])]
    if loss_class(row["state"], classes) is LossClass.RUNNING:
        raise Invalid(
            f"asset {asset['id']} was {row['state']} from {_fmt(start)}: only a stop can be split",
            field="start",
        )
    end: datetime = row["end_time"] or now
    return end


def _check_parts(parts: list[SplitPart], *, start: datetime, stop_end: datetime) -> None:
    previous = start
    for i, part in enumerate(parts):
        if part.end <= previous:
            after = "the stop's start" if i == 0 else f"part {i - 1}'s end"
            raise Invalid(f"each end must be after {after}", field=f"parts.{i}.end")
        previous = part.end
    if previous > stop_end:
        raise Invalid(
            f"the last part ends at {_fmt(previous)}, after the stop ({_fmt(stop_end)})",
            field=f"parts.{len(parts) - 1}.end",
        )


def split(
    session: Session, data: StopSplit, *, actor: ApiKey, now: datetime | None = None
) -> list[StopReasonPublic]:
    """Cut the stop starting at ``start`` into consecutive parts with their reasons."""
    asset = _machine(session, data.asset_id)
    for i, part in enumerate(data.parts):
        _code(session, part.code, f"parts.{i}.code")
    now = now or datetime.now(UTC)

    def write() -> list[int]:
        repo.lock_asset_reasons(session, data.asset_id)
        stop_end = _stop_at(session, asset, data.start, now)
        _check_parts(data.parts, start=data.start, stop_end=stop_end)
        ids, begin = [], data.start
        for part in data.parts:
            ids.append(_insert(session, data.asset_id, part, start=begin, actor=actor))
            begin = part.end
        return ids

    return [_public(session, i) for i in _written(session, write)]


def delete(session: Session, reason_id: int, *, actor: ApiKey) -> None:
    """Delete an operator's reason (the machine's own applies there again); audited."""

    def write() -> None:
        row = repo.get_reason(session, reason_id, lock=True)
        if row is None:
            raise NotFound(f"there is no stop reason {reason_id}", field="reason_id")
        repo.delete_reason(session, reason_id)
        _audit(session, actor, "delete", reason_id, before=row)

    _written(session, write)


def list_reasons(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    limit: int = DEFAULT_LIMIT,
) -> StopReasonsPublic:
    """Operators' reasons of an asset and the machines under it overlapping the range."""
    check_range(start, end, longest=MAX_RANGE)
    scope = asset_or_404(session, asset_id)
    rows = repo.assignments(session, scope=scope, start=start, end=end, limit=limit + 1)
    return StopReasonsPublic(
        asset_id=asset_id, start=start, end=end,
        reasons=[_reason_public(r) for r in rows[:limit]], truncated=len(rows) > limit,
    )  # fmt: skip
