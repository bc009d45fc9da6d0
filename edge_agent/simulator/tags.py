"""The simulator's tag map: every OPC UA node and Modbus address, and what it carries.

Pure data, no protocol imports, so a config test can check addresses without servers.
The maps are the reference a controls engineer maps tags against; the module
docstrings of ``opcua_server`` and ``modbus_server`` print them as tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from edge_agent.simulator.line import DEFAULT_LINE, MachineSpec
from edge_agent.simulator.model import MachineSnapshot

NAMESPACE_URI: Final = "urn:linepulse:simulator"
ENDPOINT_PATH: Final = "/linepulse/sim/"
UNIT_ID: Final = 1
BLOCK_STRIDE: Final = 100  # holding/input registers of machine i start at i * 100
COIL_STRIDE: Final = 16  # coils of machine i start at i * 16
STRING_REGISTERS: Final = 8

Field = Literal[
    "state",
    "running",
    "faulted",
    "total",
    "reject",
    "speed",
    "temperature",
    "pressure",
    "product",
    "order",
    "reject_reason",  # one reject-reason counter; the point's ``reason`` says which
]
Table = Literal["coil", "discrete_input", "holding", "input"]


@dataclass(frozen=True, slots=True)
class OpcUaPoint:
    """One OPC UA variable: ``ns=<i>;s=<node>`` under Objects/Line/<Machine>."""

    node: str  # string identifier, e.g. "filler.total"
    machine: str
    field: Field
    datatype: UaType
    unit: str | None = None
    eu_range: tuple[float, float] | None = None  # the EURange property, for percent deadband
    reason: str | None = None  # of a reject_reason point

    @property
    def browse_name(self) -> str:
        """The variable's browse name under its machine object (unique there)."""
        return self.field if self.reason is None else f"reject.{self.reason}"


@dataclass(frozen=True, slots=True)
class ModbusPoint:
    """One Modbus value on unit 1; ``datatype`` and ``length`` use the gateway config's names."""

    table: Table
    address: int
    machine: str
    field: Field
    datatype: Literal["bool", "uint16", "uint32", "float32", "string"]
    length: int | None = None  # registers of a string
    reason: str | None = None  # of a reject_reason point

    @property
    def register_count(self) -> int:
        if self.table in ("coil", "discrete_input"):
            return 1
        if self.datatype == "string":
            return self.length or 1
        return 2 if self.datatype in ("uint32", "float32") else 1


_EU_RANGES: Final[dict[str, tuple[float, float]]] = {
    "speed": (0.0, 200.0),
    "temperature": (0.0, 120.0),
    "pressure": (0.0, 10.0),
}
UaType = Literal["Boolean", "UInt16", "UInt32", "Double", "String"]
_OPCUA_FIELDS: Final[tuple[tuple[Field, UaType, str | None], ...]] = (
    ("state", "UInt16", None),
    ("running", "Boolean", None),
    ("faulted", "Boolean", None),
    ("total", "UInt32", "parts"),  # UInt16 where the PLC counter is 16 bits
    ("reject", "UInt32", "parts"),
    ("speed", "Double", "parts/min"),
    ("temperature", "Double", "degC"),
    ("pressure", "Double", "bar"),
    ("product", "String", None),
    ("order", "String", None),
)


def opcua_points(line: tuple[MachineSpec, ...] = DEFAULT_LINE) -> dict[str, OpcUaPoint]:
    """Node string id → point, for every machine of ``line``."""
    points: dict[str, OpcUaPoint] = {}
    for spec in line:
        for field, datatype, unit in _OPCUA_FIELDS:
            if field == "total" and spec.total_bits == 16:
                datatype = "UInt16"
            node = f"{spec.name}.{field}"
            eu = _EU_RANGES.get(field)
            points[node] = OpcUaPoint(node, spec.name, field, datatype, unit, eu)
        reason_type: UaType = "UInt16" if spec.reason_bits == 16 else "UInt32"
        for reason in spec.reject_reasons:
            node = f"{spec.name}.reject.{reason}"
            points[node] = OpcUaPoint(
                node, spec.name, "reject_reason", reason_type, "parts", reason=reason
            )
    return points


def modbus_points(line: tuple[MachineSpec, ...] = DEFAULT_LINE) -> list[ModbusPoint]:
    """Every Modbus point of ``line``, holding registers first."""
    points: list[ModbusPoint] = []
    for i, spec in enumerate(line):
        n, base, bit = spec.name, i * BLOCK_STRIDE, i * COIL_STRIDE
        total = "uint16" if spec.total_bits == 16 else "uint32"
        points += [
            ModbusPoint("holding", base + 0, n, "state", "uint16"),
            ModbusPoint("holding", base + 1, n, "running", "uint16"),
            ModbusPoint("holding", base + 2, n, "total", total),  # type: ignore[arg-type]
            ModbusPoint("holding", base + 4, n, "reject", "uint32"),
            ModbusPoint("holding", base + 6, n, "speed", "float32"),
            ModbusPoint("holding", base + 8, n, "temperature", "float32"),
            ModbusPoint("holding", base + 10, n, "pressure", "float32"),
            ModbusPoint("holding", base + 20, n, "product", "string", STRING_REGISTERS),
            ModbusPoint("holding", base + 30, n, "order", "string", STRING_REGISTERS),
            ModbusPoint("input", base + 6, n, "speed", "float32"),
            ModbusPoint("input", base + 8, n, "temperature", "float32"),
            ModbusPoint("input", base + 10, n, "pressure", "float32"),
            ModbusPoint("coil", bit + 0, n, "running", "bool"),
            ModbusPoint("coil", bit + 1, n, "faulted", "bool"),
            ModbusPoint("discrete_input", bit + 0, n, "running", "bool"),
            ModbusPoint("discrete_input", bit + 1, n, "faulted", "bool"),
        ]
        # Reject-reason counters in the spare registers, two each (uint16: the second reads 0).
        width: Literal["uint16", "uint32"] = "uint16" if spec.reason_bits == 16 else "uint32"
        points += [
            ModbusPoint("holding", base + 12 + 2 * k, n, "reject_reason", width, reason=r)
            for k, r in enumerate(spec.reject_reasons)
        ]
    return points


OPCUA_POINTS: Final = opcua_points()
MODBUS_POINTS: Final = modbus_points()
MODBUS_BY_ADDRESS: Final = {(p.table, p.address): p for p in MODBUS_POINTS}


def value_of(
    snapshot: MachineSnapshot, field: Field, reason: str | None = None
) -> bool | int | float | str:
    """The value a point carries, from a machine snapshot."""
    if field == "reject_reason":
        return snapshot.reject_counter(reason or "")
    value: bool | int | float | str = getattr(snapshot, field)
    return value
