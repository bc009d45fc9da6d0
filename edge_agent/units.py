"""Durations and sizes as people write them in config files: ``"90s"``, ``"2m"``, ``"64 MiB"``."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds from a number (seconds) or a string such as ``250ms``, ``1s``, ``5m``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '250ms' or '5s'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]
        seconds = float(m.group(1)) * scale
    else:
        raise ValueError(f"{value!r} is not a duration: use a number of seconds or '250ms', '5s'")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(
            "a duration cannot be negative"
            if seconds < 0
            else "a duration must be greater than zero"
        )
    return seconds


def parse_size(value: object, *, allow_zero: bool = False) -> int:
    """Bytes from an integer or a string such as ``256MB`` or ``1GiB``."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '256MB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ValueError(f"{value!r} is not a size: use bytes or '64MB', '1GiB'")
    if size < 0 or (size == 0 and not allow_zero):
        raise ValueError("a size must be greater than zero")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
