"""Assets: the ISA-95 tree (enterprise, site, area, line, machine) and the tags on them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from api.db import INT4_MAX

Quality = Literal["good", "uncertain", "bad"]
Level = Literal["enterprise", "site", "area", "line", "machine"]
# The level an asset's parent must have (None: a root). Sites are roots because the asset
# path gateways publish under starts at the site; an enterprise is a root label of its own.
PARENT_LEVEL: dict[str, str | None] = {
    "enterprise": None,
    "site": None,
    "area": "site",
    "line": "area",
    "machine": "line",
}
# Only these levels carry a time zone (shift calendars and reports are per site).
ZONED_LEVELS = ("site", "enterprise")

# The same rule as a topic segment in the wire contract (edge_agent.contract._SEGMENT).
Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"),
    Field(description="1-64 letters, digits, '_', '.' or '-' (a segment of the asset path)"),
]
DisplayName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]
AssetId = Annotated[int, Field(ge=1, le=INT4_MAX)]


def _zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{value[:64]!r} is not an IANA time zone name, e.g. Europe/Berlin"
        ) from None
    return value


TimeZone = Annotated[
    str | None,
    StringConstraints(max_length=64),
    AfterValidator(_zone),
    Field(description="IANA time zone of a site, e.g. Europe/Berlin"),
]


class AssetBase(BaseModel):
    """What every asset shape shares."""

    display_name: DisplayName | None = None
    timezone: TimeZone = None


class AssetCreate(AssetBase):
    """A new asset; its path is its parent's path plus its name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "filler-1", "level": "machine", "parent_id": 3},
                {"name": "plant-a", "level": "site", "timezone": "Europe/Berlin"},
            ]
        },
    )

    name: Name
    level: Level
    parent_id: AssetId | None = None


class AssetUpdate(AssetBase):
    """Fields to change; ``null`` clears display_name or timezone. Renaming or moving re-paths
    the asset and everything under it (gateways must then publish under the new path)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"display_name": "Filler 1"}, {"parent_id": 4}]},
    )

    name: Name | None = None
    parent_id: AssetId | None = None


class AssetPublic(AssetBase):
    """An asset as the API shows it."""

    id: int
    name: str
    level: Level
    parent_id: int | None
    path: str
    created_at: datetime


class AssetDetail(AssetPublic):
    """An asset with its direct children."""

    children: list[AssetPublic]


class AssetNode(AssetPublic):
    """An asset with its whole subtree."""

    children: list[AssetNode] = Field(default_factory=list)


class LastValue(BaseModel):
    """A tag's latest sample."""

    time: datetime
    value: float | str | None = Field(description="None when the quality is bad")
    quality: Quality


class TagPublic(BaseModel):
    """A tag of an asset, with its latest value."""

    id: int
    name: str
    datatype: str
    unit: str | None
    agent: str | None
    first_seen: datetime
    last: LastValue | None = Field(description="None when no sample has been stored")
