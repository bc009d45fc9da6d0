"""GET /api/v1/oee against real PostgreSQL: the worked example through the whole path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.errors import NAIVE_TIMESTAMP

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
