"""Samples of a tag over a range: raw points, min/max/avg buckets, or shape-keeping points."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.assets.schemas import Quality

Source = Literal["samples", "samples_1m", "samples_1h", "samples_text"]
# What a client may ask for, and what it got (raw: every sample fitted in max_points).
Downsample = Literal["buckets", "m4", "lttb"]
Method = Literal["raw", "buckets", "m4", "lttb"]


class RawPoint(BaseModel):
    """One stored sample, as the gateway reported it (m4 and lttb keep good ones only)."""

    time: datetime
    value: float | str | None = Field(description="None when the quality is bad")
    quality: Quality


class Bucket(BaseModel):
    """The good samples of one bucket ``[time, time + bucket_s)``."""

    time: datetime = Field(description="Start of the bucket")
    min: float
    max: float
    avg: float = Field(description="Mean of the good samples (count-weighted over rollups)")
    count: int = Field(description="Good samples in the bucket")


class SeriesPublic(BaseModel):
    """A tag's samples in ``[start, end)``: ``points`` (raw, m4, lttb) or ``buckets``."""

    tag_id: int
    start: datetime
    end: datetime
    kind: Literal["numeric", "text"]
    method: Method = Field(
        description="How the series was made: raw (every sample fitted), buckets "
        "(min/max/avg), m4 (first/last/min/max sample per column) or lttb"
    )
    source: Source = Field(description="The table the values come from")
    bucket_s: float | None = Field(
        description="Width in seconds of a bucket (buckets) or a column (m4, and lttb's M4 "
        "preselection); None otherwise"
    )
    points: list[RawPoint] = Field(description="Samples: raw, m4 or lttb (empty for buckets)")
    buckets: list[Bucket] = Field(description="min/max/avg buckets (empty otherwise)")
    preselected: bool = Field(
        description="lttb only: the range held more good samples than the API reads into "
        "memory, so LTTB ran over their M4 points (columns of bucket_s) instead"
    )
    note: str | None = Field(
        description="Why the method differs from the one asked for, or how it was bounded"
    )
    truncated: bool = Field(
        description="Text tags only: more than max_points samples, the first ones are shown"
    )
