"""OEE configuration of products and machines: products with their ideal cycle times, the
downtime reason tree, what each machine state means for OEE, and per-machine settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.planning.types import (
    Category,
    Id,
    Label,
    LossClassName,
    ProductCode,
    ReasonCode,
    StateName,
)

IdealCycle = Annotated[
    float,
    Field(
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Ideal cycle time in seconds per part (at most a day)",
        examples=[1.0],
    ),
]


# --- products --------------------------------------------------------------------------


class ProductBase(BaseModel):
    """What every product shape shares."""

    name: Label | None = Field(default=None, examples=["Bottle 0.5 l"])
    ideal_cycle_s: IdealCycle | None = Field(
        default=None,
        description="The line default ideal cycle time (seconds per part); a machine's own"
        " cycle time (cycle-times) overrides it; null: none",
    )


class ProductCreate(ProductBase):
    """A new product; ``code`` is what gateways report with their counts."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"code": "SKU-1", "name": "Bottle 0.5 l", "ideal_cycle_s": 1.2}]
        },
    )

    code: ProductCode


class ProductUpdate(ProductBase):
    """Fields to change; ``null`` clears name or ideal_cycle_s. Counts match products by
    code: a new code no longer matches counts reported under the old one."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"ideal_cycle_s": 1.1}]}
    )

    code: ProductCode | None = None


class ProductPublic(ProductBase):
    """A product as the API shows it."""

    id: int
    code: str


class CycleTimeSet(BaseModel):
    """A machine's own ideal cycle time for a product."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"ideal_cycle_s": 1.0}]}
    )

    ideal_cycle_s: IdealCycle


class CycleTimePublic(BaseModel):
    """A product's ideal cycle time on one machine (overrides the product's default)."""

    product_id: int
    asset_id: int
    asset_path: str
    ideal_cycle_s: float


class ProductDetail(ProductPublic):
    """A product with its per-machine cycle times."""

    cycle_times: list[CycleTimePublic]


# --- downtime reasons ------------------------------------------------------------------


class ReasonBase(BaseModel):
    """What every reason shape shares."""

    reason: Label = Field(examples=["Jam at infeed"])
    category: Category
    planned: bool = Field(
        default=False, description="Planned stops leave planned production time (not a loss)"
    )


class ReasonCreate(ReasonBase):
    """A new reason: a machine stop code, its text, its category, planned or not."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"code": "E31", "reason": "Jam at infeed", "category": "mechanical"},
                {"code": "CIP", "reason": "Cleaning", "category": "cleaning", "planned": True},
            ]
        },
    )

    code: ReasonCode


class ReasonUpdate(BaseModel):
    """Fields to change. A new code carries the operators' assignments along; machines
    reporting the old code no longer match it."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"category": "electrical"}]}
    )

    code: ReasonCode | None = None
    reason: Label | None = None
    category: Category | None = None
    planned: bool | None = None


class ReasonPublic(ReasonBase):
    """A downtime reason."""

    code: str


class ReasonLeaf(BaseModel):
    """A reason under its category in the tree."""

    code: str
    reason: str
    planned: bool


class ReasonCategory(BaseModel):
    """A category with its reasons, as an operator picks them."""

    category: str
    planned: bool | None = Field(description="True/False when all its reasons agree; null: mixed")
    reasons: list[ReasonLeaf]


# --- state loss classes ----------------------------------------------------------------


class StateClassSet(BaseModel):
    """What a state means for OEE, for every machine (asset_id null) or for one machine."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"asset_id": None, "state": "idle", "loss_class": "unplanned_down"},
                {"asset_id": 7, "state": "setup", "loss_class": "planned_down"},
            ]
        },
    )

    asset_id: Id | None = Field(default=None, description="A machine; null: every machine")
    state: StateName
    loss_class: LossClassName


class StateClassPublic(BaseModel):
    """A stored mapping row."""

    id: int
    asset_id: int | None
    state: str
    loss_class: LossClassName


Source = Literal["default", "global", "asset"]


class StateClassEntry(BaseModel):
    """One state's effective loss class and the layer it comes from."""

    state: str
    loss_class: LossClassName
    source: Source = Field(
        description="default: built in; global: a row for every machine; asset: the machine's"
    )
    id: int | None = Field(description="The row giving it (None for a built-in default)")


class StateClassesPublic(BaseModel):
    """The effective mapping: built-in defaults < global rows < the machine's own rows.
    States in no layer count as time without state data (a loss of availability)."""

    asset_id: int | None
    entries: list[StateClassEntry]


# --- machine settings ------------------------------------------------------------------


class MachineSettingsSet(BaseModel):
    """A machine's OEE settings (both fields: PUT replaces them)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"micro_stop_s": 30, "is_line_output": True}]},
    )

    micro_stop_s: float = Field(
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Unplanned stops shorter than this are micro-stops (a performance loss);"
        " 0: none",
    )
    is_line_output: bool = Field(
        description="This machine's output is its line's (true clears it on the line's other"
        " machines)"
    )


class MachineSettingsPublic(BaseModel):
    """A machine's OEE settings (the defaults when none were set)."""

    asset_id: int
    path: str
    micro_stop_s: float
    is_line_output: bool
    stored: bool = Field(description="False: nothing set, these are the defaults")


class MachineSettingsChanged(MachineSettingsPublic):
    """The settings after a PUT, and the machines that lost is_line_output to this one."""

    cleared_line_output: list[int] = Field(
        description="Machines of the same line whose is_line_output this change cleared"
    )
