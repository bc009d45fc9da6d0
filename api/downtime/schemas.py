"""Stops (state intervals other than running) and their Pareto."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

ParetoBy = Literal["reason", "state"]


class StopPublic(BaseModel):
    """One stop, clipped to the range asked for."""

    asset_id: int
    path: str
    state: str = Field(examples=["fault"])
    reason: str | None
    code: str | None
    start: datetime = Field(description="Start inside the range (the later of the two)")
    end: datetime = Field(description="End inside the range (now for an open stop)")
    duration_s: float = Field(description="end - start, in seconds")
    interval_start: datetime = Field(description="Start of the whole stop")
    interval_end: datetime | None = Field(description="End of the whole stop; None while open")


class StopsPublic(BaseModel):
    """The stops of an asset (and the machines under it) in ``[start, end)``."""

    asset_id: int
    start: datetime
    end: datetime
    stops: list[StopPublic]
    truncated: bool = Field(description="More stops matched than the limit; the first are shown")


class ParetoEntry(BaseModel):
    """Stops sharing one key."""

    key: str | None = Field(description="The reason or state; None: no reason given")
    count: int
    duration_s: float


class ParetoPublic(BaseModel):
    """Stops by reason or state, longest total first, with MTBF and MTTR."""

    asset_id: int
    start: datetime
    end: datetime
    by: ParetoBy
    entries: list[ParetoEntry]
    run_s: float = Field(description="Time in state 'running' inside the range")
    down_s: float = Field(description="Time in any other state inside the range")
    failures: int = Field(description="Stops overlapping the range")
    mtbf_s: float | None = Field(description="run_s / failures; None without failures")
    mttr_s: float | None = Field(description="down_s / failures; None without failures")
