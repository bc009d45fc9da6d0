"""GET /api/v1/downtime/stops and /pareto against real PostgreSQL: clipping, filters,
classification (planned, category, micro-stops) and MTBF/MTTR."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.errors import NAIVE_TIMESTAMP
from tests.api.helpers import insert_asset as _asset

Headers = dict[str, dict[str, str]]
T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
END = T0 + timedelta(minutes=60)


def _m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# Machine 1, minutes from T0: running -10..10, fault(jam) 10..15, running 15..40, idle (no
# reason) 40..42, running 42..50, fault(jam) 50..70, running from 70 (open); and a fault
# -30..-10 before the range. Machine 2: running 0..30, blocked from 30 (open).
M1 = [
    (-30, -10, "fault", "jam"), (-10, 10, "running", None), (10, 15, "fault", "jam"),
    (15, 40, "running", None), (40, 42, "idle", None), (42, 50, "running", None),
    (50, 70, "fault", "jam"), (70, None, "running", None),
]  # fmt: skip
M2 = [(0, 30, "running", None), (30, None, "blocked", "downstream full")]


@pytest.fixture
def line(db_session: Session) -> dict[str, Any]:
    """A line with two machines and the intervals above."""
    site = _asset(db_session, name=f"site-{uuid.uuid4().hex[:8]}", level="site", parent=None)
    area = _asset(db_session, name="pack", level="area", parent=site)
    ln = _asset(db_session, name="line_1", level="line", parent=area)
    machines = [_asset(db_session, name=n, level="machine", parent=ln) for n in ("m1", "m2")]
    rows = [
        {"a": m["id"], "s": _m(s), "e": None if e is None else _m(e), "st": st, "r": r}
        for m, intervals in zip(machines, (M1, M2), strict=True)
        for s, e, st, r in intervals
    ]
    db_session.execute(
        text(
            "INSERT INTO state_intervals (asset_id, start_time, end_time, state, reason)"
            " VALUES (:a, :s, :e, :st, :r)"
        ),
        rows,
    )
    db_session.commit()
    return {"line": ln, "m1": machines[0], "m2": machines[1]}


def _get(client: TestClient, headers: Headers, what: str, **params: Any) -> Any:
    params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
    response = client.get(f"/api/v1/downtime/{what}", params=params, headers=headers["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def _spans(body: Any) -> list[tuple[str, float, datetime, datetime]]:
    return [
        (
            s["state"],
            s["duration_s"],
            datetime.fromisoformat(s["start"]),
            datetime.fromisoformat(s["end"]),
        )
        for s in body["stops"]
    ]


def test_stops_clipped_to_the_range(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    body = _get(api_client, role_headers, "stops", asset_id=line["m1"]["id"], start=T0, end=END)
    assert _spans(body) == [
        ("fault", 300.0, _m(10), _m(15)),
        ("idle", 120.0, _m(40), _m(42)),
        ("fault", 600.0, _m(50), END),
    ]
    last = body["stops"][-1]
    assert datetime.fromisoformat(last["interval_end"]) == _m(70)
    assert body["truncated"] is False
    # Clipped at the start too: the first fault began before the range.
    body = _get(
        api_client, role_headers, "stops", asset_id=line["m1"]["id"], start=_m(12), end=_m(45)
    )
    assert _spans(body) == [("fault", 180.0, _m(12), _m(15)), ("idle", 120.0, _m(40), _m(42))]
    assert datetime.fromisoformat(body["stops"][0]["interval_start"]) == _m(10)


@pytest.mark.parametrize(
    ("filters", "durations"),
    [
        ({"state": "idle"}, [120.0]),
        ({"reason": "jam"}, [300.0, 600.0]),
        ({"min_duration_s": 301}, [600.0]),
        ({"state": "fault", "min_duration_s": 300}, [300.0, 600.0]),
        ({"limit": 1}, [300.0]),
    ],
)
def test_stop_filters(
    api_client: TestClient,
    role_headers: Headers,
    line: dict[str, Any],
    filters: dict[str, Any],
    durations: list[float],
) -> None:
    body = _get(
        api_client, role_headers, "stops", asset_id=line["m1"]["id"], start=T0, end=END, **filters
    )
    assert [s["duration_s"] for s in body["stops"]] == durations
    assert body["truncated"] is ("limit" in filters)


def test_pareto_mtbf_mttr_of_a_machine(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    m1 = line["m1"]["id"]
    body = _get(api_client, role_headers, "pareto", asset_id=m1, start=T0, end=END)
    assert [(e["key"], e["count"], e["duration_s"]) for e in body["entries"]] == [
        ("jam", 2, 900.0),
        (None, 1, 120.0),
    ]
    # run 10 + 25 + 8 min, down 5 + 2 + 10 min, 3 stops.
    assert (body["run_s"], body["down_s"], body["failures"]) == (2580.0, 1020.0, 3)
    assert body["mtbf_s"] == pytest.approx(860.0) and body["mttr_s"] == pytest.approx(340.0)
    quiet = _get(api_client, role_headers, "pareto", asset_id=m1, start=_m(16), end=_m(39))
    assert (quiet["entries"], quiet["failures"], quiet["run_s"]) == ([], 0, 23 * 60.0)
    assert quiet["mtbf_s"] is None and quiet["mttr_s"] is None


def test_line_covers_its_machines_and_open_stops(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    ln = line["line"]["id"]
    body = _get(api_client, role_headers, "pareto", asset_id=ln, start=T0, end=END, by="state")
    assert [(e["key"], e["count"], e["duration_s"]) for e in body["entries"]] == [
        ("blocked", 1, 1800.0),
        ("fault", 2, 900.0),
        ("idle", 1, 120.0),
    ]
    assert (body["run_s"], body["down_s"], body["failures"]) == (4380.0, 2820.0, 4)
    stops = _get(api_client, role_headers, "stops", asset_id=ln, start=T0, end=END)["stops"]
    blocked = [s for s in stops if s["state"] == "blocked"]
    assert len(stops) == 4 and blocked[0]["interval_end"] is None
    assert blocked[0]["path"] == line["m2"]["path"]


@pytest.mark.parametrize(
    ("params", "status", "field", "needle"),
    [
        ({"start": "2025-03-03T06:00:00", "end": END.isoformat()}, 422, "start", NAIVE_TIMESTAMP),
        ({"start": END.isoformat(), "end": T0.isoformat()}, 422, "end", "after start"),
        ({"start": "2023-01-01T00:00:00Z", "end": END.isoformat()}, 422, "start", "at most"),
        ({"start": T0.isoformat(), "end": END.isoformat(), "by": "shift"}, 422, "by", ""),
        ({"start": T0.isoformat(), "end": END.isoformat(), "planned": "maybe"}, 422, "planned", ""),
        (
            {"start": "0001-01-01T00:00:00+14:00", "end": "0001-01-02T00:00:00Z"},
            422,
            "start",
            "years",
        ),
    ],
)
def test_bad_input(
    api_client: TestClient,
    role_headers: Headers,
    line: dict[str, Any],
    params: dict[str, Any],
    status: int,
    field: str,
    needle: str,
) -> None:
    params = {"asset_id": line["m1"]["id"], **params}
    response = api_client.get(
        "/api/v1/downtime/pareto", params=params, headers=role_headers["viewer"]
    )
    assert response.status_code == status, response.text
    if status == 200:
        return
    error = response.json()["error"]
    assert error["field"] == field and needle in error["message"]


def test_unknown_asset_404_and_no_key_401(api_client: TestClient, role_headers: Headers) -> None:
    params: dict[str, Any] = {
        "asset_id": 2**31 - 2,
        "start": T0.isoformat(),
        "end": END.isoformat(),
    }
    for what in ("stops", "pareto"):
        url = f"/api/v1/downtime/{what}"
        response = api_client.get(url, params=params, headers=role_headers["viewer"])
        assert response.status_code == 404 and response.json()["error"]["field"] == "asset_id"
        assert api_client.get(url, params=params).status_code == 401


# --- classification: the reason tree, loss classes and micro-stops ------------------------

REASONS = [
    ("JAM", "jam", "mechanical", False),
    ("CHG", "changeover", "changeover", True),
    ("MAT", "no material", "material", False),
]
# Minutes from T0, with a 2-minute micro-stop threshold; the range is [0, 62).
CLASSIFIED = [
    (0, 10, "running", None), (10, 11, "fault", "JAM"), (11, 20, "running", None),
    (20, 30, "fault", "JAM"), (30, 40, "running", None), (40, 50, "fault", "CHG"),
    (50, 55, "running", None), (55, 58, "changeover", None), (58, 60, "running", None),
    (60, 65, "idle", "MAT"), (65, None, "running", None),
]  # fmt: skip
RANGE = {"start": T0, "end": _m(62)}


@pytest.fixture
def machine(db_session: Session) -> dict[str, Any]:
    """One machine with the intervals above, the reason tree and a micro-stop threshold."""
    db_session.execute(
        text(
            "INSERT INTO downtime_reasons (code, reason, category, planned)"
            " VALUES (:c, :r, :cat, :p) ON CONFLICT (code) DO NOTHING"
        ),
        [{"c": c, "r": r, "cat": cat, "p": p} for c, r, cat, p in REASONS],
    )
    site = _asset(db_session, name=f"site-{uuid.uuid4().hex[:8]}", level="site", parent=None)
    area = _asset(db_session, name="a", level="area", parent=site)
    ln = _asset(db_session, name="l", level="line", parent=area)
    m = _asset(db_session, name="m", level="machine", parent=ln)
    db_session.execute(
        text(
            "INSERT INTO state_intervals (asset_id, start_time, end_time, state, code, reason)"
            " VALUES (:a, :s, :e, :st, :c, 'machine text')"
        ),
        [
            {"a": m["id"], "s": _m(s), "e": None if e is None else _m(e), "st": st, "c": c}
            for s, e, st, c in CLASSIFIED
        ],
    )
    db_session.execute(
        text("INSERT INTO machine_settings (asset_id, micro_stop_s) VALUES (:a, 120)"),
        {"a": m["id"]},
    )
    db_session.commit()
    return m


def test_stops_carry_their_classification(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any]
) -> None:
    stops = _get(api_client, role_headers, "stops", asset_id=machine["id"], **RANGE)["stops"]
    got = [
        (s["state"], s["code"], s["category"], s["planned"], s["micro_stop"], s["duration_s"])
        for s in stops
    ]
    assert got == [
        ("fault", "JAM", "mechanical", False, True, 60.0),
        ("fault", "JAM", "mechanical", False, False, 600.0),
        ("fault", "CHG", "changeover", True, False, 600.0),
        ("changeover", None, None, True, False, 180.0),
        # Clipped to 2 minutes, but the whole stop lasts 5: no micro-stop.
        ("idle", "MAT", "material", False, False, 120.0),
    ]
    assert [s["loss_class"] for s in stops] == [
        *["unplanned_down"] * 3,
        "planned_down",
        "unplanned_down",
    ]
    assert stops[0]["reason"] == "machine text" == stops[0]["machine_reason"]
    assert not any(s["assigned"] for s in stops)


@pytest.mark.parametrize(
    ("filters", "durations"),
    [
        ({"planned": "true"}, [600.0, 180.0]),
        ({"planned": "false"}, [60.0, 600.0, 120.0]),
        ({"micro": "true"}, [60.0]),
        ({"micro": "false"}, [600.0, 600.0, 180.0, 120.0]),
        ({"code": "JAM"}, [60.0, 600.0]),
        ({"category": "material"}, [120.0]),
        ({"max_duration_s": 120}, [60.0, 120.0]),
        ({"min_duration_s": 100, "max_duration_s": 599}, [180.0, 120.0]),
        ({"planned": "false", "micro": "false", "code": "JAM"}, [600.0]),
        ({"code": "NOPE"}, []),
    ],
)
def test_classification_filters(
    api_client: TestClient,
    role_headers: Headers,
    machine: dict[str, Any],
    filters: dict[str, Any],
    durations: list[float],
) -> None:
    body = _get(api_client, role_headers, "stops", asset_id=machine["id"], **RANGE, **filters)
    assert [s["duration_s"] for s in body["stops"]] == durations


def _entries(body: Any) -> list[tuple[str | None, int, float]]:
    return [(e["key"], e["count"], e["duration_s"]) for e in body["entries"]]


def test_pareto_unplanned_by_default_micro_stops_apart(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any]
) -> None:
    body = _get(api_client, role_headers, "pareto", asset_id=machine["id"], by="code", **RANGE)
    assert _entries(body) == [("JAM", 1, 600.0), ("MAT", 1, 120.0)]
    assert (body["micro_stops"], body["micro_stop_s"], body["failures"]) == (1, 60.0, 2)
    assert (body["down_s"], body["planned_down_s"]) == (720.0, 780.0)
    # Running 36 minutes plus the micro-stop: run time as OEE counts it.
    assert body["run_s"] == 2220.0
    assert (body["mtbf_s"], body["mttr_s"]) == (1110.0, 360.0)
    assert [e["cumulative_share"] for e in body["entries"]] == [pytest.approx(600 / 720), 1.0]


@pytest.mark.parametrize(
    ("params", "entries"),
    [
        (
            {"by": "category", "include_micro": "true"},
            [("mechanical", 2, 660.0), ("material", 1, 120.0)],
        ),
        ({"by": "category", "planned": "true"}, [("changeover", 1, 600.0), (None, 1, 180.0)]),
        (
            {"by": "state", "planned": "all"},
            [("fault", 2, 1200.0), ("changeover", 1, 180.0), ("idle", 1, 120.0)],
        ),
        ({"by": "reason"}, [("machine text", 2, 720.0)]),
    ],
)
def test_pareto_keys_and_scopes(
    api_client: TestClient,
    role_headers: Headers,
    machine: dict[str, Any],
    params: dict[str, Any],
    entries: list[tuple[str | None, int, float]],
) -> None:
    body = _get(api_client, role_headers, "pareto", asset_id=machine["id"], **RANGE, **params)
    assert _entries(body) == entries
    assert body["failures"] == 2  # MTBF and MTTR do not depend on what the entries show


def test_the_assets_own_loss_class_makes_a_stop_planned(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any], db_session: Session
) -> None:
    db_session.execute(
        text(
            "INSERT INTO state_loss_classes (asset_id, state, loss_class)"
            " VALUES (:a, 'idle', 'planned_down')"
        ),
        {"a": machine["id"]},
    )
    db_session.commit()
    body = _get(api_client, role_headers, "stops", asset_id=machine["id"], code="MAT", **RANGE)
    [idle] = body["stops"]
    assert (idle["planned"], idle["loss_class"]) == (True, "planned_down")
    # A state of class running is no stop at all.
    db_session.execute(
        text(
            "INSERT INTO state_loss_classes (asset_id, state, loss_class)"
            " VALUES (:a, 'changeover', 'running')"
        ),
        {"a": machine["id"]},
    )
    db_session.commit()
    body = _get(api_client, role_headers, "pareto", asset_id=machine["id"], **RANGE)
    assert body["run_s"] == 2220.0 + 180.0 and body["planned_down_s"] == 600.0 + 120.0
