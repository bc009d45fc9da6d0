"""GET /api/v1/downtime/stops and /pareto against real PostgreSQL: clipping, filters, MTBF."""

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
        ({"start": T0.isoformat(), "end": END.isoformat(), "by": "code"}, 422, "by", ""),
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
