"""OEE of an asset over a time range: load the rows, build the calendar, run api.oee.calc.

Which data an asset's OEE comes from:

* a machine: its own states and counts;
* a line: its machine flagged ``is_line_output`` in machine_settings (every part passes
  every machine of a line, so summing them would count each part several times); none or
  several flagged is a 422 saying to set exactly one;
* a site or an area: :func:`api.oee.calc.combine_site` over its lines (each line as
  above): OEE and TEEP are Σ good ideal time / Σ planned (or calendar) time; availability,
  performance and quality of a combination are not defined and are null (flag
  ``combined_lines``);
* an enterprise: refused (its sites have different calendars).

The site's shifts (weekly patterns plus holidays and extra shifts) give the scheduled
time; a site without shifts schedules the whole range (``schedule: whole_range`` and the
flag ``no_shift_calendar``). Planned downtime of the asset and of every asset above it
counts. A count belongs to the bucket of its minute.

The figures are those of :func:`api.oee.calc.compute_buckets` on the machine's rows, but
no row becomes a Python object: per machine, the database sends the state intervals (with
the planned stops among them), the planned downtime and whole hours of counts from the
hourly rollup ``production_counts_1h`` as arrays of bytes (``api/oee/repository.py``);
:mod:`api.oee.segments` cuts the window at every bucket edge and every edge of planned
time, and numpy sums the states and places the counts per bucket (:mod:`api.oee.counts`
reads minute by minute only the hours that need it). A site's lines are computed side by
side on helper connections (:mod:`api.oee.parallel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from api.calendar import (
    Bucket,
    CalendarError,
    Shift,
    ShiftException,
    ShiftWindow,
    bucket_edges,
    shift_windows,
)
from api.errors import Invalid, NotFound
from api.oee import counts, segments
from api.oee import repository as repo
from api.oee.calc import (
    DEFAULT_STATE_CLASSES,
    LossClass,
    OeeInputError,
    TimeRange,
    check_ideal_cycles,
)
from api.oee.parallel import Helpers
from api.oee.result import BucketResult, OeeResult, rollup
from api.oee.schemas import Losses, OeeBucket, OeeFigures, OeeResponse

COMBINED = ("site", "area")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Calendar:
    """The site's zone and shift windows over the range (None: no shifts defined)."""

    tz: ZoneInfo
    zone: str
    windows: list[ShiftWindow] | None
    flags: tuple[str, ...]


def oee(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    max_range_days: int,
    now: datetime | None = None,
    helpers: Helpers | None = None,
) -> OeeResponse:
    """OEE of an asset over [start, end), whole and by ``bucket``; ``helpers`` compute a
    site's lines side by side."""
    _check_range(start, end, max_range_days)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    asset = repo.asset_with_site(session, asset_id)
    if asset is None:
        raise NotFound(f"there is no asset {asset_id}", field="asset_id")
    members = _members(session, asset)
    repo.tune(session)
    try:
        cal = _calendar(session, asset, start=start, end=end)
        windows = cal.windows or []
        edges = bucket_edges(bucket, tz=cal.tz, start=start, end=end, windows=windows)
        now = now or datetime.now(UTC)
        shifts = None if cal.windows is None else [TimeRange(w.start, w.end) for w in windows]
        fr = segments.frame(TimeRange(start, end), shifts=shifts, edges=edges, now=now)

        def member(s: Session, m: dict[str, Any]) -> segments.MachineSums:
            return _member(s, m, fr, start=start, end=end)

        if helpers is None or len(members) == 1:
            parts = [member(session, m) for m in members]
        else:
            parts = helpers.map(session, member, members, setup=repo.tune)
    except (OeeInputError, CalendarError) as err:
        raise Invalid(f"the stored data cannot be evaluated: {err}", field="asset_id") from None
    results = segments.assemble(fr, parts)  # a site's lines summed per bucket (rollup)
    combined = asset["level"] in COMBINED
    extra = cal.flags + (("combined_lines",) if combined else ())
    whole = OeeFigures(**_values(rollup([b.result for b in results]), combined, extra))
    buckets = []
    if bucket != "none":
        for b in results:
            label = _shift_label(windows, b) if bucket == "shift" else None
            values = _values(b.result, combined, extra)
            buckets.append(OeeBucket(**values, start=b.start, end=b.end, shift=label))
    return OeeResponse(
        asset_id=asset_id,
        asset_path=asset["path"],
        level=asset["level"],
        measured_asset_ids=[int(m["id"]) for m in members],
        start=start,
        end=end,
        bucket=bucket,
        timezone=cal.zone,
        schedule="whole_range" if cal.windows is None else "shifts",
        whole=whole,
        buckets=buckets,
    )


def _check_range(start: datetime, end: datetime, max_days: int) -> None:
    if end <= start:
        raise Invalid("end must be after start", field="end")
    if end - start > timedelta(days=max_days):
        days = (end - start) / timedelta(days=1)
        raise Invalid(
            f"the range spans {days:.1f} days; at most {max_days} days may be asked for"
            " at once (LINEPULSE_MAX_RANGE_DAYS)",
            field="end",
        )


def _members(session: Session, asset: dict[str, Any]) -> list[dict[str, Any]]:
    """The machines whose data make this asset's OEE (see the module docstring)."""
    level = asset["level"]
    if level == "machine":
        return [asset]
    if level == "line":
        return [_line_output(session, asset)]
    if level in COMBINED:
        lines = repo.lines_under(session, asset["path"])
        if not lines:
            raise Invalid(f"{level} {asset['path']!r} has no lines to measure", field="asset_id")
        return [_line_output(session, line) for line in lines]
    raise Invalid(
        f"OEE is per machine, line, area or site; {asset['path']!r} is a {level}",
        field="asset_id",
    )


def _line_output(session: Session, line: dict[str, Any]) -> dict[str, Any]:
    outputs = repo.line_outputs(session, int(line["id"]))
    if len(outputs) != 1:
        found = ", ".join(o["path"] for o in outputs) or "none is"
        raise Invalid(
            f"a line's OEE is that of its output machine: set is_line_output in"
            f" machine_settings on exactly one machine of line {line['path']!r}"
            f" ({found} flagged)",
            field="asset_id",
        )
    return outputs[0]


def _calendar(
    session: Session, asset: dict[str, Any], *, start: datetime, end: datetime
) -> _Calendar:
    zone, flags = asset["timezone"], []
    if not zone:
        zone = "UTC"
        flags.append("site_timezone_missing")
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"the site's time zone {zone!r} is not known", field="asset_id") from None
    site_id = asset["site_id"]
    rows = [] if site_id is None else repo.shifts(session, site_id)
    if not rows:
        return _Calendar(tz, zone, None, (*flags, "no_shift_calendar"))
    shifts = [Shift(r["name"], r["weekday"], r["start_local"], r["duration"]) for r in rows]
    first = start.astimezone(tz).date() - timedelta(days=1)
    exc_rows = repo.shift_exceptions(session, site_id, first=first, last=end.astimezone(tz).date())
    exceptions = [
        ShiftException(r["date"], r["kind"], r["shift_name"], r["start_local"], r["duration"])
        for r in exc_rows
    ]
    windows = shift_windows(shifts, tz=tz, start=start, end=end, exceptions=exceptions)
    return _Calendar(tz, zone, windows, tuple(flags))


def _member(
    session: Session,
    machine: dict[str, Any],
    fr: segments.Frame,
    *,
    start: datetime,
    end: datetime,
) -> segments.MachineSums:
    """One machine's sums per bucket, made by the database (see api/oee/segments.py)."""
    machine_id = int(machine["id"])
    classes = dict(DEFAULT_STATE_CLASSES)
    classes.update({s: LossClass(c) for s, c in repo.loss_classes(session, machine_id).items()})
    micro_s = _checked_micro(repo.micro_stop_s(session, machine_id))
    found = repo.state_rows(
        session, asset_id=machine_id, start=start, end=end, open_end=fr.open_end, classes=classes
    )
    excluded = repo.excluded_spans(
        session,
        asset_id=machine_id,
        path=machine["path"],
        start=start,
        end=end,
        open_end=fr.open_end,
        states=found,
    )
    p = segments.plan(fr, excluded)
    states, notes = segments.cut_states(p, found.rows, segments.threshold_us(micro_s))
    sums = _count_sums(session, machine_id, p, start=start, end=end)
    return segments.MachineSums(p, states, sums, _cycles(session, machine_id, sums), notes)


def _count_sums(
    session: Session, machine_id: int, p: segments.Plan, *, start: datetime, end: datetime
) -> list[segments.CountSum]:
    """The machine's counts per (bucket, planned or not, product): whole hours from the
    hourly rollup where it tells where they go, the rest minute by minute (api.oee.counts)."""
    if not p.bounds:
        return []
    whole = _whole_hours(start, end)
    hours = repo.hour_rows(session, asset_id=machine_id, whole_hours=whole)
    placed, raw = counts.cut_hours(p, hours)
    c = hours.counts
    read = [
        (_EPOCH + timedelta(microseconds=t), c.products[i])
        for t, i in zip(c.time[raw].tolist(), c.product[raw].tolist(), strict=True)
    ]
    if read or whole[0] > start or whole[1] < end:
        minutes = repo.minute_rows(
            session, asset_id=machine_id, start=start, end=end, whole_hours=whole, hours=read
        )
        placed.append(counts.cut_minutes(p, minutes))
    return counts.count_sums(p, placed)


def _checked_micro(seconds: float) -> float:
    if not (math.isfinite(seconds) and seconds >= 0):
        raise OeeInputError(f"micro_stop_s must be >= 0, got {seconds!r}")
    return seconds


def _cycles(
    session: Session, machine_id: int, counts: list[segments.CountSum]
) -> dict[str | None, float | None]:
    """Ideal cycle time of each product counted (None: unknown), checked as OeeInput does."""
    products = sorted({c.product for c in counts if c.product is not None})
    known = repo.ideal_cycles(session, machine_id, products)
    check_ideal_cycles(known)
    return {None: None, **{p: known.get(p) for p in products}}


def _whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours inside [start, end) as [h0, h1) (h0 = h1 = end when none)."""
    h0 = start.replace(minute=0, second=0, microsecond=0)
    if h0 < start:
        h0 += timedelta(hours=1)
    h1 = end.replace(minute=0, second=0, microsecond=0)
    return (h0, h1) if h0 < h1 else (end, end)


def _values(total: OeeResult, combined: bool, extra: tuple[str, ...]) -> dict[str, Any]:
    """The response figures of one range: one machine's, or a site's lines summed."""
    values = total.as_dict()
    values["flags"] = sorted({*values["flags"], *extra})
    performance = values["performance_loss_s"]
    values["losses"] = Losses(
        availability_s=values["availability_loss_s"],
        performance_s=performance,
        quality_s=values["quality_loss_s"],
        unplanned_stops_s=values["down_s"] - values["no_data_s"],
        no_data_s=values["no_data_s"],
        small_stops_s=values["micro_stop_s"],
        reduced_speed_s=None if performance is None else performance - values["micro_stop_s"],
        defects_s=values["quality_loss_s"],
    )
    if combined:
        # combine_site's rule: OEE and TEEP of the sum, which ``values`` already holds.
        values.update(availability=None, performance=None, quality=None)
    return values


def _shift_label(windows: list[ShiftWindow], bucket: BucketResult) -> str | None:
    names = sorted({w.name for w in windows if w.start <= bucket.start < w.end})
    return "+".join(names) or None
