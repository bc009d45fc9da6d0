"""Stops with their effective reasons, their Pareto, the root-cause view, operators' reasons."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.db import INT4_MAX, Instant

ParetoBy = Literal["reason", "code", "category", "state"]
PlannedScope = Literal["false", "true", "all"]
LossClassName = Literal["unplanned_down", "planned_down"]

AssetId = Annotated[int, Field(ge=1, le=INT4_MAX, description="The machine", examples=[7])]
Code = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"),
    Field(description="A code of the downtime reason tree", examples=["JAM"]),
]
Note = Annotated[
    str,
    StringConstraints(max_length=2000, pattern=r"^[^\x00]*$"),
    Field(description="Free text from the operator", examples=["bottle stuck at the star wheel"]),
]


class StopPublic(BaseModel):
    """One stop (or the part of one an operator gave its own reason), clipped to the range."""

    asset_id: int
    path: str
    state: str = Field(examples=["fault"])
    loss_class: LossClassName
    reason: str | None = Field(
        description="The effective reason: the operator's, else the machine's"
    )
    code: str | None = Field(description="The effective reason code")
    category: str | None = Field(description="Category of the effective code in the reason tree")
    planned: bool = Field(description="Planned reason, or a state of class planned_down")
    micro_stop: bool = Field(description="Unplanned, and the whole stop is below the threshold")
    assigned: bool = Field(description="An operator gave this reason")
    assignment_id: int | None = Field(description="The operator's reason (stop_reasons id)")
    machine_reason: str | None = Field(description="The reason the machine reported")
    machine_code: str | None
    start: datetime = Field(description="Start inside the range (the later of the two)")
    end: datetime = Field(description="End inside the range (now for an open stop)")
    duration_s: float = Field(description="end - start, in seconds")
    interval_start: datetime = Field(description="Start of the machine's whole stop")
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

    key: str | None = Field(description="The reason, code, category or state; None: none given")
    count: int
    duration_s: float
    share: float = Field(description="duration_s / the entries' total duration")
    cumulative_share: float = Field(description="Share of this entry and all longer ones")


class ParetoPublic(BaseModel):
    """Stops by key, longest total first, with MTBF and MTTR."""

    asset_id: int
    start: datetime
    end: datetime
    by: ParetoBy
    planned: PlannedScope = Field(description="Which stops the entries hold")
    include_micro: bool = Field(description="Micro-stops are in the entries")
    entries: list[ParetoEntry]
    run_s: float = Field(description="Running time plus micro-stops (as in OEE) in the range")
    down_s: float = Field(description="Unplanned stop time, micro-stops excluded")
    planned_down_s: float = Field(description="Planned stop time")
    micro_stops: int = Field(description="Micro-stops overlapping the range (counted apart)")
    micro_stop_s: float = Field(description="Time in micro-stops")
    failures: int = Field(description="Unplanned stops, not micro, overlapping the range")
    mtbf_s: float | None = Field(description="run_s / failures; None without failures")
    mttr_s: float | None = Field(description="down_s / failures; None without failures")


# --- root cause --------------------------------------------------------------------------


class RootCauseMachine(BaseModel):
    """What one machine of the line lost and caused."""

    asset_id: int
    path: str
    is_line_output: bool
    own_stops: int = Field(description="Its own unplanned stops (not starved or blocked)")
    own_s: float
    starved_s: float = Field(description="Its unplanned time starved (waiting for input)")
    blocked_s: float = Field(description="Its unplanned time blocked (output full)")
    caused_stops: int = Field(description="Starved/blocked stops of others rooted in its stops")
    caused_s: float = Field(description="Their time")
    caused_planned_s: float = Field(
        description="Of caused_s, the part rooted in its planned stops (a changeover, say)"
    )
    output_down_s: float | None = Field(
        description="Down time of the line's output machine it caused (None: no output set)"
    )


class RootCauseUnknown(BaseModel):
    """Starved and blocked time no stop of another machine (own or planned) explains."""

    stops: int
    seconds: float
    output_down_s: float | None


class RootCauseEffect(BaseModel):
    """A starved or blocked stop attributed to a root stop (time inside the range)."""

    asset_id: int
    path: str
    state: str
    start: datetime
    end: datetime
    duration_s: float


class RootCauseEpisode(BaseModel):
    """A root stop and the starved and blocked stops it caused."""

    asset_id: int
    path: str
    state: str
    reason: str | None
    code: str | None
    planned: bool = Field(description="The root is a planned stop: no loss of its own")
    start: datetime = Field(description="The root stop's start (may precede the range)")
    end: datetime | None = Field(description="Its end; None while open")
    caused_s: float
    effects: list[RootCauseEffect]
    effects_truncated: bool


class RootCausePublic(BaseModel):
    """Which machine of a line caused its starved and blocked time and its output's stops."""

    asset_id: int
    start: datetime
    end: datetime
    output_asset_id: int | None = Field(description="The machine flagged is_line_output")
    output_down_s: float | None = Field(description="The output machine's unplanned stop time")
    machines: list[RootCauseMachine]
    unknown: RootCauseUnknown
    episodes: list[RootCauseEpisode]
    episodes_truncated: bool
    flags: list[str] = Field(description="e.g. no_line_output: set is_line_output on one machine")


# --- operators' reasons -------------------------------------------------------------------


class StopReasonBase(BaseModel):
    """A reason an operator gives to stop time."""

    code: Code
    note: Note | None = None


class StopReasonCreate(StopReasonBase):
    """A reason for ``[start, end)`` of a machine's stop time (replaces earlier ones there)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "asset_id": 7,
                    "start": "2026-01-05T08:10:00+01:00",
                    "end": "2026-01-05T08:25:00+01:00",
                    "code": "JAM",
                    "note": "bottle stuck at the star wheel",
                }
            ]
        },
    )

    asset_id: AssetId
    start: Instant
    end: Instant


class SplitPart(StopReasonBase):
    """One part of a split stop: from the previous part's end (or the stop's start) to ``end``."""

    model_config = ConfigDict(extra="forbid")

    end: Instant


class StopSplit(BaseModel):
    """Split the stop that starts at ``start`` into consecutive parts with their reasons."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "asset_id": 7,
                    "start": "2026-01-05T08:10:00+01:00",
                    "parts": [
                        {"end": "2026-01-05T08:14:00+01:00", "code": "JAM"},
                        {"end": "2026-01-05T08:25:00+01:00", "code": "WAIT_MAINT"},
                    ],
                }
            ]
        },
    )

    asset_id: AssetId
    start: Instant = Field(description="The stop's start, as /downtime/stops gives it")
    parts: list[SplitPart] = Field(min_length=1, max_length=100)


class StopReasonPublic(StopReasonBase):
    """An operator's reason as stored, with who gave it and when."""

    id: int
    asset_id: int
    path: str
    start: datetime
    end: datetime
    reason: str
    category: str
    planned: bool
    created_by: int | None = Field(description="The API key that gave it")
    created_by_name: str | None
    created_at: datetime


class StopReasonsPublic(BaseModel):
    """Operators' reasons of an asset (and the machines under it) overlapping the range."""

    asset_id: int
    start: datetime
    end: datetime
    reasons: list[StopReasonPublic]
    truncated: bool
