"""Choosing where a tag's samples come from: raw, raw buckets, or the 1 m / 1 h rollups.

The bucket width is ``(end - start) / max_points`` (rounded up to a microsecond), so there
are never more than ``max_points`` buckets. When the width reaches a minute (an hour) the
buckets come from ``samples_1m`` (``samples_1h``) with the width rounded up to whole
minutes (hours): a rollup row falls in one output bucket, never across two. Rollup rows are
taken when they *start* inside the range. Buckets hold good samples only (as the rollups
do); raw points keep their quality. Text tags have no buckets: their first ``max_points``
raw samples, flagged ``truncated`` when there are more.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.assets.service import QUALITY
from api.errors import Invalid, NotFound
from api.timeseries import repository as repo
from api.timeseries.schemas import Bucket, RawPoint, SeriesPublic, Source

DEFAULT_POINTS = 1000
MAX_POINTS = 10_000
# The 1-hour rollups are kept five years by default: a longer range would be mostly empty.
MAX_RANGE = timedelta(days=1830)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def check_range(start: datetime, end: datetime, *, longest: timedelta) -> None:
    """A 422 naming the problem unless ``start < end`` and the range is at most ``longest``."""
    if end <= start:
        raise Invalid("end must be after start", field="end")
    if end - start > longest:
        raise Invalid(
            f"the range is {(end - start).days} days; at most {longest.days} days per request",
            field="start",
        )


def bucket_width(span: timedelta, max_points: int) -> timedelta:
    """``span / max_points`` rounded up to a whole microsecond (so buckets <= max_points)."""
    span_us = span // timedelta(microseconds=1)
    return timedelta(microseconds=-(-span_us // max_points))


def _round_up(width: timedelta, grain: timedelta) -> timedelta:
    return -(-width // grain) * grain


def series(
    session: Session, tag_id: int, *, start: datetime, end: datetime, max_points: int
) -> SeriesPublic:
    """The samples of a tag in ``[start, end)``, at most ``max_points`` of them."""
    check_range(start, end, longest=MAX_RANGE)
    if repo.tag(session, tag_id) is None:
        raise NotFound(f"there is no tag {tag_id}", field="tag_id")
    head: dict[str, Any] = {"tag_id": tag_id, "start": start, "end": end}
    found = repo.kinds(session, tag_id, start=start, end=end)
    if found["text"] and not found["numeric"]:
        return _text(session, head, max_points)
    width = bucket_width(end - start, max_points)
    if width >= MINUTE:
        table: repo.Rollup = "samples_1h" if width >= HOUR else "samples_1m"
        width = _round_up(width, HOUR if table == "samples_1h" else MINUTE)
        rows = repo.rollup_buckets(session, tag_id, table=table, start=start, end=end, width=width)
        return _buckets(head, rows, source=table, width=width)
    raw = repo.raw(session, tag_id, start=start, end=end, limit=max_points + 1, textual=False)
    if len(raw) <= max_points:
        return SeriesPublic(
            **head, kind="numeric", source="samples", bucket_s=None,
            points=[_point(r) for r in raw], buckets=[], truncated=False,
        )  # fmt: skip
    rows = repo.raw_buckets(session, tag_id, start=start, end=end, width=width)
    return _buckets(head, rows, source="samples", width=width)


def _text(session: Session, head: dict[str, Any], max_points: int) -> SeriesPublic:
    rows = repo.raw(
        session, head["tag_id"], start=head["start"], end=head["end"],
        limit=max_points + 1, textual=True,
    )  # fmt: skip
    return SeriesPublic(
        **head, kind="text", source="samples_text", bucket_s=None,
        points=[_point(r) for r in rows[:max_points]], buckets=[],
        truncated=len(rows) > max_points,
    )  # fmt: skip


def _buckets(
    head: dict[str, Any], rows: list[dict[str, Any]], *, source: Source, width: timedelta
) -> SeriesPublic:
    return SeriesPublic(
        **head, kind="numeric", source=source, bucket_s=width.total_seconds(), points=[],
        buckets=[Bucket(**r) for r in rows], truncated=False,
    )  # fmt: skip


def _point(row: dict[str, Any]) -> RawPoint:
    return RawPoint(time=row["time"], value=row["value"], quality=QUALITY[row["quality"]])
