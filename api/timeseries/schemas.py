"""Samples of a tag over a range: raw points, or min/max/avg buckets."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.assets.schemas import Quality

Source = Literal["samples", "samples_1m", "samples_1h", "samples_text"]


class RawPoint(BaseModel):
    """One stored sample, as the gateway reported it."""

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
    """A tag's samples in ``[start, end)``: ``points`` when raw, else ``buckets``."""

    tag_id: int
    start: datetime
    end: datetime
    kind: Literal["numeric", "text"]
    source: Source = Field(description="The table the values come from")
    bucket_s: float | None = Field(description="Bucket width in seconds; None for raw points")
    points: list[RawPoint] = Field(description="Raw samples (empty when downsampled)")
    buckets: list[Bucket] = Field(description="Downsampled buckets (empty when raw)")
    truncated: bool = Field(
        description="Text tags only: more than max_points samples, the first ones are shown"
    )
