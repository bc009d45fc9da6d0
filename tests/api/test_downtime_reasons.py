"""Operators' reasons for stops: assign, split, delete, list; audited; kept across rebuilds."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.auth.keys import NewKey
from api.errors import NAIVE_TIMESTAMP
from ingest.intervals import StateRow, apply_state_events
from tests.api.helpers import insert_asset

Headers = dict[str, dict[str, str]]
T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
URL = "/api/v1/downtime"
REASONS = [
    ("R_JAM", "jam", "mechanical", False),
    ("R_WAIT", "waiting for maintenance", "organisational", False),
    ("R_PM", "planned maintenance", "maintenance", True),
    ("M_JAM", "jam reported by the PLC", "mechanical", False),
]
# Minutes from T0: the machine's own states (the fault reports code M_JAM).
EVENTS = [(0, "running", None), (10, "fault", "M_JAM"), (30, "running", None), (40, "idle", None)]
EVENTS += [(50, "running", None), (60, "fault", None)]  # open since minute 60


def at(minutes: float) -> datetime:
    """T0 + minutes."""
    return T0 + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    """T0 + minutes, ISO 8601 with offset."""
    return at(minutes).isoformat()


def _events(asset_id: int, events: Sequence[tuple[float, str, str | None]]) -> list[StateRow]:
    return [StateRow(asset_id, at(t), state, None, code) for t, state, code in events]


def _ingest(url: str, rows: list[StateRow]) -> None:
    """Events stored the way ingest stores them (intervals rebuilt where late ones land)."""
    with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        apply_state_events(cur, rows)


@pytest.fixture(scope="module")
def reason_tree(db_session: Session) -> None:
    """The codes the tests use."""
    db_session.execute(
        text(
            "INSERT INTO downtime_reasons (code, reason, category, planned)"
            " VALUES (:c, :r, :cat, :p)"
        ),
        [{"c": c, "r": r, "cat": cat, "p": p} for c, r, cat, p in REASONS],
    )
    db_session.commit()


@pytest.fixture
def machine(db_session: Session, api_database_url: str, reason_tree: None) -> dict[str, Any]:
    """A fresh machine whose intervals come from the events above, through ingest's code."""
    site = insert_asset(db_session, name=f"s-{uuid.uuid4().hex[:8]}", level="site", parent=None)
    area = insert_asset(db_session, name="a", level="area", parent=site)
    ln = insert_asset(db_session, name="l", level="line", parent=area)
    m = insert_asset(db_session, name="m", level="machine", parent=ln)
    db_session.commit()
    _ingest(api_database_url, _events(m["id"], EVENTS))
    return m


def _assign(
    client: TestClient, headers: Headers, asset_id: int, start: float, end: float, code: str,
    role: str = "operator", extra: dict[str, Any] | None = None,
) -> Any:  # fmt: skip
    body = {"asset_id": asset_id, "start": iso(start), "end": iso(end), "code": code}
    body |= extra or {}
    return client.post(f"{URL}/stops/reason", json=body, headers=headers[role])


def _stops(client: TestClient, headers: Headers, asset_id: int, **params: Any) -> list[Any]:
    params = {"asset_id": asset_id, "start": iso(0), "end": iso(70), **params}
    response = client.get(f"{URL}/stops", params=params, headers=headers["viewer"])
    assert response.status_code == 200, response.text
    return list(response.json()["stops"])


def _spans(stops: list[Any]) -> list[tuple[float, float, str | None, bool]]:
    def minutes(value: str) -> float:
        return (datetime.fromisoformat(value) - T0) / timedelta(minutes=1)

    return [(minutes(s["start"]), minutes(s["end"]), s["code"], s["assigned"]) for s in stops]


def _audit(db_session: Session, entity_id: object) -> list[tuple[str, Any, Any, int]]:
    rows = db_session.execute(
        text(
            "SELECT action, before, after, actor_key FROM audit_log"
            " WHERE entity = 'stop_reason' AND entity_id = :id ORDER BY id"
        ),
        {"id": str(entity_id)},
    ).all()
    db_session.commit()
    return [tuple(r) for r in rows]


def test_assign_then_stops_and_pareto_show_it(
    api_client: TestClient,
    role_headers: Headers,
    machine: dict[str, Any],
    db_session: Session,
    api_keys: dict[str, NewKey],
) -> None:
    response = _assign(
        api_client, role_headers, machine["id"], 40, 50, "R_WAIT", extra={"note": "no fitter"}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["code"], created["reason"], created["category"], created["planned"]) == (
        "R_WAIT", "waiting for maintenance", "organisational", False,
    )  # fmt: skip
    assert created["created_by_name"] == "test-operator" and created["note"] == "no fitter"
    stops = _stops(api_client, role_headers, machine["id"])
    idle = next(s for s in stops if s["state"] == "idle")
    assert (idle["code"], idle["category"], idle["assigned"]) == ("R_WAIT", "organisational", True)
    assert idle["assignment_id"] == created["id"] and idle["machine_code"] is None
    params = {"asset_id": machine["id"], "start": iso(0), "end": iso(60), "by": "category"}
    pareto = api_client.get(f"{URL}/pareto", params=params, headers=role_headers["viewer"]).json()
    assert [(e["key"], e["duration_s"]) for e in pareto["entries"]] == [
        ("mechanical", 1200.0),
        ("organisational", 600.0),
    ]
    [(action, before, after, actor)] = _audit(db_session, created["id"])
    assert (action, before, actor) == ("create", None, api_keys["operator"].key.id)
    assert after["code"] == "R_WAIT" and after["asset_id"] == machine["id"]


def test_a_planned_reason_takes_the_stop_out_of_failures(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any]
) -> None:
    assert _assign(api_client, role_headers, machine["id"], 10, 30, "R_PM").status_code == 201
    params = {"asset_id": machine["id"], "start": iso(0), "end": iso(60)}
    pareto = api_client.get(f"{URL}/pareto", params=params, headers=role_headers["viewer"]).json()
    assert (pareto["failures"], pareto["down_s"], pareto["planned_down_s"]) == (1, 600.0, 1200.0)


def test_a_newer_reason_replaces_the_overlapping_part(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any], db_session: Session
) -> None:
    first = _assign(api_client, role_headers, machine["id"], 10, 30, "R_JAM").json()
    second = _assign(api_client, role_headers, machine["id"], 15, 20, "R_WAIT", role="admin")
    assert second.status_code == 201, second.text
    assert _spans(_stops(api_client, role_headers, machine["id"], state="fault"))[:3] == [
        (10, 15, "R_JAM", True),
        (15, 20, "R_WAIT", True),
        (20, 30, "R_JAM", True),
    ]
    params = {"asset_id": machine["id"], "start": iso(0), "end": iso(70)}
    listed = api_client.get(f"{URL}/stops/reasons", params=params, headers=role_headers["viewer"])
    reasons = listed.json()["reasons"]
    assert [(r["code"], r["created_by_name"]) for r in reasons] == [
        ("R_JAM", "test-operator"),  # trimmed: the same row
        ("R_WAIT", "test-admin"),
        ("R_JAM", "test-operator"),  # the right-hand rest: a copy of the first
    ]
    assert reasons[0]["id"] == first["id"] and reasons[2]["id"] not in (first["id"],)
    assert [a for a, *_ in _audit(db_session, first["id"])] == ["create", "update"]
    assert [a for a, *_ in _audit(db_session, reasons[2]["id"])] == ["create"]
    # Covering all of it again deletes the rests.
    assert _assign(api_client, role_headers, machine["id"], 10, 30, "R_PM").status_code == 201
    assert [a for a, *_ in _audit(db_session, first["id"])] == ["create", "update", "delete"]
    listed = api_client.get(f"{URL}/stops/reasons", params=params, headers=role_headers["viewer"])
    assert [r["code"] for r in listed.json()["reasons"]] == ["R_PM"]


def test_split_gives_two_stops_with_different_reasons(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any]
) -> None:
    body = {
        "asset_id": machine["id"],
        "start": iso(10),
        "parts": [{"end": iso(14), "code": "R_JAM"}, {"end": iso(30), "code": "R_WAIT"}],
    }
    response = api_client.post(f"{URL}/stops/split", json=body, headers=role_headers["operator"])
    assert response.status_code == 201, response.text
    assert [r["code"] for r in response.json()] == ["R_JAM", "R_WAIT"]
    faults = _stops(api_client, role_headers, machine["id"], state="fault")
    assert _spans(faults)[:2] == [(10, 14, "R_JAM", True), (14, 30, "R_WAIT", True)]
    # Both parts belong to the one machine stop that began at minute 10.
    assert {s["interval_start"] for s in faults[:2]} == {faults[0]["interval_start"]}
    # Each part counts under its reason, but it is one failure for MTBF and MTTR (as in OEE).
    params = {"asset_id": machine["id"], "start": iso(0), "end": iso(35), "by": "reason"}
    pareto = api_client.get(f"{URL}/pareto", params=params, headers=role_headers["viewer"]).json()
    assert sorted((e["key"], e["count"]) for e in pareto["entries"]) == [
        ("jam", 1),
        ("waiting for maintenance", 1),
    ]
    assert (pareto["failures"], pareto["down_s"], pareto["mttr_s"]) == (1, 1200.0, 1200.0)
    # An open stop splits up to now.
    body = {
        "asset_id": machine["id"],
        "start": iso(60),
        "parts": [{"end": iso(65), "code": "R_JAM"}, {"end": iso(70), "code": "R_PM"}],
    }
    response = api_client.post(f"{URL}/stops/split", json=body, headers=role_headers["operator"])
    assert response.status_code == 201, response.text
    assert _spans(_stops(api_client, role_headers, machine["id"], start=iso(60)))[:3] == [
        (60, 65, "R_JAM", True),
        (65, 70, "R_PM", True),
    ]


def test_a_late_event_rebuilding_intervals_keeps_the_reason(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any], api_database_url: str
) -> None:
    assert _assign(api_client, role_headers, machine["id"], 12, 28, "R_JAM").status_code == 201
    # Late: the machine was really running again from minute 25 (the fault 10..30 shrinks).
    _ingest(api_database_url, _events(machine["id"], [(25, "running", None)]))
    faults = _stops(api_client, role_headers, machine["id"], end=iso(40))
    assert _spans(faults) == [(10, 12, "M_JAM", False), (12, 25, "R_JAM", True)]
    # Late the other way: a second fault code from minute 20 splits the interval in two;
    # the operator's reason still covers both parts.
    _ingest(api_database_url, _events(machine["id"], [(20, "fault", "M_OTHER")]))
    faults = _stops(api_client, role_headers, machine["id"], end=iso(40))
    assert _spans(faults) == [
        (10, 12, "M_JAM", False),
        (12, 20, "R_JAM", True),
        (20, 25, "R_JAM", True),
    ]
    assert faults[2]["machine_code"] == "M_OTHER"


def test_delete_brings_back_the_machines_reason(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any], db_session: Session
) -> None:
    created = _assign(api_client, role_headers, machine["id"], 10, 30, "R_WAIT").json()
    url = f"{URL}/stops/reason/{created['id']}"
    assert api_client.delete(url, headers=role_headers["viewer"]).status_code == 403
    assert api_client.delete(url, headers=role_headers["operator"]).status_code == 204
    assert _spans(_stops(api_client, role_headers, machine["id"], state="fault"))[0] == (
        10, 30, "M_JAM", False,
    )  # fmt: skip
    assert [a for a, *_ in _audit(db_session, created["id"])] == ["create", "delete"]
    again = api_client.delete(url, headers=role_headers["operator"])
    assert again.status_code == 404 and again.json()["error"]["field"] == "reason_id"


def test_roles(api_client: TestClient, role_headers: Headers, machine: dict[str, Any]) -> None:
    viewer = _assign(api_client, role_headers, machine["id"], 40, 50, "R_JAM", role="viewer")
    assert viewer.status_code == 403 and viewer.json()["error"]["code"] == "forbidden"
    body = {"asset_id": machine["id"], "start": iso(40), "end": iso(50), "code": "R_JAM"}
    assert api_client.post(f"{URL}/stops/reason", json=body).status_code == 401
    split = {
        "asset_id": machine["id"],
        "start": iso(40),
        "parts": [{"end": iso(50), "code": "R_JAM"}],
    }
    assert (
        api_client.post(
            f"{URL}/stops/split", json=split, headers=role_headers["viewer"]
        ).status_code
        == 403
    )
    params = {"asset_id": machine["id"], "start": iso(0), "end": iso(60)}
    assert api_client.get(f"{URL}/stops/reasons", params=params).status_code == 401
    assert (
        _assign(api_client, role_headers, machine["id"], 40, 50, "R_JAM", role="admin").status_code
        == 201
    )


@pytest.mark.parametrize(
    ("start", "end", "code", "extra", "field", "needle"),
    [
        (5, 15, "R_JAM", {}, "start", "was running"),  # starts in running time
        (25, 35, "R_JAM", {}, "end", "was running"),  # runs past the stop
        (10, 45, "R_JAM", {}, "end", "was running"),  # two stops with running between
        (-10, 5, "R_JAM", {}, "start", "no state data"),  # before the first event
        (10, 20, "NOPE", {}, "code", "not a code"),
        (20, 10, "R_JAM", {}, "end", "after start"),
        (20, 20, "R_JAM", {}, "end", "after start"),
        (60, 10**7, "R_JAM", {}, "end", "in the future"),
        (10, 20, "R_JAM", {"asset_id": 2**31 - 1}, "asset_id", "no asset"),
        (10, 20, "R_JAM", {"asset_id": 2**31}, "asset_id", ""),
        (10, 20, "R_JAM", {"start": "2025-03-03T06:10:00"}, "start", NAIVE_TIMESTAMP),
        (10, 20, "R_JAM", {"shift": "A"}, "shift", ""),
        (10, 20, "R_JAM", {"note": "x" * 2001}, "note", ""),
        (10, 20, "R_JAM", {"code": ""}, "code", ""),
        (10, 20, "R_JAM", {"start": "0001-01-01T00:00:00+14:00"}, "start", "years"),
        (10, 20, "R_JAM", {"start": "1980-01-01T00:00:00+14:00"}, "start", "at most"),
        (
            10,
            20,
            "R_JAM",
            {"start": "1980-01-01T00:00:00+14:00", "end": "1980-01-01T01:00:00+00:00"},
            "start",
            "no state data",
        ),
    ],
)
def test_bad_assignments_are_422(
    api_client: TestClient,
    role_headers: Headers,
    machine: dict[str, Any],
    start: float,
    end: float,
    code: str,
    extra: dict[str, Any],
    field: str,
    needle: str,
) -> None:
    response = _assign(api_client, role_headers, machine["id"], start, end, code, extra=extra)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and needle in error["message"], error


@pytest.mark.parametrize(
    ("start", "parts", "field", "needle"),
    [
        (11, [(20, "R_JAM")], "start", "the state then began at"),  # not the start of a stop
        (0, [(5, "R_JAM")], "start", "only a stop can be split"),  # running
        (10, [(20, "R_JAM"), (15, "R_WAIT")], "parts.1.end", "after part 0"),
        (10, [(10, "R_JAM")], "parts.0.end", "after the stop's start"),
        (10, [(20, "R_JAM"), (31, "R_WAIT")], "parts.1.end", "after the stop"),
        (10, [(20, "R_JAM"), (30, "NOPE")], "parts.1.code", "not a code"),
        (-100, [(20, "R_JAM")], "start", "no stop"),
        (10, [], "parts", ""),
    ],
)
def test_bad_splits_are_422(
    api_client: TestClient,
    role_headers: Headers,
    machine: dict[str, Any],
    start: float,
    parts: list[tuple[float, str]],
    field: str,
    needle: str,
) -> None:
    body = {
        "asset_id": machine["id"],
        "start": iso(start),
        "parts": [{"end": iso(e), "code": c} for e, c in parts],
    }
    response = api_client.post(f"{URL}/stops/split", json=body, headers=role_headers["operator"])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and needle in error["message"], error


def test_a_reason_over_part_of_a_stop_splits_it_there(
    api_client: TestClient, role_headers: Headers, machine: dict[str, Any]
) -> None:
    plain = _stops(api_client, role_headers, machine["id"], start=iso(5), end=iso(35))
    assert _spans(plain) == [(10, 30, "M_JAM", False)]
    assert plain[0]["category"] == "mechanical" and not plain[0]["planned"]
    created = _assign(api_client, role_headers, machine["id"], 12, 20, "R_PM").json()
    stops = _stops(api_client, role_headers, machine["id"], start=iso(5), end=iso(35))
    assert _spans(stops) == [
        (10, 12, "M_JAM", False), (12, 20, "R_PM", True), (20, 30, "M_JAM", False),
    ]  # fmt: skip
    assert [s["planned"] for s in stops] == [False, True, False]
    assigned = stops[1]
    assert (assigned["category"], assigned["reason"], assigned["assignment_id"]) == (
        "maintenance", "planned maintenance", created["id"],
    )  # fmt: skip
    whole = (assigned["interval_start"], assigned["interval_end"])
    assert tuple(map(datetime.fromisoformat, whole)) == (at(10), at(30))
    assert stops[0]["category"] == "mechanical" and stops[2]["code"] == "M_JAM"
