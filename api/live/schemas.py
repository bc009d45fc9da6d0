"""What a plant manager sees at a glance: machines now, gateways now."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class MachineState(BaseModel):
    """The open state interval of a machine."""

    state: str = Field(examples=["running"])
    reason: str | None = None
    code: str | None = None
    since: datetime


class MachineLive(BaseModel):
    """One machine now."""

    asset_id: int
    path: str = Field(examples=["plant-a/pack/line_1/filler"])
    display_name: str | None
    current: MachineState | None = Field(
        description="None when the machine has no open state interval (never reported, or"
        " its last interval was closed without a new one)"
    )
    product: str | None = Field(description="Product of the latest count; None when none")
    product_time: datetime | None = Field(description="Time of that latest count")


class GatewayLive(BaseModel):
    """One gateway (edge agent) now."""

    agent: str
    status: Literal["online", "offline"]
    since: datetime = Field(description="Since when it has had this status")
    last_seen: datetime


class LivePublic(BaseModel):
    """Machines and gateways, as of a database timestamp."""

    as_of: datetime
    machines: list[MachineLive]
    gateways: list[GatewayLive]
