"""The OEE response: the whole range and its buckets, each with ratios, times and counts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.calendar import Bucket

Ratio = float | None


class Losses(BaseModel):
    """Seconds lost to each OEE factor, and to the six big losses the data tells apart
    (None when no ideal cycle time is known). availability = unplanned_stops + no_data;
    performance = small_stops + reduced_speed. Set-up time is planned downtime by default
    (the changeover state and planned reasons take it out of planned time), so it is not
    a loss here; start-up rejects are not told apart from other rejects."""

    availability_s: float
    performance_s: float | None
    quality_s: float | None
    unplanned_stops_s: float = Field(description="Breakdowns and other unplanned stops")
    no_data_s: float = Field(description="Planned time without state data")
    small_stops_s: float = Field(description="Micro-stops (shorter than the threshold)")
    reduced_speed_s: float | None = Field(
        description="Run time beyond the ideal, micro-stops excluded (negative above 100 %)"
    )
    defects_s: float | None = Field(description="Ideal time spent on rejected parts")


class OeeFigures(BaseModel):
    """OEE of one time range. Ratios are 0..1 (performance may exceed 1, flagged); None
    when undefined (a zero denominator, or parts without an ideal cycle time)."""

    availability: Ratio
    performance: Ratio
    quality: Ratio
    oee: Ratio
    teep: Ratio
    count_quality: Ratio = Field(description="good / total by count")
    calendar_s: float
    scheduled_s: float
    planned_downtime_s: float
    planned_s: float = Field(description="planned production time")
    run_s: float = Field(description="run time, micro-stops included")
    down_s: float = Field(description="unplanned stops and time without state data")
    micro_stop_s: float
    no_data_s: float
    outside_run_s: float = Field(description="running outside planned time (not in run_s)")
    total: int
    good: int
    reject: int
    outside_total: int = Field(description="parts counted outside planned time (not in A/P/Q)")
    micro_stops: int
    failures: int
    mtbf_s: float | None
    mttr_s: float | None
    ideal_time_s: float | None
    good_ideal_time_s: float | None
    losses: Losses
    flags: list[str]


class OeeBucket(OeeFigures):
    """One bucket [start, end)."""

    start: datetime
    end: datetime
    shift: str | None = Field(
        default=None, description="bucket=shift: the shift(s) covering it (None: off shift)"
    )


class OeeResponse(BaseModel):
    """OEE of an asset over [start, end), whole and by bucket."""

    asset_id: int
    asset_path: str
    level: str
    measured_asset_ids: list[int] = Field(
        description="the machines whose data gave the figures (a line: its output machine;"
        " a site or area: one per line)"
    )
    start: datetime
    end: datetime
    bucket: Bucket
    timezone: str = Field(description="the site's IANA time zone (bucket edges, shifts)")
    schedule: Literal["shifts", "whole_range"] = Field(
        description="whole_range: the site has no shifts, so the whole range is scheduled"
    )
    whole: OeeFigures
    buckets: list[OeeBucket]
