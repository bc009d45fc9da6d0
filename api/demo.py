"""OEE configuration of the simulated line, so ``linepulse demo`` shows real OEE figures.

``configure(session, line_path=...)`` gives the demo's site a time zone and three 8-hour
shifts a day, the simulator's products with each machine's ideal cycle time (60 / nominal
rate), its state codes as a downtime reason tree, a micro-stop threshold per machine, and
the packer as the line's output machine. It only fills what is missing: settings an
admin already made through the API are kept. The assets must exist (ingest creates them
when the gateway's birth arrives).
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from edge_agent.simulator.line import DEFAULT_LINE as LINE
from edge_agent.simulator.line import PRODUCTS, STATE_CODES, Code

# (reason, category, planned) of each simulator code that is not "running".
REASONS: dict[Code, tuple[str, str, bool]] = {
    Code.IDLE: ("idle", "waiting", False),
    Code.STARVED: ("starved", "line flow", False),
    Code.BLOCKED: ("blocked", "line flow", False),
    Code.CHANGEOVER: ("changeover", "changeover", True),
    Code.BREAK: ("break", "break", True),
    Code.PLANNED_MAINTENANCE: ("planned maintenance", "planned_maintenance", True),
    Code.FAULT: ("fault", "equipment", False),
    Code.JAM: ("jam", "material", False),
    Code.MOTOR_OVERLOAD: ("motor overload", "electrical", False),
    Code.LOW_AIR_PRESSURE: ("low air pressure", "utilities", False),
    Code.EMERGENCY_STOP: ("emergency stop", "safety", False),
    Code.DOOR_OPEN: ("door open", "safety", False),
    Code.SENSOR_FAULT: ("sensor fault", "electrical", False),
    Code.OVERTEMPERATURE: ("overtemperature", "equipment", False),
}
SHIFTS = (("early", time(6)), ("late", time(14)), ("night", time(22)))
MICRO_STOP_S = 10.0
OUTPUT_MACHINE = "packer"


class DemoSetupError(Exception):
    """The demo line cannot be configured (its assets are not there yet)."""


def configure(session: Session, *, line_path: str, timezone: str = "UTC") -> list[str]:
    """Fill in the missing OEE settings of the simulated line; returns what was done."""
    machines = _machines(session, line_path)
    site = line_path.split("/", 1)[0]
    done = [_site(session, site, timezone)]
    done.append(_reasons(session))
    done.append(_products(session, machines))
    done.append(_machine_settings(session, machines))
    session.commit()
    return [d for d in done if d]


def _exec(session: Session, sql: str, params: dict[str, Any] | list[dict[str, Any]]) -> int:
    result: Any = session.execute(text(sql), params)
    return int(result.rowcount or 0)


def _machines(session: Session, line_path: str) -> dict[str, int]:
    rows = session.execute(
        text("SELECT name, id FROM assets WHERE level = 'machine' AND path LIKE :p"),
        {"p": line_path.replace("%", r"\%") + "/%"},
    ).all()
    found = {str(name): int(asset_id) for name, asset_id in rows}
    missing = [m.name for m in LINE if m.name not in found]
    if missing:
        raise DemoSetupError(f"{line_path}: no assets yet for {', '.join(missing)}")
    return found


def _site(session: Session, site: str, timezone: str) -> str:
    site_id = session.execute(
        text("UPDATE assets SET timezone = coalesce(timezone, :tz) WHERE path = :p"
             " AND level = 'site' RETURNING id"),
        {"tz": timezone, "p": site},
    ).scalar_one()  # fmt: skip
    if session.execute(text("SELECT 1 FROM shifts WHERE site_id = :s"), {"s": site_id}).first():
        return ""
    rows = [
        {"s": site_id, "n": name, "d": day, "t": start, "len": timedelta(hours=8)}
        for day in range(7)
        for name, start in SHIFTS
    ]
    _exec(
        session,
        "INSERT INTO shifts (site_id, name, weekday, start_local, duration)"
        " VALUES (:s, :n, :d, :t, :len)",
        rows,
    )
    return f"site {site}: three 8-hour shifts every day ({timezone})"


def _reasons(session: Session) -> str:
    rows = [
        {"c": str(int(code)), "r": reason, "cat": category, "p": planned}
        for code, (reason, category, planned) in REASONS.items()
        if code in STATE_CODES
    ]
    added = _exec(
        session,
        "INSERT INTO downtime_reasons (code, reason, category, planned)"
        " VALUES (:c, :r, :cat, :p) ON CONFLICT (code) DO NOTHING",
        rows,
    )
    return f"{added} downtime reasons" if added else ""


def _products(session: Session, machines: dict[str, int]) -> str:
    slowest = min(m.rate for m in LINE)
    added = _exec(
        session,
        "INSERT INTO products (code, name, ideal_cycle_s) VALUES (:c, :c, :s)"
        " ON CONFLICT (code) DO NOTHING",
        [{"c": code, "s": 60.0 / slowest} for code in PRODUCTS],
    )
    _exec(
        session,
        "INSERT INTO product_cycle_times (product_id, asset_id, ideal_cycle_s)"
        " SELECT p.id, :a, :s FROM products p WHERE p.code = ANY(:codes)"
        " ON CONFLICT DO NOTHING",
        [{"a": machines[m.name], "s": 60.0 / m.rate, "codes": list(PRODUCTS)} for m in LINE],
    )
    return f"{added} products with per-machine ideal cycle times" if added else ""


def _machine_settings(session: Session, machines: dict[str, int]) -> str:
    added = _exec(
        session,
        "INSERT INTO machine_settings (asset_id, micro_stop_s, is_line_output)"
        " VALUES (:a, :m, :o) ON CONFLICT (asset_id) DO NOTHING",
        [
            {"a": asset_id, "m": MICRO_STOP_S, "o": name == OUTPUT_MACHINE}
            for name, asset_id in machines.items()
        ],
    )
    if not added:
        return ""
    return f"micro-stops under {MICRO_STOP_S:g} s; {OUTPUT_MACHINE} is the line's output"
