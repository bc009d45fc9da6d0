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
counts. Counts are summed per minute in SQL, so a count belongs to the bucket of its minute.
"""

from __future__ import annotations

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
from api.oee import repository as repo
from api.oee.calc import (
    DEFAULT_STATE_CLASSES,
    BucketResult,
    LossClass,
    OeeInput,
    OeeInputError,
    OeeResult,
    PlannedDowntime,
    ProductionCount,
    StateInterval,
    TimeRange,
    combine_site,
    compute_buckets,
    rollup,
)
from api.oee.schemas import Losses, OeeBucket, OeeFigures, OeeResponse

COMBINED = ("site", "area")


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
) -> OeeResponse:
    """OEE of an asset over [start, end), whole and by ``bucket``."""
    _check_range(start, end, max_range_days)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    asset = repo.asset_with_site(session, asset_id)
    if asset is None:
        raise NotFound(f"there is no asset {asset_id}", field="asset_id")
    members = _members(session, asset)
    try:
        cal = _calendar(session, asset, start=start, end=end)
        windows = cal.windows or []
        edges = bucket_edges(bucket, tz=cal.tz, start=start, end=end, windows=windows)
        now = now or datetime.now(UTC)
        per_member = [
            compute_buckets(_input(session, m, start=start, end=end, cal=cal, now=now), edges)
            for m in members
        ]
    except (OeeInputError, CalendarError) as err:
        raise Invalid(f"the stored data cannot be evaluated: {err}", field="asset_id") from None
    combined = asset["level"] in COMBINED
    extra = cal.flags + (("combined_lines",) if combined else ())
    whole = _figures([rollup([b.result for b in bs]) for bs in per_member], combined, extra)
    buckets = []
    if bucket != "none":
        for i, first in enumerate(per_member[0]):
            results = [bs[i].result for bs in per_member]
            label = _shift_label(windows, first) if bucket == "shift" else None
            figures = _figures(results, combined, extra)
            buckets.append(
                OeeBucket(**figures.model_dump(), start=first.start, end=first.end, shift=label)
            )
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


def _input(
    session: Session,
    machine: dict[str, Any],
    *,
    start: datetime,
    end: datetime,
    cal: _Calendar,
    now: datetime,
) -> OeeInput:
    """The calculation's input for one machine (its path gives the planned downtime)."""
    machine_id = int(machine["id"])
    downtime = repo.planned_downtime(session, machine["path"], start=start, end=end)
    states = repo.state_intervals(session, machine_id, start=start, end=end)
    counts = repo.counts_per_minute(session, machine_id, start=start, end=end)
    products = sorted({c["product"] for c in counts if c["product"] is not None})
    classes = dict(DEFAULT_STATE_CLASSES)
    classes.update({s: LossClass(c) for s, c in repo.loss_classes(session, machine_id).items()})
    return OeeInput(
        window=TimeRange(start, end),
        shifts=None if cal.windows is None else [TimeRange(w.start, w.end) for w in cal.windows],
        planned_downtime=[
            PlannedDowntime(d["start_time"], d["end_time"], d["category"]) for d in downtime
        ],
        states=[
            StateInterval(
                s["start_time"], s["end_time"], s["state"], s["reason"], s["planned"], s["category"]
            )
            for s in states
        ],
        counts=[
            ProductionCount(
                c["time"], int(c["total"]), int(c["good"]), int(c["reject"]), c["product"]
            )
            for c in counts
        ],
        ideal_cycle_s=repo.ideal_cycles(session, machine_id, products),
        state_classes=classes,
        micro_stop_s=repo.micro_stop_s(session, machine_id),
        now=now,
    )


def _figures(results: list[OeeResult], combined: bool, extra: tuple[str, ...]) -> OeeFigures:
    """The response figures of one range: one result, or a site's lines combined."""
    total = rollup(results)
    values = total.as_dict()
    values["flags"] = sorted({*total.flags, *extra})
    values["losses"] = Losses(
        availability_s=total.availability_loss_s,
        performance_s=total.performance_loss_s,
        quality_s=total.quality_loss_s,
    )
    if combined:
        site = combine_site(results)
        values.update(availability=None, performance=None, quality=None)
        values.update(oee=site.oee, teep=site.teep)
    return OeeFigures(**values)


def _shift_label(windows: list[ShiftWindow], bucket: BucketResult) -> str | None:
    names = sorted({w.name for w in windows if w.start <= bucket.start < w.end})
    return "+".join(names) or None
