"""What the simulated line is: its machines, their state codes, and the products it makes.

State codes (the map a gateway config copies; see ``STATE_CODES``)::

     1 running              10 changeover (planned)      20 faulted / fault (generic)
     2 idle                 11 break (planned)           21 faulted / jam
     3 starved              12 planned maintenance       22 faulted / motor_overload
     4 blocked                                           23 faulted / low_air_pressure
                                                         24 faulted / emergency_stop
                                                         25 faulted / door_open
                                                         26 faulted / sensor_fault
                                                         27 faulted / overtemperature
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Literal

from edge_agent.errors import EdgeError

PRODUCTS: Final = ("SKU-1042", "SKU-1043", "SKU-2210", "SKU-3307")
MAX_STRING: Final = 16  # characters of a product or order: 8 Modbus registers
MAX_REASONS: Final = 4  # reject-reason counters a machine has room for (Modbus base+12..19)


class SimulatorError(EdgeError):
    """A simulator call or script asks for something the line does not have."""


class Code(IntEnum):
    """PLC state codes of every simulated machine."""

    RUNNING = 1
    IDLE = 2
    STARVED = 3
    BLOCKED = 4
    CHANGEOVER = 10
    BREAK = 11
    PLANNED_MAINTENANCE = 12
    FAULT = 20
    JAM = 21
    MOTOR_OVERLOAD = 22
    LOW_AIR_PRESSURE = 23
    EMERGENCY_STOP = 24
    DOOR_OPEN = 25
    SENSOR_FAULT = 26
    OVERTEMPERATURE = 27


# code -> (state, reason): the mapping a gateway's machine model should declare.
STATE_CODES: Final[Mapping[int, tuple[str, str | None]]] = {
    Code.RUNNING: ("running", None),
    Code.IDLE: ("idle", None),
    Code.STARVED: ("starved", None),
    Code.BLOCKED: ("blocked", None),
    Code.CHANGEOVER: ("changeover", None),
    Code.BREAK: ("break", None),
    Code.PLANNED_MAINTENANCE: ("planned_maintenance", None),
    Code.FAULT: ("faulted", "fault"),
    Code.JAM: ("faulted", "jam"),
    Code.MOTOR_OVERLOAD: ("faulted", "motor_overload"),
    Code.LOW_AIR_PRESSURE: ("faulted", "low_air_pressure"),
    Code.EMERGENCY_STOP: ("faulted", "emergency_stop"),
    Code.DOOR_OPEN: ("faulted", "door_open"),
    Code.SENSOR_FAULT: ("faulted", "sensor_fault"),
    Code.OVERTEMPERATURE: ("faulted", "overtemperature"),
}


def is_fault(code: int) -> bool:
    """Codes 20..29 are faults."""
    return 20 <= code <= 29


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """What a machine is: its rate, quality, counter width, analog set points and failure habits."""

    name: str
    rate: float  # parts a minute at nominal speed
    reject_ratio: float
    total_bits: Literal[16, 32] = 32
    temperature: float = 35.0  # degC while running
    pressure: float = 6.0  # bar, plant air
    mtbf: float = 900.0  # mean seconds between random faults
    faults: Mapping[int, float] = field(
        default_factory=lambda: {Code.JAM: 5, Code.FAULT: 1, Code.MOTOR_OVERLOAD: 1}
    )
    repair: tuple[float, float] = (15.0, 90.0)  # seconds a random fault lasts, min..max
    # Reject counters per reason: the share of rejects each one counts (the shares sum to at
    # most 1; the rest of the rejects have no reason counter), and their register width.
    reject_reasons: Mapping[str, float] = field(default_factory=dict)
    reason_bits: Literal[16, 32] = 32

    def __post_init__(self) -> None:
        shares = self.reject_reasons.values()
        if len(self.reject_reasons) > MAX_REASONS or any(s < 0 for s in shares) or sum(shares) > 1:
            raise SimulatorError(
                f"{self.name}: at most {MAX_REASONS} reject reasons with shares that sum to <= 1"
            )


DEFAULT_LINE: Final[tuple[MachineSpec, ...]] = (
    MachineSpec(
        "filler",
        rate=120.0,
        reject_ratio=0.012,
        total_bits=16,  # an old PLC: its counter wraps at 65536 every ~9 hours of running
        temperature=18.0,
        mtbf=700.0,
        faults={Code.JAM: 4, Code.LOW_AIR_PRESSURE: 2, Code.FAULT: 1, Code.EMERGENCY_STOP: 1},
        # a check weigher counts these two; the rest (spills, dropped bottles) has no counter
        reject_reasons={"underfill": 0.6, "overfill": 0.25},
    ),
    MachineSpec(
        "capper",
        rate=126.0,
        reject_ratio=0.004,
        temperature=38.0,
        mtbf=1100.0,
        reject_reasons={"cap_missing": 0.7, "cap_skewed": 0.3},
    ),
    MachineSpec(
        "labeler",
        rate=132.0,
        reject_ratio=0.008,
        temperature=45.0,
        mtbf=800.0,
        faults={Code.JAM: 5, Code.SENSOR_FAULT: 2, Code.OVERTEMPERATURE: 1},
        reject_reasons={"label_missing": 0.5, "label_skewed": 0.5},
        reason_bits=16,  # 16-bit registers: they wrap at 65536
    ),
    MachineSpec(
        "packer",
        rate=138.0,
        reject_ratio=0.002,
        temperature=32.0,
        mtbf=1000.0,
        faults={Code.JAM: 3, Code.DOOR_OPEN: 2, Code.MOTOR_OVERLOAD: 1},
    ),
)
