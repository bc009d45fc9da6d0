"""Pure register <-> value conversion for Modbus tags (no pymodbus, no I/O).

A Modbus register is 16 bits. Wider values span several registers, and devices disagree
on two orders, so both are configurable per tag:

- ``byte_order``: the order of the two bytes inside each register. ``big`` (high byte
  first) is the Modbus norm.
- ``word_order``: the order of the registers. ``big`` puts the most significant register
  first.

For a 32-bit value with bytes A B C D (A most significant) the four layouts are::

    ABCD  byte big,    word big      [0xAABB, 0xCCDD]
    BADC  byte little, word big      [0xBBAA, 0xDDCC]
    CDAB  byte big,    word little   [0xCCDD, 0xAABB]
    DCBA  byte little, word little   [0xDDCC, 0xBBAA]

Strings take ``length`` registers, two characters each, in register order (``word_order``
does not apply); ``byte_order`` little swaps the two characters of each register. Trailing
NULs and spaces are stripped on decode and NULs pad on encode.

Scale and offset apply to numeric types only: ``value = raw * scale + offset``. With the
defaults (1 and 0) integers stay ``int``; otherwise the result is a ``float``.

Every failure raises :class:`~edge_agent.errors.DecodeError`, whose message names the
datatype and the raw registers, so a poll loop can mark the one tag bad and go on.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final

from edge_agent.contract import Value
from edge_agent.errors import DecodeError

# struct format letter and register count of each fixed-width datatype
_FIXED: Final[dict[str, tuple[str, int]]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
_INT_RANGE: Final[dict[str, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
DATATYPES: Final = frozenset({"bool", "string", *_FIXED})
_ORDERS: Final = ("big", "little")
_MAX_STRING_REGISTERS: Final = 125  # one read request


def register_count(datatype: str, length: int | None = None) -> int:
    """Registers a value of ``datatype`` occupies (``length`` registers for a string)."""
    if datatype == "string":
        if length is None or isinstance(length, bool) or not 1 <= length <= _MAX_STRING_REGISTERS:
            raise DecodeError(
                f"a string needs a length of 1..{_MAX_STRING_REGISTERS} registers, got {length!r}"
            )
        return length
    if length is not None:
        raise DecodeError(f"length applies only to strings, not to {datatype}")
    if datatype == "bool":
        return 1
    if datatype not in _FIXED:
        raise DecodeError(f"unknown datatype {datatype!r}: use one of {sorted(DATATYPES)}")
    return _FIXED[datatype][1]


def _show(regs: Sequence[object]) -> str:
    """Registers as hex for error messages, cut short when long."""
    shown = [f"0x{r:04X}" if isinstance(r, int) and 0 <= r <= 0xFFFF else repr(r) for r in regs]
    if len(shown) > 16:
        shown = [*shown[:16], f"... ({len(regs)} registers)"]
    return "[" + ", ".join(shown) + "]"


def _check_orders(byte_order: str, word_order: str) -> None:
    if byte_order not in _ORDERS or word_order not in _ORDERS:
        raise DecodeError(
            f"byte_order {byte_order!r} and word_order {word_order!r} must be 'big' or 'little'"
        )


def _check_registers(regs: Sequence[int], datatype: str) -> None:
    for r in regs:
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 0xFFFF:
            raise DecodeError(
                f"{datatype}: register value {r!r} is not an integer in 0..65535 "
                f"(registers {_show(regs)})"
            )


def _pack(regs: Sequence[int], *, byte_order: str, word_order: str) -> bytes:
    """Registers to bytes, most significant first."""
    ordered = regs if word_order == "big" else regs[::-1]
    return struct.pack(f"{'>' if byte_order == 'big' else '<'}{len(ordered)}H", *ordered)


def _unpack(data: bytes, *, byte_order: str, word_order: str) -> list[int]:
    """Bytes (most significant first) to registers; the inverse of :func:`_pack`."""
    regs = list(struct.unpack(f"{'>' if byte_order == 'big' else '<'}{len(data) // 2}H", data))
    return regs if word_order == "big" else regs[::-1]


def decode_registers(
    regs: Sequence[int],
    *,
    datatype: str,
    byte_order: str = "big",
    word_order: str = "big",
    scale: float = 1.0,
    offset: float = 0.0,
) -> Value:
    """Decode the registers of one tag; raise DecodeError naming datatype and registers."""
    _check_orders(byte_order, word_order)
    if datatype == "string":
        expected = len(regs)
        register_count(datatype, expected)
    else:
        expected = register_count(datatype)
    if len(regs) != expected:
        raise DecodeError(
            f"{datatype} needs {expected} registers, got {len(regs)} (registers {_show(regs)})"
        )
    _check_registers(regs, datatype)
    if datatype == "bool":
        return regs[0] != 0
    if datatype == "string":
        return _decode_string(regs, byte_order=byte_order)
    fmt = _FIXED[datatype][0]
    raw = struct.unpack(">" + fmt, _pack(regs, byte_order=byte_order, word_order=word_order))[0]
    return _scaled(raw, datatype=datatype, regs=regs, scale=scale, offset=offset)


def _decode_string(regs: Sequence[int], *, byte_order: str) -> str:
    data = _pack(regs, byte_order=byte_order, word_order="big").rstrip(b"\x00 ")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecodeError(
            f"string: bytes {data!r} are not valid ASCII/UTF-8 ({err.reason} at byte "
            f"{err.start}; registers {_show(regs)})"
        ) from None


def _scaled(
    raw: float, *, datatype: str, regs: Sequence[int], scale: float, offset: float
) -> int | float:
    if not math.isfinite(raw):
        raise DecodeError(f"{datatype} {raw!r} is not a finite number (registers {_show(regs)})")
    if scale == 1 and offset == 0:
        return raw
    value = raw * scale + offset
    if not math.isfinite(value):
        raise DecodeError(
            f"{datatype} {raw!r} * scale {scale} + offset {offset} is not a finite number"
            f" (registers {_show(regs)})"
        )
    return float(value)


def encode_value(
    value: Value,
    *,
    datatype: str,
    byte_order: str = "big",
    word_order: str = "big",
    length: int | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[int]:
    """Registers that :func:`decode_registers` turns back into ``value`` (the exact inverse).

    Floats may be NaN or infinite here (a simulator needs to produce them); integers that
    do not fit the datatype, strings longer than ``length`` registers and wrong value types
    raise DecodeError.
    """
    _check_orders(byte_order, word_order)
    count = register_count(datatype, length)
    if datatype == "bool":
        if not isinstance(value, (bool, int)):
            raise DecodeError(f"bool: cannot encode {value!r}, expected True or False")
        return [1 if value else 0]
    if datatype == "string":
        return _encode_string(value, count=count, byte_order=byte_order)
    raw = _unscaled(value, datatype=datatype, scale=scale, offset=offset)
    try:
        data = struct.pack(">" + _FIXED[datatype][0], raw)
    except (struct.error, OverflowError) as err:
        raise DecodeError(f"{datatype}: cannot encode {value!r}: {err}") from None
    return _unpack(data, byte_order=byte_order, word_order=word_order)


def _encode_string(value: Value, *, count: int, byte_order: str) -> list[int]:
    if not isinstance(value, str):
        raise DecodeError(f"string: cannot encode {value!r}, expected a str")
    data = value.encode("utf-8")
    if len(data) > 2 * count:
        raise DecodeError(
            f"string: {value!r} is {len(data)} bytes, more than {count} registers hold"
        )
    return _unpack(data.ljust(2 * count, b"\x00"), byte_order=byte_order, word_order="big")


def _unscaled(value: Value, *, datatype: str, scale: float, offset: float) -> int | float:
    """The raw number that scales to ``value``; integers are rounded to the nearest."""
    if isinstance(value, str) or value is None:
        raise DecodeError(f"{datatype}: cannot encode {value!r}, expected a number")
    if scale == 0:
        raise DecodeError(f"{datatype}: scale 0 cannot be inverted")
    scaled = not (scale == 1 and offset == 0)
    raw: int | float = (value - offset) / scale if scaled else value
    if datatype.startswith("float"):
        return float(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw) or (not scaled and not raw.is_integer()):
            raise DecodeError(f"{datatype}: cannot encode {value!r}, expected an integer")
        raw = round(raw)
    low, high = _INT_RANGE[datatype]
    if not low <= raw <= high:
        raise DecodeError(f"{datatype}: {value!r} is outside {low}..{high}")
    return int(raw)
