"""Choosing where a tag's samples come from, and how they are thinned to ``max_points``.

The bucket width is ``(end - start) / max_points`` (rounded up to a microsecond), so there
are never more than ``max_points`` buckets. When the width reaches a minute (an hour) the
buckets come from ``samples_1m`` (``samples_1h``) with the width rounded up to whole
minutes (hours): a rollup row falls in one output bucket, never across two. Rollup rows are
taken when they *start* inside the range. Buckets hold good samples only (as the rollups
do); raw points keep their quality. Text tags have no buckets: their first ``max_points``
raw samples, flagged ``truncated`` when there are more.

When every sample of a shorter range fits in ``max_points`` they come back raw, whatever
the method. Otherwise, besides the min/max/avg buckets, two shape-keeping methods return
real good samples (``shape.py``):

- ``m4``: the first, last, lowest and highest sample of each of ``max_points // 4``
  columns, computed in SQL: exact for a line chart whose pixel columns are those columns
  (ask for 4 × the chart's width in pixels).
- ``lttb``: ``max_points`` samples (fewer only when fewer good ones are read), chosen in
  Python from at most ``LTTB_MAX_READ`` samples; past that, from the M4 points of
  ``LTTB_MAX_READ // 4`` columns (MinMaxLTTB), flagged ``preselected``.

The rollups keep neither sample times nor a bucket's first value, so over a long range
(the rule above) both give min/max/avg buckets, with a note saying so.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.assets.service import QUALITY
from api.errors import Invalid, NotFound
from api.timeseries import repository as repo
from api.timeseries import shape
from api.timeseries.schemas import Bucket, Downsample, Method, RawPoint, SeriesPublic, Source

DEFAULT_POINTS = 1000
MAX_POINTS = 10_000
# The 1-hour rollups are kept five years by default: a longer range would be mostly empty.
MAX_RANGE = timedelta(days=1830)
# LTTB reads the points into memory: at most this many (some 40 MB of Python objects; LTTB
# itself takes tens of milliseconds); past it, LTTB runs over an M4 preselection in SQL.
LTTB_MAX_READ = 200_000
# m4 keeps up to four points a column: fewer than four would allow no column at all.
SHAPE_MIN_POINTS = 4
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
    session: Session,
    tag_id: int,
    *,
    start: datetime,
    end: datetime,
    max_points: int,
    method: Downsample = "buckets",
) -> SeriesPublic:
    """The samples of a tag in ``[start, end)``, at most ``max_points`` of them."""
    check_range(start, end, longest=MAX_RANGE)
    if method != "buckets" and max_points < SHAPE_MIN_POINTS:
        raise Invalid(
            f"{method} needs max_points >= {SHAPE_MIN_POINTS} (m4 keeps four points a column)",
            field="max_points",
        )
    if repo.tag(session, tag_id) is None:
        raise NotFound(f"there is no tag {tag_id}", field="tag_id")
    head: dict[str, Any] = {"tag_id": tag_id, "start": start, "end": end}
    found = repo.kinds(session, tag_id, start=start, end=end)
    if found["text"] and not found["numeric"]:
        return _text(session, head, max_points=max_points, method=method)
    width = bucket_width(end - start, max_points)
    if width >= MINUTE:
        return _rollup(session, head, width=width, method=method)
    raw = repo.raw(session, tag_id, start=start, end=end, limit=max_points + 1, textual=False)
    if len(raw) <= max_points:
        return _series(head, method="raw", source="samples", points=[_point(r) for r in raw])
    if method == "m4":
        return _m4(session, head, max_points=max_points)
    if method == "lttb":
        return _lttb(session, head, max_points=max_points)
    rows = repo.raw_buckets(session, tag_id, start=start, end=end, width=width)
    return _buckets(head, rows, source="samples", width=width)


def _rollup(
    session: Session, head: dict[str, Any], *, width: timedelta, method: Downsample
) -> SeriesPublic:
    table: repo.Rollup = "samples_1h" if width >= HOUR else "samples_1m"
    width = _round_up(width, HOUR if table == "samples_1h" else MINUTE)
    rows = repo.rollup_buckets(
        session, head["tag_id"], table=table, start=head["start"], end=head["end"], width=width
    )
    note = None
    if method != "buckets":
        # The rollups keep no sample times (nor a bucket's first value): no M4 or LTTB there.
        note = (
            f"{method} reads raw samples; a range this long comes from the {table} rollup,"
            " as min/max/avg buckets (draw min and max per bucket to keep the shape)"
        )
    return _buckets(head, rows, source=table, width=width, note=note)


def _m4(session: Session, head: dict[str, Any], *, max_points: int) -> SeriesPublic:
    width = bucket_width(head["end"] - head["start"], max_points // 4)
    rows = repo.m4(session, head["tag_id"], start=head["start"], end=head["end"], width=width)
    return _series(
        head, method="m4", source="samples", points=_good(rows), bucket_s=width.total_seconds()
    )


def _lttb(session: Session, head: dict[str, Any], *, max_points: int) -> SeriesPublic:
    tag_id, start, end = head["tag_id"], head["start"], head["end"]
    found = repo.count_good(session, tag_id, start=start, end=end, limit=LTTB_MAX_READ + 1)
    width: timedelta | None = None
    if found > LTTB_MAX_READ:
        # MinMaxLTTB (Van Der Donckt et al., 2023): LTTB over an M4 preselection made in SQL
        # keeps nearly the same points, and the memory and time stay bounded.
        width = bucket_width(end - start, LTTB_MAX_READ // 4)
        rows = repo.m4(session, tag_id, start=start, end=end, width=width)
    else:
        rows = repo.good_points(session, tag_id, start=start, end=end)
    xs = [(t - start).total_seconds() for t, _ in rows]
    kept = shape.lttb(xs, [v for _, v in rows], max_points)
    note = None
    if width is not None:
        note = (
            f"more than {LTTB_MAX_READ} good samples: LTTB ran over their M4 points"
            f" ({LTTB_MAX_READ // 4} columns of {width.total_seconds()} s)"
        )
    return _series(
        head, method="lttb", source="samples", points=_good([rows[i] for i in kept]),
        bucket_s=None if width is None else width.total_seconds(),
        preselected=width is not None, note=note,
    )  # fmt: skip


def _series(
    head: dict[str, Any],
    *,
    method: Method,
    source: Source,
    points: list[RawPoint],
    bucket_s: float | None = None,
    preselected: bool = False,
    note: str | None = None,
) -> SeriesPublic:
    return SeriesPublic(
        **head, kind="numeric", method=method, source=source, bucket_s=bucket_s,
        points=points, buckets=[], preselected=preselected, note=note, truncated=False,
    )  # fmt: skip


def _text(
    session: Session, head: dict[str, Any], *, max_points: int, method: Downsample
) -> SeriesPublic:
    rows = repo.raw(
        session, head["tag_id"], start=head["start"], end=head["end"],
        limit=max_points + 1, textual=True,
    )  # fmt: skip
    note = None if method == "buckets" else f"a text tag has no {method}: its raw samples"
    return SeriesPublic(
        **head, kind="text", method="raw", source="samples_text", bucket_s=None,
        points=[_point(r) for r in rows[:max_points]], buckets=[], preselected=False,
        note=note, truncated=len(rows) > max_points,
    )  # fmt: skip


def _buckets(
    head: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    source: Source,
    width: timedelta,
    note: str | None = None,
) -> SeriesPublic:
    return SeriesPublic(
        **head, kind="numeric", method="buckets", source=source,
        bucket_s=width.total_seconds(), points=[], buckets=[Bucket(**r) for r in rows],
        preselected=False, note=note, truncated=False,
    )  # fmt: skip


def _point(row: dict[str, Any]) -> RawPoint:
    return RawPoint(time=row["time"], value=row["value"], quality=QUALITY[row["quality"]])


def _good(rows: list[repo.Point]) -> list[RawPoint]:
    return [RawPoint(time=t, value=v, quality="good") for t, v in rows]
