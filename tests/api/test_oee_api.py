"""GET /api/v1/oee against real PostgreSQL: the worked example through the whole path."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.calendar import Bucket, Shift, bucket_edges, shift_windows
from api.errors import NAIVE_TIMESTAMP
from api.oee import service
from api.oee.calc import (
    OeeInput,
    PlannedDowntime,
    ProductionCount,
    StateInterval,
    TimeRange,
    compute_buckets,
)
from api.oee.result import OeeResult, rollup
from ingest import migrate
from tests.api.helpers import insert_asset

Headers = dict[str, dict[str, str]]
URL = "/api/v1/oee"
BERLIN = ZoneInfo("Europe/Berlin")
DAY = datetime(2026, 3, 2, tzinfo=BERLIN)  # a Monday, CET
START, END = DAY + timedelta(hours=5), DAY + timedelta(hours=15)
# Local wall-clock (hour, minute) spans of the worked example's shift 06:00-14:00.
RUNNING = [((6, 0), (9, 0)), ((9, 30), (10, 0)), ((10, 47), (12, 0)), ((12, 30), (14, 0))]
STATES = [
    *[(a, b, "running") for a, b in RUNNING],
    ((9, 0), (9, 30), "idle"),  # in a break: not planned time
    ((10, 0), (10, 47), "faulted"),  # the 47 min down
    ((12, 0), (12, 30), "idle"),
]
BREAKS = [((9, 0), (9, 30)), ((12, 0), (12, 30))]
TOTAL, REJECT = 19_271, 423


def _at(hm: tuple[int, int]) -> datetime:
    return DAY + timedelta(hours=hm[0], minutes=hm[1])


def _insert_asset(s: Session, *, name: str, level: str, parent: dict[str, Any] | None) -> Any:
    path = name if parent is None else f"{parent['path']}/{name}"
    row = s.execute(
        text(
            "INSERT INTO assets (name, level, parent_id, path, timezone)"
            " VALUES (:n, :l, :p, :path, :tz) RETURNING id, path"
        ),
        {
            "n": name,
            "l": level,
            "p": None if parent is None else parent["id"],
            "path": path,
            "tz": "Europe/Berlin" if level == "site" else None,
        },
    )
    return dict(row.mappings().one())


def _counts(machine_id: int, product: str) -> list[dict[str, Any]]:
    """Two count rows in each running minute (summed per minute in SQL), TOTAL in all."""
    minutes = [
        _at(a) + timedelta(minutes=i)
        for a, b in RUNNING
        for i in range(int((_at(b) - _at(a)) / timedelta(minutes=1)))
    ]
    rows = []
    for i, minute in enumerate(minutes):
        total = TOTAL // len(minutes) + (i < TOTAL % len(minutes))
        reject = REJECT // len(minutes) + (i < REJECT % len(minutes))
        first = total // 2
        for sec, tot, rej in ((10, first, 0), (40, total - first, reject)):
            rows.append(
                {"a": machine_id, "t": minute + timedelta(seconds=sec), "tot": tot, "rej": rej}
                | {"g": tot - rej, "p": product}
            )
    return rows


@pytest.fixture(scope="module")
def plant(db_session: Session) -> dict[str, Any]:
    """A site with an 06:00-14:00 Monday shift, and a machine with the worked example."""
    s = db_session
    site = _insert_asset(s, name=f"oee-{uuid.uuid4().hex[:6]}", level="site", parent=None)
    area = _insert_asset(s, name="area", level="area", parent=site)
    line = _insert_asset(s, name="line", level="line", parent=area)
    machine = _insert_asset(s, name="filler", level="machine", parent=line)
    bare_line = _insert_asset(s, name="line2", level="line", parent=area)
    s.execute(
        text(
            "INSERT INTO shifts (site_id, name, weekday, start_local, duration)"
            " VALUES (:s, 'early', 0, '06:00', interval '8 hours')"
        ),
        {"s": site["id"]},
    )
    for a, b in BREAKS:
        s.execute(
            text(
                "INSERT INTO planned_downtime (asset_id, category, start_time, end_time)"
                " VALUES (:a, 'break', :s, :e)"
            ),
            {"a": machine["id"], "s": _at(a), "e": _at(b)},
        )
    for a, b, state in STATES:
        s.execute(
            text(
                "INSERT INTO state_intervals (asset_id, start_time, end_time, state)"
                " VALUES (:a, :s, :e, :st)"
            ),
            {"a": machine["id"], "s": _at(a), "e": _at(b), "st": state},
        )
    # The product's default is 2.0 s; the machine's own ideal cycle (1.0 s) must win.
    product = f"P-{uuid.uuid4().hex[:6]}"
    pid = s.execute(
        text("INSERT INTO products (code, ideal_cycle_s) VALUES (:c, 2.0) RETURNING id"),
        {"c": product},
    ).scalar_one()
    s.execute(
        text(
            "INSERT INTO product_cycle_times (product_id, asset_id, ideal_cycle_s)"
            " VALUES (:p, :a, 1.0)"
        ),
        {"p": pid, "a": machine["id"]},
    )
    s.execute(
        text(
            "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
            " VALUES (:a, :t, :tot, :g, :rej, :p)"
        ),
        _counts(machine["id"], product),
    )
    s.commit()
    return {"site": site, "line": line, "machine": machine, "bare_line": bare_line}


def _get(client: TestClient, headers: Headers, asset_id: int, **params: Any) -> Any:
    query: dict[str, Any] = {"asset_id": asset_id, "start": START.isoformat()}
    query |= {"end": END.isoformat()} | params
    return client.get(URL, params=query, headers=headers["viewer"])


def test_worked_example_through_the_whole_path(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    response = _get(api_client, role_headers, plant["machine"]["id"])
    assert response.status_code == 200, response.text
    body = response.json()
    whole = body["whole"]
    assert body["timezone"] == "Europe/Berlin" and body["schedule"] == "shifts"
    assert body["measured_asset_ids"] == [plant["machine"]["id"]] and body["buckets"] == []
    assert whole["calendar_s"] == 10 * 3600 and whole["scheduled_s"] == 480 * 60
    assert whole["planned_s"] == 420 * 60 and whole["down_s"] == 47 * 60
    assert (whole["total"], whole["reject"], whole["good"]) == (TOTAL, REJECT, TOTAL - REJECT)
    assert whole["availability"] * 100 == pytest.approx(88.81, abs=0.01)
    assert whole["performance"] * 100 == pytest.approx(86.11, abs=0.01)
    assert whole["quality"] * 100 == pytest.approx(97.80, abs=0.01)
    assert whole["oee"] * 100 == pytest.approx(74.79, abs=0.01)
    assert whole["teep"] == pytest.approx((TOTAL - REJECT) / (10 * 3600))
    assert whole["failures"] == 1 and whole["losses"]["availability_s"] == 47 * 60
    # The six big losses the data tells apart: 47 min of stops, 373 min run for 19,271 s of
    # ideal time, 423 rejects at 1 s.
    losses = whole["losses"]
    assert (losses["unplanned_stops_s"], losses["no_data_s"]) == (47 * 60, 0)
    assert losses["small_stops_s"] == 0
    assert losses["reduced_speed_s"] == pytest.approx(373 * 60 - TOTAL)
    assert losses["defects_s"] == pytest.approx(REJECT)
    # The machine ran through no break, so nothing is flagged as outside planned time.
    assert whole["flags"] == [] and whole["outside_total"] == 0


def test_hour_buckets_sum_to_the_whole(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    body = _get(api_client, role_headers, plant["machine"]["id"], bucket="hour").json()
    buckets, whole = body["buckets"], body["whole"]
    assert len(buckets) == 10
    assert buckets[0]["start"] == START.astimezone(UTC).isoformat().replace("+00:00", "Z")
    for key in ("calendar_s", "planned_s", "run_s", "down_s", "total", "good", "reject"):
        assert sum(b[key] for b in buckets) == pytest.approx(whole[key]), key
    good_ideal = sum(b["good_ideal_time_s"] for b in buckets)
    assert good_ideal / sum(b["planned_s"] for b in buckets) == pytest.approx(whole["oee"])
    assert buckets[0]["oee"] is None and buckets[0]["planned_s"] == 0  # 05:00, before the shift


def test_shift_buckets_follow_the_calendar(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    body = _get(api_client, role_headers, plant["machine"]["id"], bucket="shift").json()
    labels = [(b["shift"], b["calendar_s"]) for b in body["buckets"]]
    assert labels == [(None, 3600), ("early", 8 * 3600), (None, 3600)]
    assert body["buckets"][1]["oee"] == pytest.approx(body["whole"]["oee"])


def test_line_uses_its_output_machine_and_site_combines_lines(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    line = _get(api_client, role_headers, plant["line"]["id"])
    assert line.status_code == 422 and "is_line_output" in line.json()["error"]["message"]
    db_session.execute(
        text("INSERT INTO machine_settings (asset_id, is_line_output) VALUES (:a, true)"),
        {"a": plant["machine"]["id"]},
    )
    db_session.commit()
    line_body = _get(api_client, role_headers, plant["line"]["id"]).json()
    assert line_body["measured_asset_ids"] == [plant["machine"]["id"]]
    assert line_body["whole"]["oee"] * 100 == pytest.approx(74.79, abs=0.01)
    site = _get(api_client, role_headers, plant["site"]["id"])  # line2 has no output machine
    assert site.status_code == 422 and "line2" in site.json()["error"]["message"]


def test_site_without_shifts_schedules_the_whole_range(
    api_client: TestClient, role_headers: Headers, db_session: Session
) -> None:
    site = _insert_asset(
        db_session, name=f"noshift-{uuid.uuid4().hex[:6]}", level="site", parent=None
    )
    area = _insert_asset(db_session, name="a", level="area", parent=site)
    line = _insert_asset(db_session, name="l", level="line", parent=area)
    machine = _insert_asset(db_session, name="m", level="machine", parent=line)
    db_session.execute(
        text("INSERT INTO machine_settings (asset_id, is_line_output) VALUES (:a, true)"),
        {"a": machine["id"]},
    )
    db_session.commit()
    body = _get(api_client, role_headers, site["id"], bucket="day").json()
    assert body["schedule"] == "whole_range" and "no_shift_calendar" in body["whole"]["flags"]
    assert body["whole"]["planned_s"] == 10 * 3600 and body["whole"]["no_data_s"] == 10 * 3600
    assert body["whole"]["availability"] is None and body["whole"]["oee"] == 0
    assert "combined_lines" in body["whole"]["flags"] and len(body["buckets"]) == 1


def test_bad_requests_are_clear(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    mid = plant["machine"]["id"]
    naive = _get(api_client, role_headers, mid, start="2026-03-02T05:00:00")
    assert naive.status_code == 422 and NAIVE_TIMESTAMP in naive.json()["error"]["message"]
    long = _get(api_client, role_headers, mid, end=(START + timedelta(days=400)).isoformat())
    assert long.status_code == 422 and "at most 366 days" in long.json()["error"]["message"]
    backwards = _get(api_client, role_headers, mid, end=START.isoformat())
    assert backwards.status_code == 422 and backwards.json()["error"]["field"] == "end"
    bad_bucket = _get(api_client, role_headers, mid, bucket="month")
    assert bad_bucket.status_code == 422 and bad_bucket.json()["error"]["field"] == "bucket"
    missing = _get(api_client, role_headers, 2_000_000_000)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "asset_id"


def test_viewer_allowed_no_key_401(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    params = {
        "asset_id": plant["machine"]["id"],
        "start": START.isoformat(),
        "end": END.isoformat(),
    }
    assert api_client.get(URL, params=params, headers=role_headers["viewer"]).status_code == 200
    assert api_client.get(URL, params=params).status_code == 401


# ---------------------------------------------------------------------------------------
# The database path (api/oee/segments.py + repository sums + the hourly rollup) gives the
# very figures of the pure core (api.oee.calc.compute_buckets) on the same rows.

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")  # Kolkata: +05:30
DAYS = (date(2026, 3, 8), date(2026, 3, 29), date(2026, 6, 15), date(2026, 10, 25))
STATE_NAMES = ("running", "running", "running", "idle", "faulted", "changeover", "odd")
PLANNED_CODE, UNPLANNED_CODE = "OEE-T-PLN", "OEE-T-UNP"
FIGURES = (
    *("calendar_s", "scheduled_s", "planned_s", "run_s", "down_s", "micro_stop_s"),
    *("no_data_s", "outside_run_s", "total", "good", "reject", "outside_total"),
    *("micro_stops", "failures", "ideal_time_s", "good_ideal_time_s", "availability"),
    *("performance", "quality", "count_quality", "oee", "teep", "mtbf_s", "mttr_s"),
)
StateRow = tuple[int, int | None, str, str | None]  # start, end (None: open), state, code


@dataclass(frozen=True)
class Rows:
    """One example: a site's calendar and a machine's rows; times in s from the start."""

    zone: str
    start: datetime
    length_s: int
    now_s: int | None  # the window cut at now, or None (now is far after it)
    bucket: Bucket
    shifts: tuple[tuple[int, int, int], ...] | None  # (weekday, start minute, minutes)
    downtime: tuple[tuple[int, int], ...]
    states: tuple[StateRow, ...]
    counts: tuple[tuple[int, int, int, int], ...]  # time, good, reject, product (-1: none)
    cycles: tuple[float | None, ...]  # per product: the machine's ideal cycle time
    micro_stop_s: float
    assigned: tuple[tuple[int, int, bool], ...] = ()  # operators' reasons: start, s, planned

    def at(self, seconds: float) -> datetime:
        """The instant ``seconds`` after the window start."""
        return self.start + timedelta(seconds=seconds)


@st.composite
def _state_rows(draw: st.DrawFn, length_s: int) -> tuple[StateRow, ...]:
    """Contiguous intervals (a few gaps) from before the window to after it; codes planned
    or not; the last one may stay open."""
    t = -draw(st.integers(0, 7_200))
    states: list[StateRow] = []
    durations = st.sampled_from([1, 45, 59, 61, 600, 1_800, 7_200]) | st.integers(1, 14_400)
    while t < length_s + 3_600 and len(states) < 40:
        t += draw(st.sampled_from([0, 0, 0, 0, 30]))
        duration = draw(durations)
        code = draw(st.sampled_from([None, None, PLANNED_CODE, UNPLANNED_CODE]))
        states.append((t, t + duration, draw(st.sampled_from(STATE_NAMES)), code))
        t += duration
    open_last: bool = draw(st.booleans())
    if states and open_last:
        states[-1] = (states[-1][0], None, states[-1][2], states[-1][3])
    return tuple(states)


@st.composite
def _rows(draw: st.DrawFn) -> Rows:
    zone = draw(st.sampled_from(ZONES))
    day = datetime.combine(draw(st.sampled_from(DAYS)), datetime.min.time(), ZoneInfo(zone))
    start = day.astimezone(UTC) + timedelta(seconds=draw(st.integers(-43_200, 129_600)))
    length_s = draw(st.sampled_from([3_600, 86_400, 3 * 86_400]) | st.integers(60, 3 * 86_400))
    states = draw(_state_rows(length_s))
    product = st.integers(-1, 2)
    when = st.integers(-3_600, length_s + 3_600) | st.integers(0, length_s // 60).map(
        lambda m: m * 60
    )
    counts = draw(
        st.lists(st.tuples(when, st.integers(0, 500), st.integers(0, 20), product), max_size=60)
    )
    return Rows(
        zone=zone,
        start=start,
        length_s=length_s,
        now_s=draw(st.none() | st.integers(0, length_s)),
        bucket=draw(st.sampled_from(get_args(Bucket))),
        shifts=draw(
            st.none()
            | st.lists(
                st.tuples(
                    st.integers(0, 6),
                    st.integers(0, 95).map(lambda q: q * 15),
                    st.integers(30, 1_440),
                ),
                min_size=1,
                max_size=3,
            ).map(tuple)
        ),
        downtime=tuple(
            draw(
                st.lists(st.tuples(st.integers(-600, length_s), st.integers(60, 7_200)), max_size=3)
            )
        ),
        states=states,
        counts=tuple(counts),
        cycles=tuple(
            draw(
                st.lists(
                    st.none() | st.floats(0.1, 9.0).map(lambda v: round(v, 3)),
                    min_size=3,
                    max_size=3,
                )
            )
        ),
        micro_stop_s=draw(st.sampled_from([0.0, 60.0, 120.5])),
        assigned=draw(_assignments(length_s)),
    )


@st.composite
def _assignments(draw: st.DrawFn, length_s: int) -> tuple[tuple[int, int, bool], ...]:
    """Operators' reasons (planned or not) over a few disjoint ranges, anywhere."""
    t, out = -3_600, []
    for _ in range(draw(st.integers(0, 3))):
        t += draw(st.integers(0, max(1, length_s // 2)))
        length = draw(st.integers(1, 7_200))
        out.append((t, length, draw(st.booleans())))
        t += length
    return tuple(out)


def _insert_rows(s: Session, rows: Rows) -> tuple[int, list[str]]:
    """The example's site, calendar, machine and rows; returns the machine id and products."""
    tag = uuid.uuid4().hex[:8]
    site_row = s.execute(
        text(
            "INSERT INTO assets (name, level, path, timezone) VALUES (:n, 'site', :n, :tz)"
            " RETURNING id, path"
        ),
        {"n": f"eq-{tag}", "tz": rows.zone},
    )
    site = dict(site_row.mappings().one())
    area = insert_asset(s, name="a", level="area", parent=site)
    line = insert_asset(s, name="l", level="line", parent=area)
    machine = insert_asset(s, name="m", level="machine", parent=line)
    for weekday, minute, minutes in rows.shifts or ():
        s.execute(
            text(
                "INSERT INTO shifts (site_id, name, weekday, start_local, duration) VALUES"
                " (:s, 'shift', :w, make_time(:m / 60, :m % 60, 0), make_interval(mins => :d))"
            ),
            {"s": site["id"], "w": weekday, "m": minute, "d": minutes},
        )
    for i, (a, length) in enumerate(rows.downtime):
        s.execute(
            text(
                "INSERT INTO planned_downtime (asset_id, category, start_time, end_time)"
                " VALUES (:a, 'break', :s, :e)"
            ),
            {"a": (machine, line)[i % 2]["id"], "s": rows.at(a), "e": rows.at(a + length)},
        )
    s.execute(
        text("INSERT INTO machine_settings (asset_id, micro_stop_s) VALUES (:a, :m)"),
        {"a": machine["id"], "m": rows.micro_stop_s},
    )
    if rows.states:
        s.execute(
            text(
                "INSERT INTO state_intervals (asset_id, start_time, end_time, state, code)"
                " VALUES (:a, :s, :e, :st, :c)"
            ),
            [
                {"a": machine["id"], "s": rows.at(a), "e": None if b is None else rows.at(b)}
                | {"st": state, "c": code}
                for a, b, state, code in rows.states
            ],
        )
    if rows.assigned:
        s.execute(
            text(
                "INSERT INTO stop_reasons (asset_id, start_time, end_time, code)"
                " VALUES (:a, :s, :e, :c)"
            ),
            [
                {"a": machine["id"], "s": rows.at(a), "e": rows.at(a + n)}
                | {"c": PLANNED_CODE if planned else UNPLANNED_CODE}
                for a, n, planned in rows.assigned
            ],
        )
    products = [f"EQ-{tag}-{i}" for i in range(len(rows.cycles))]
    for code, cycle in zip(products, rows.cycles, strict=True):
        s.execute(
            text("INSERT INTO products (code, ideal_cycle_s) VALUES (:c, :s)"),
            {"c": code, "s": cycle},
        )
    if rows.counts:
        s.execute(
            text(
                "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
                " VALUES (:a, :t, :tot, :g, :r, :p)"
            ),
            [
                {"a": machine["id"], "t": rows.at(t), "tot": g + r, "g": g, "r": r}
                | {"p": products[p] if p >= 0 else None}
                for t, g, r, p in rows.counts
            ],
        )
    s.commit()
    return int(machine["id"]), products


def _reference(rows: Rows, products: list[str], now: datetime) -> tuple[OeeResult, list[Any]]:
    """compute_buckets on the example's rows, counts at their minute (as the API reads them)."""
    end = rows.at(rows.length_s)
    tz = ZoneInfo(rows.zone)
    windows = None
    if rows.shifts is not None:
        shifts = [
            Shift("shift", w, time(m // 60, m % 60), timedelta(minutes=d))
            for w, m, d in rows.shifts
        ]
        windows = shift_windows(shifts, tz=tz, start=rows.start, end=end)
    counts = []
    for t, g, r, p in rows.counts:
        at = rows.at(t)
        if rows.start <= at < end:
            minute = max(at.replace(second=0, microsecond=0), rows.start)
            counts.append(ProductionCount(minute, g + r, g, r, products[p] if p >= 0 else None))
    states, planned_parts = _effective_states(rows)
    inp = OeeInput(
        window=TimeRange(rows.start, end),
        shifts=None if windows is None else [TimeRange(w.start, w.end) for w in windows],
        planned_downtime=[
            PlannedDowntime(rows.at(a), rows.at(a + n)) for a, n in (*rows.downtime, *planned_parts)
        ],
        states=states,
        counts=counts,
        ideal_cycle_s={p: c for p, c in zip(products, rows.cycles, strict=True) if c},
        micro_stop_s=rows.micro_stop_s,
        now=now,
    )
    edges = bucket_edges(rows.bucket, tz=tz, start=rows.start, end=end, windows=windows or [])
    buckets = compute_buckets(inp, edges)
    return rollup([b.result for b in buckets]), buckets


def _effective_states(rows: Rows) -> tuple[list[StateInterval], list[tuple[int, int]]]:
    """The example's states as the pure core takes them, with operators' reasons applied:
    a stop's planned time (its effective reason planned: the operator's where one covers it,
    else the machine's) becomes planned downtime over exactly that time (which is what a
    planned stop is to the core), the stop itself unplanned."""
    states, parts = [], []
    for a, b, state, code in rows.states:
        if not (a < rows.length_s and (b is None or b > 0)):  # what the API reads: overlapping
            continue
        at_b = None if b is None else rows.at(b)
        planned = code == PLANNED_CODE
        if state in ("running", "changeover") or not rows.assigned:
            states.append(StateInterval(rows.at(a), at_b, state, planned=planned))
            continue
        stop_end = b if b is not None else 10**8  # an open stop: past any window's end
        cover = [(max(a, x), min(stop_end, x + n), p) for x, n, p in rows.assigned]
        cover = [(x, y, p) for x, y, p in cover if x < y]
        parts += [(x, y - x) for x, y, p in cover if p]
        if planned:  # the machine's planned reason holds where no operator's covers it
            t = a
            for x, y, _ in sorted(cover):
                if x > t:
                    parts.append((t, x - t))
                t = max(t, y)
            if t < stop_end:
                parts.append((t, stop_end - t))
        states.append(StateInterval(rows.at(a), at_b, state, planned=False))
    return states, parts


def _same(got: dict[str, Any], want: OeeResult, where: str) -> None:
    expected = want.as_dict()
    for name in FIGURES:
        assert got[name] == expected[name], (where, name, got[name], expected[name])
    assert set(expected["flags"]) <= set(got["flags"]), (where, got["flags"], expected["flags"])


@pytest.fixture(scope="module")
def reasons(db_session: Session) -> None:
    """A planned and an unplanned downtime reason for the examples' state codes."""
    db_session.execute(
        text(
            "INSERT INTO downtime_reasons (code, reason, category, planned) VALUES"
            " (:p, 'planned stop', 'planned', true), (:u, 'jam', 'breakdown', false)"
            " ON CONFLICT (code) DO NOTHING"
        ),
        {"p": PLANNED_CODE, "u": UNPLANNED_CODE},
    )
    db_session.commit()


# Operators' reasons: half an hour of a stop the machine called planned is an unplanned jam;
# twenty minutes of an unplanned stop were a planned one (plus a reason over running time,
# which changes nothing).
_T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)
OPERATOR_UNPLANS = Rows(
    zone="UTC", start=_T0, length_s=7_200, now_s=None, bucket="hour", shifts=None,
    downtime=(), states=((0, 3_600, "faulted", PLANNED_CODE), (3_600, 7_200, "running", None)),
    counts=((4_000, 100, 2, 0),), cycles=(1.0, None, None), micro_stop_s=0.0,
    assigned=((900, 1_800, False),),
)  # fmt: skip
OPERATOR_PLANS = Rows(
    zone="UTC", start=_T0, length_s=7_200, now_s=None, bucket="hour", shifts=None,
    downtime=(), states=((0, 3_600, "idle", UNPLANNED_CODE), (3_600, 7_200, "running", None)),
    counts=((4_000, 100, 2, 0),), cycles=(1.0, None, None), micro_stop_s=0.0,
    assigned=((600, 1_200, True), (5_000, 60, True)),
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows())
@example(rows=OPERATOR_UNPLANS)
@example(rows=OPERATOR_PLANS)
def test_database_path_equals_the_pure_core(db_session: Session, reasons: None, rows: Rows) -> None:
    machine_id, products = _insert_rows(db_session, rows)
    now = rows.at(rows.now_s) if rows.now_s is not None else datetime.now(UTC)
    want_whole, want = _reference(rows, products, now)
    got = service.oee(
        db_session,
        asset_id=machine_id,
        start=rows.start,
        end=rows.at(rows.length_s),
        bucket=rows.bucket,
        max_range_days=366,
        now=now,
    )
    db_session.rollback()
    _same(got.whole.model_dump(), want_whole, "whole")
    if rows.bucket == "none":
        assert got.buckets == []
        return
    assert [(b.start, b.end) for b in got.buckets] == [(b.start, b.end) for b in want]
    for g, w in zip(got.buckets, want, strict=True):
        _same(g.model_dump(), w.result, f"bucket {w.start}")


# ---------------------------------------------------------------------------------------
# production_counts_1h stays the exact sum of production_counts (migration 8's triggers).

ROLLUP_CHECK = """
SELECT asset_id, bucket, product, sum(t), sum(g), sum(r), min(m), max(m),
       bit_or(1::bigint << m), (array_agg(t ORDER BY m))[1], (array_agg(g ORDER BY m))[1],
       (array_agg(r ORDER BY m))[1]
FROM (SELECT asset_id, date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
             product, extract(minute FROM time AT TIME ZONE 'UTC')::smallint AS m,
             sum(total) AS t, sum(good) AS g, sum(reject) AS r
      FROM production_counts GROUP BY 1, 2, 3, 4) per_minute
GROUP BY 1, 2, 3
"""
ROLLUP = (
    "SELECT asset_id, bucket, product, total, good, reject, first_minute, last_minute,"
    " minutes, first_total, first_good, first_reject FROM production_counts_1h"
)


def _rollup_matches(conn: psycopg.Connection[Any]) -> None:
    want = sorted(conn.execute(ROLLUP_CHECK).fetchall(), key=repr)
    got = sorted(conn.execute(ROLLUP).fetchall(), key=repr)
    assert got == want


def test_hourly_rollup_follows_every_change(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    t0 = datetime(2026, 3, 2, 6, tzinfo=UTC)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ids = [
            conn.execute(
                "INSERT INTO assets (name, level, path) VALUES (%s, 'machine', %s) RETURNING id",
                (name, name),
            ).fetchone()[0]  # type: ignore[index]
            for name in ("m1", "m2")
        ]
        rows = [
            (
                ids[i % 2],
                t0 + timedelta(seconds=37 * i),
                3,
                3 - i % 2,
                i % 2,
                ("A", None)[i % 3 == 0],
            )
            for i in range(400)
        ]
        conn.cursor().executemany(
            "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            rows[:100],
        )
        with conn.cursor().copy(
            "COPY production_counts (asset_id, time, total, good, reject, product) FROM STDIN"
        ) as copy:
            for row in rows[100:]:
                copy.write_row(row)
        _rollup_matches(conn)
        assert conn.execute("SELECT count(*) FROM production_counts_1h").fetchone() == (20,)
        # Late rows in an hour already summed (its first count at 07:01:03): in its first
        # minute, in an earlier one, in a later one; and in an hour of its own.
        for seconds in (3_710, 3_610, 5_400, -3_540):
            conn.execute(
                "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
                " VALUES (%s, %s, 5, 4, 1, NULL)",
                (ids[1], t0 + timedelta(seconds=seconds)),
            )
            _rollup_matches(conn)
        conn.execute(
            "UPDATE production_counts SET total = 9, good = 9, reject = 0 WHERE total = 3"
            " AND time < %s",
            (t0 + timedelta(hours=1),),
        )
        conn.execute(
            "UPDATE production_counts SET time = time + interval '3 hours'"
            " WHERE asset_id = %s AND time < %s",
            (ids[1], t0 + timedelta(minutes=30)),
        )
        conn.execute(
            "DELETE FROM production_counts WHERE product IS NULL AND time > %s",
            (t0 + timedelta(hours=2),),
        )
        _rollup_matches(conn)
        conn.execute("DELETE FROM assets WHERE id = %s", (ids[1],))  # cascades to its counts
        _rollup_matches(conn)
        conn.execute("TRUNCATE production_counts")
        assert conn.execute("SELECT count(*) FROM production_counts_1h").fetchone() == (0,)
