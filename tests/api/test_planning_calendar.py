"""Shift calendars and planned downtime against real PostgreSQL, and the configuration made
through the planning API changing GET /api/v1/oee (the worked example end to end)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.db import INT4_MAX
from api.errors import NAIVE_TIMESTAMP
from tests.api.helpers import error_of as _error
from tests.api.helpers import ok as _ok
from tests.api.helpers import unique_name as _name

Headers = dict[str, dict[str, str]]
V1 = "/api/v1"
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600


def _audit_actions(session: Session, entity: str, entity_id: object) -> list[str]:
    session.rollback()  # a fresh snapshot
    rows = session.execute(
        text("SELECT action FROM audit_log WHERE entity = :e AND entity_id = :id ORDER BY id"),
        {"e": entity, "id": str(entity_id)},
    ).scalars()
    return list(rows)


def _utc(local: datetime) -> str:
    return local.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def plant(api_client: TestClient, role_headers: Headers) -> dict[str, dict[str, Any]]:
    """A Berlin site > area > line > machine, made through the assets API."""
    admin = role_headers["admin"]

    def make(**body: Any) -> dict[str, Any]:
        return dict(_ok(api_client.post(f"{V1}/assets", json=body, headers=admin), 201))

    site = make(name=_name("site"), level="site", timezone="Europe/Berlin")
    area = make(name="area", level="area", parent_id=site["id"])
    line = make(name="line", level="line", parent_id=area["id"])
    machine = make(name="filler", level="machine", parent_id=line["id"])
    return {"site": site, "area": area, "line": line, "machine": machine}


def _shift(client: TestClient, headers: Headers, site_id: int, **body: Any) -> dict[str, Any]:
    url = f"{V1}/sites/{site_id}/shifts"
    return dict(_ok(client.post(url, json=body, headers=headers["admin"]), 201))


# --- shifts ----------------------------------------------------------------------------


def test_shift_round_trip(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    site_id, admin = plant["site"]["id"], role_headers["admin"]
    early = _shift(
        api_client, role_headers, site_id,
        name="early", weekday="Monday", start_local="6:00", duration="PT8H",
    )  # fmt: skip
    assert early == {
        "id": early["id"], "site_id": site_id, "name": "early", "weekday": 0,
        "weekday_name": "monday", "start_local": "06:00:00", "duration": "PT8H",
        "duration_h": 8.0, "end_local": "14:00:00",
    }  # fmt: skip
    night = _shift(
        api_client, role_headers, site_id,
        name="night", weekday=4, start_local="22:00", duration=7.5,
    )  # fmt: skip
    assert night["duration"] == "PT7H30M" and night["end_local"] == "05:30:00"
    listed = _ok(api_client.get(f"{V1}/sites/{site_id}/shifts", headers=role_headers["viewer"]))
    assert [s["id"] for s in listed] == [early["id"], night["id"]]

    url = f"{V1}/shifts/{early['id']}"
    changed = _ok(
        api_client.patch(url, json={"start_local": "05:30", "weekday": "tue"}, headers=admin)
    )
    assert (changed["weekday"], changed["start_local"]) == (1, "05:30:00")
    assert _ok(api_client.get(url, headers=role_headers["viewer"])) == changed
    _error(api_client.patch(url, json={"duration": None}, headers=admin), 422, "duration")
    _ok(api_client.delete(url, headers=admin), 204)
    _error(api_client.get(url, headers=admin), 404, "shift_id")
    assert _audit_actions(db_session, "shift", early["id"]) == ["create", "update", "delete"]


def test_shift_name_and_weekday_are_unique_per_site(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    site_id = plant["site"]["id"]
    body = {"name": "early", "weekday": 0, "start_local": "06:00", "duration": 8}
    _shift(api_client, role_headers, site_id, **body)
    other = _shift(api_client, role_headers, site_id, **{**body, "weekday": 1})
    again = api_client.post(
        f"{V1}/sites/{site_id}/shifts", json=body, headers=role_headers["admin"]
    )
    assert "Mondays" in _error(again, 409, "name")["message"]
    moved = api_client.patch(
        f"{V1}/shifts/{other['id']}", json={"weekday": 0}, headers=role_headers["admin"]
    )
    _error(moved, 409, "name")


GOOD_SHIFT = {"name": "s", "weekday": 0, "start_local": "06:00", "duration": "PT8H"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"weekday": 9}, "weekday"),
        ({"weekday": -1}, "weekday"),
        ({"weekday": "funday"}, "weekday"),
        ({"weekday": "7"}, "weekday"),
        ({"weekday": True}, "weekday"),
        ({"duration": 0}, "duration"),
        ({"duration": 25}, "duration"),
        ({"duration": 1e308}, "duration"),
        ({"duration": "PT0S"}, "duration"),
        ({"duration": "PT24H1S"}, "duration"),
        ({"duration": "-PT1H"}, "duration"),
        ({"duration": "P99999999999D"}, "duration"),
        ({"duration": "eight hours"}, "duration"),
        ({"start_local": "25:00"}, "start_local"),
        ({"start_local": "06:00+01:00"}, "start_local"),
        ({"start_local": 3600}, "start_local"),
        ({"name": ""}, "name"),
        ({"name": "n" * 65}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_shifts_are_422_naming_the_field(
    api_client: TestClient,
    role_headers: Headers,
    plant: dict[str, Any],
    change: dict[str, Any],
    field: str,
) -> None:
    url = f"{V1}/sites/{plant['site']['id']}/shifts"
    response = api_client.post(url, json=GOOD_SHIFT | change, headers=role_headers["admin"])
    _error(response, 422, field)


def test_shifts_belong_to_sites(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    admin = role_headers["admin"]
    area = api_client.post(
        f"{V1}/sites/{plant['area']['id']}/shifts", json=GOOD_SHIFT, headers=admin
    )
    assert "site" in _error(area, 422, "site_id")["message"]
    gone = api_client.post(f"{V1}/sites/{INT4_MAX}/shifts", json=GOOD_SHIFT, headers=admin)
    _error(gone, 404, "site_id")
    huge = api_client.get(f"{V1}/sites/{INT4_MAX + 1}/shifts", headers=admin)
    _error(huge, 422, "site_id")
    # A full day is the longest shift.
    whole_day = _shift(
        api_client, role_headers, plant["site"]["id"], **GOOD_SHIFT | {"duration": "P1D"}
    )
    assert whole_day["duration_h"] == 24.0


# --- exceptions and the resolved calendar ---------------------------------------------


def test_exceptions_are_checked_and_listed(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    site_id, admin = plant["site"]["id"], role_headers["admin"]
    _shift(api_client, role_headers, site_id, **GOOD_SHIFT | {"name": "early"})
    url = f"{V1}/sites/{site_id}/shift-exceptions"

    def post(**body: Any) -> Any:
        return api_client.post(url, json=body, headers=admin)

    whole = _ok(post(date="2026-12-25", kind="holiday", note="Christmas"), 201)
    assert whole["shift_name"] is None and whole["duration"] is None
    one = _ok(post(date="2026-12-28", kind="holiday", shift_name="early"), 201)  # a Monday
    extra = _ok(
        post(date="2026-12-27", kind="extra", shift_name="sunday", start_local="08:00", duration=4),
        201,
    )
    assert extra["duration"] == "PT4H" and extra["start_local"] == "08:00:00"

    wrong_day = post(date="2026-12-29", kind="holiday", shift_name="early")  # a Tuesday
    assert "Tuesdays" in _error(wrong_day, 422, "shift_name")["message"]
    _error(post(date="2026-12-28", kind="holiday", start_local="06:00"), 422, "start_local")
    _error(post(date="2026-12-28", kind="extra", start_local="06:00"), 422, "duration")
    _error(post(date="2026-12-25", kind="holiday"), 409, "date")
    _error(post(date="2026-02-30", kind="holiday"), 422, "date")
    _error(post(date="0001-01-01", kind="holiday"), 422, "date")
    _error(post(date="2026-12-24", kind="vacation"), 422, "kind")

    viewer = role_headers["viewer"]
    listed = _ok(api_client.get(url, headers=viewer))
    assert [e["id"] for e in listed] == [whole["id"], extra["id"], one["id"]]
    window = {"since": "2026-12-26", "until": "2026-12-27"}
    assert [e["id"] for e in _ok(api_client.get(url, params=window, headers=viewer))] == [
        extra["id"]
    ]
    _ok(api_client.delete(f"{V1}/shift-exceptions/{one['id']}", headers=admin), 204)
    _error(api_client.delete(f"{V1}/shift-exceptions/{one['id']}", headers=admin), 404)
    assert _audit_actions(db_session, "shift_exception", one["id"]) == ["create", "delete"]


def test_calendar_resolves_dst_holidays_and_extras(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    site_id, admin = plant["site"]["id"], role_headers["admin"]
    _shift(
        api_client, role_headers, site_id, name="early", weekday=0, start_local="06:00", duration=8
    )
    _shift(
        api_client, role_headers, site_id, name="night", weekday=5, start_local="22:00", duration=8
    )
    exc = f"{V1}/sites/{site_id}/shift-exceptions"
    holiday = {"date": "2026-03-30", "kind": "holiday", "shift_name": "early"}
    _ok(api_client.post(exc, json=holiday, headers=admin), 201)
    extra = {"date": "2026-03-29", "kind": "extra", "shift_name": "sun", "start_local": "10:00",
             "duration": "PT4H"}  # fmt: skip
    _ok(api_client.post(exc, json=extra, headers=admin), 201)

    start, end = datetime(2026, 3, 23, tzinfo=BERLIN), datetime(2026, 4, 6, tzinfo=BERLIN)
    params = {"start": start.isoformat(), "end": end.isoformat()}
    body = _ok(
        api_client.get(
            f"{V1}/sites/{site_id}/calendar", params=params, headers=role_headers["viewer"]
        )
    )
    assert body["timezone"] == "Europe/Berlin" and body["flags"] == []
    got = [(w["name"], w["kind"], w["start"], w["duration_s"]) for w in body["windows"]]
    assert got == [
        ("early", "weekly", _utc(datetime(2026, 3, 23, 6, tzinfo=BERLIN)), 8 * HOUR),
        # The spring-forward night: 22:00 to 06:00 local is 7 real hours.
        ("night", "weekly", _utc(datetime(2026, 3, 28, 22, tzinfo=BERLIN)), 7 * HOUR),
        ("sun", "extra", _utc(datetime(2026, 3, 29, 10, tzinfo=BERLIN)), 4 * HOUR),
        ("night", "weekly", _utc(datetime(2026, 4, 4, 22, tzinfo=BERLIN)), 8 * HOUR),
    ]
    night = body["windows"][1]
    assert night["start_local"] == "2026-03-28T22:00:00+01:00"
    assert night["end_local"] == "2026-03-29T06:00:00+02:00" and night["weekday"] == 5
    assert [(w["name"], w["date"]) for w in body["cancelled"]] == [("early", "2026-03-30")]
    assert body["scheduled_s"] == (8 + 7 + 4 + 8) * HOUR

    # The fall-back night is 9 real hours; a window reaching into the range comes whole,
    # while scheduled_s counts only the part inside.
    start = datetime(2026, 10, 25, 0, tzinfo=BERLIN)
    params = {"start": start.isoformat(), "end": (start + timedelta(hours=12)).isoformat()}
    body = _ok(api_client.get(f"{V1}/sites/{site_id}/calendar", params=params, headers=admin))
    [fall] = body["windows"]
    assert fall["duration_s"] == 9 * HOUR and fall["start_local"] == "2026-10-24T22:00:00+02:00"
    assert body["scheduled_s"] == 7 * HOUR  # 00:00 CEST to 06:00 CET


def test_calendar_bad_ranges_and_sites(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    viewer, site_id = role_headers["viewer"], plant["site"]["id"]
    url = f"{V1}/sites/{site_id}/calendar"

    def get(start: str, end: str, target: str = url) -> Any:
        return api_client.get(target, params={"start": start, "end": end}, headers=viewer)

    assert _error(get("2026-01-01T00:00:00", "2026-01-02T00:00:00Z"), 422, "start")[
        "message"
    ].endswith(NAIVE_TIMESTAMP)
    _error(get("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"), 422, "end")
    assert (
        "400" in _error(get("2026-01-01T00:00:00Z", "2027-03-01T00:00:00Z"), 422, "end")["message"]
    )
    _error(get("9999-12-31T00:00:00-05:00", "9999-12-31T10:00:00-05:00"), 422, "start")
    _error(
        get("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", f"{V1}/sites/{INT4_MAX}/calendar"), 404
    )
    line = f"{V1}/sites/{plant['line']['id']}/calendar"
    _error(get("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", line), 422, "site_id")
    # A site without shifts or a zone says so instead of guessing quietly.
    bare = api_client.post(
        f"{V1}/assets", json={"name": _name("bare"), "level": "site"}, headers=role_headers["admin"]
    )
    target = f"{V1}/sites/{_ok(bare, 201)['id']}/calendar"
    body = _ok(get("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", target))
    assert body["flags"] == ["site_timezone_missing", "no_shift_calendar"]
    assert body["timezone"] == "UTC" and body["windows"] == [] and body["scheduled_s"] == 0


# --- planned downtime -----------------------------------------------------------------


def _downtime(client: TestClient, headers: Headers, **body: Any) -> dict[str, Any]:
    return dict(
        _ok(client.post(f"{V1}/planned-downtime", json=body, headers=headers["admin"]), 201)
    )


def test_planned_downtime_round_trip_and_inheritance(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    admin, viewer = role_headers["admin"], role_headers["viewer"]
    machine, line = plant["machine"], plant["line"]
    day = datetime(2026, 3, 2, tzinfo=BERLIN)
    noon, half_past = day + timedelta(hours=12), day + timedelta(hours=12.5)
    lunch = _downtime(
        api_client, role_headers, asset_id=line["id"], category="break",
        start=noon.isoformat(), end=half_past.isoformat(), note="Lunch",
    )  # fmt: skip
    assert lunch["asset_path"] == line["path"] and lunch["start"] == _utc(day + timedelta(hours=12))
    pm = _downtime(
        api_client, role_headers, asset_id=machine["id"], category="planned_maintenance",
        start=(day + timedelta(hours=8)).isoformat(), end=(day + timedelta(hours=9)).isoformat(),
    )  # fmt: skip
    params = {"asset_id": machine["id"], "start": day.isoformat(),
              "end": (day + timedelta(days=1)).isoformat()}  # fmt: skip
    listed = _ok(api_client.get(f"{V1}/planned-downtime", params=params, headers=viewer))
    assert [(e["id"], e["inherited"]) for e in listed["entries"]] == [
        (pm["id"], False), (lunch["id"], True),
    ]  # fmt: skip
    assert listed["truncated"] is False
    only = _ok(
        api_client.get(
            f"{V1}/planned-downtime",
            params=params | {"category": "break", "limit": 5},
            headers=viewer,
        )
    )
    assert [e["id"] for e in only["entries"]] == [lunch["id"]]
    first = _ok(
        api_client.get(f"{V1}/planned-downtime", params=params | {"limit": 1}, headers=viewer)
    )
    assert first["truncated"] is True and len(first["entries"]) == 1
    for_line = _ok(
        api_client.get(
            f"{V1}/planned-downtime", params=params | {"asset_id": line["id"]}, headers=viewer
        )
    )
    assert [e["id"] for e in for_line["entries"]] == [lunch["id"]]

    url = f"{V1}/planned-downtime/{pm['id']}"
    later = (day + timedelta(hours=10)).isoformat()
    changed = _ok(api_client.patch(url, json={"end": later, "note": "Bearings"}, headers=admin))
    assert changed["end"] == _utc(day + timedelta(hours=10)) and changed["note"] == "Bearings"
    cleared = _ok(api_client.patch(url, json={"note": None}, headers=admin))
    assert cleared["note"] is None
    moved = _ok(api_client.patch(url, json={"asset_id": line["id"]}, headers=admin))
    assert moved["asset_path"] == line["path"]
    _error(api_client.patch(url, json={"category": None}, headers=admin), 422, "category")
    backwards = api_client.patch(url, json={"end": day.isoformat()}, headers=admin)
    assert "after start" in _error(backwards, 422, "end")["message"]
    assert _ok(api_client.get(url, headers=viewer)) == moved
    _ok(api_client.delete(url, headers=admin), 204)
    _error(api_client.get(url, headers=viewer), 404, "downtime_id")
    assert _audit_actions(db_session, "planned_downtime", pm["id"]) == [
        "create", "update", "update", "update", "delete",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"category": "siesta"}, "category", None),
        ({"end": "2026-03-02T08:00:00+01:00"}, "end", "after start"),
        ({"end": "2026-04-03T08:00:00+01:00"}, "end", "31 days"),
        ({"start": "2026-03-02T08:00:00"}, "start", NAIVE_TIMESTAMP),
        ({"end": "9999-12-31T23:00:00-05:00"}, "end", "years"),
        ({"note": "n" * 2001}, "note", None),
        ({"asset_id": INT4_MAX + 1}, "asset_id", None),
        ({"asset_id": "seven"}, "asset_id", None),
    ],
)
def test_bad_planned_downtime_is_422_naming_the_field(
    api_client: TestClient,
    role_headers: Headers,
    plant: dict[str, Any],
    change: dict[str, Any],
    field: str,
    words: str | None,
) -> None:
    body = {"asset_id": plant["machine"]["id"], "category": "break",
            "start": "2026-03-02T08:00:00+01:00", "end": "2026-03-02T09:00:00+01:00"}  # fmt: skip
    response = api_client.post(
        f"{V1}/planned-downtime", json=body | change, headers=role_headers["admin"]
    )
    error = _error(response, 422, field)
    assert words is None or words in error["message"], error


def test_planned_downtime_assets(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    admin = role_headers["admin"]
    body = {"category": "break", "start": "2026-03-02T08:00:00Z", "end": "2026-03-02T09:00:00Z"}
    gone = api_client.post(
        f"{V1}/planned-downtime", json=body | {"asset_id": INT4_MAX}, headers=admin
    )
    _error(gone, 404, "asset_id")
    enterprise = _ok(
        api_client.post(
            f"{V1}/assets", json={"name": _name("ent"), "level": "enterprise"}, headers=admin
        ),
        201,
    )
    top = api_client.post(
        f"{V1}/planned-downtime", json=body | {"asset_id": enterprise["id"]}, headers=admin
    )
    _error(top, 422, "asset_id")
    params = {
        "asset_id": plant["site"]["id"],
        "start": "2026-01-01T00:00:00Z",
        "end": "2028-01-01T00:00:00Z",
    }
    too_long = api_client.get(
        f"{V1}/planned-downtime", params=params, headers=role_headers["viewer"]
    )
    assert "days" in _error(too_long, 422, "end")["message"]


# --- roles -----------------------------------------------------------------------------

WRITES = [
    ("post", "/sites/1/shifts", GOOD_SHIFT),
    ("patch", "/shifts/1", {"name": "x"}),
    ("delete", "/shifts/1", None),
    ("post", "/sites/1/shift-exceptions", {"date": "2026-12-25", "kind": "holiday"}),
    ("delete", "/shift-exceptions/1", None),
    ("post", "/planned-downtime", {"asset_id": 1, "category": "break",
                                   "start": "2026-03-02T08:00:00Z", "end": "2026-03-02T09:00:00Z"}),
    ("patch", "/planned-downtime/1", {"note": "x"}),
    ("delete", "/planned-downtime/1", None),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_calendar_writes_need_admin(
    api_client: TestClient,
    role_headers: Headers,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    for role in ("viewer", "operator"):
        response = api_client.request(method, V1 + path, headers=role_headers[role], **kwargs)
        assert "admin" in _error(response, 403)["message"]
    _error(api_client.request(method, V1 + path, **kwargs), 401)


def test_calendar_reads_need_a_key(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    site_id = plant["site"]["id"]
    for path in (f"/sites/{site_id}/shifts", f"/sites/{site_id}/shift-exceptions"):
        _ok(api_client.get(V1 + path, headers=role_headers["viewer"]))
        _error(api_client.get(V1 + path), 401)


# --- configuration through the API drives OEE -----------------------------------------

DAY = datetime(2026, 3, 2, tzinfo=BERLIN)  # a Monday
RUNNING = [((6, 0), (9, 0)), ((9, 30), (10, 0)), ((10, 47), (12, 0)), ((12, 30), (14, 0))]
STATES = [*[(a, b, "running") for a, b in RUNNING], ((9, 0), (9, 30), "idle"),
          ((10, 0), (10, 47), "faulted"), ((12, 0), (12, 30), "idle")]  # fmt: skip
TOTAL, REJECT = 19_271, 423


def _at(hm: tuple[int, int]) -> datetime:
    return DAY + timedelta(hours=hm[0], minutes=hm[1])


def _insert_production(session: Session, machine_id: int, product: str) -> None:
    """The worked example's states, and its counts spread over the running minutes."""
    for a, b, state in STATES:
        session.execute(
            text(
                "INSERT INTO state_intervals (asset_id, start_time, end_time, state)"
                " VALUES (:a, :s, :e, :st)"
            ),
            {"a": machine_id, "s": _at(a), "e": _at(b), "st": state},
        )
    minutes = [
        _at(a) + timedelta(minutes=i)
        for a, b in RUNNING
        for i in range(int((_at(b) - _at(a)) / timedelta(minutes=1)))
    ]
    rows = []
    for i, minute in enumerate(minutes):
        total = TOTAL // len(minutes) + (i < TOTAL % len(minutes))
        reject = REJECT // len(minutes) + (i < REJECT % len(minutes))
        rows.append({"a": machine_id, "t": minute + timedelta(seconds=30), "tot": total,
                     "g": total - reject, "rej": reject, "p": product})  # fmt: skip
    session.execute(
        text(
            "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
            " VALUES (:a, :t, :tot, :g, :rej, :p)"
        ),
        rows,
    )
    session.commit()


def _oee(client: TestClient, headers: Headers, asset_id: int) -> Any:
    params: dict[str, Any] = {"asset_id": asset_id, "start": (DAY + timedelta(hours=5)).isoformat(),
              "end": (DAY + timedelta(hours=15)).isoformat()}  # fmt: skip
    return client.get(f"{V1}/oee", params=params, headers=headers["viewer"])


def test_configuration_made_here_drives_oee(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    admin = role_headers["admin"]
    site, line, machine = plant["site"], plant["line"], plant["machine"]
    _shift(api_client, role_headers, site["id"], name="early", weekday="monday",
           start_local="06:00", duration="PT8H")  # fmt: skip
    # One break on the line (inherited by its machine), one on the machine itself.
    for asset, (a, b) in ((line, ((9, 0), (9, 30))), (machine, ((12, 0), (12, 30)))):
        _downtime(api_client, role_headers, asset_id=asset["id"], category="break",
                  start=_at(a).isoformat(), end=_at(b).isoformat())  # fmt: skip
    code = _name("SKU")
    product = _ok(
        api_client.post(f"{V1}/products", json={"code": code, "ideal_cycle_s": 2.0}, headers=admin),
        201,
    )
    # The machine's own ideal cycle time (1.0 s) must win over the product's default.
    cycle = f"{V1}/products/{product['id']}/cycle-times/{machine['id']}"
    _ok(api_client.put(cycle, json={"ideal_cycle_s": 1.0}, headers=admin))
    _insert_production(db_session, machine["id"], code)

    whole = _ok(_oee(api_client, role_headers, machine["id"]))["whole"]
    assert whole["scheduled_s"] == 480 * 60 and whole["planned_s"] == 420 * 60
    assert whole["availability"] * 100 == pytest.approx(88.81, abs=0.01)
    assert whole["performance"] * 100 == pytest.approx(86.11, abs=0.01)
    assert whole["quality"] * 100 == pytest.approx(97.80, abs=0.01)
    assert whole["oee"] * 100 == pytest.approx(74.79, abs=0.01)

    # A line's OEE is its output machine's: refused until one is flagged here.
    _error(_oee(api_client, role_headers, line["id"]), 422, "asset_id")
    settings = f"{V1}/machines/{machine['id']}/settings"
    _ok(api_client.put(settings, json={"micro_stop_s": 0, "is_line_output": True}, headers=admin))
    line_oee = _ok(_oee(api_client, role_headers, line["id"]))
    assert line_oee["measured_asset_ids"] == [machine["id"]]
    assert line_oee["whole"]["oee"] == pytest.approx(whole["oee"])

    # Declaring the fault planned for this machine takes its 47 minutes out of planned time.
    row = _ok(
        api_client.put(
            f"{V1}/state-classes",
            json={"asset_id": machine["id"], "state": "faulted", "loss_class": "planned_down"},
            headers=admin,
        )
    )
    planned = _ok(_oee(api_client, role_headers, machine["id"]))["whole"]
    assert planned["availability"] == pytest.approx(1.0) and planned["planned_s"] == 373 * 60
    _ok(api_client.delete(f"{V1}/state-classes/{row['id']}", headers=admin), 204)
    # A holiday on that Monday leaves no planned time: the ratios are null, not 0.
    exc = {"date": "2026-03-02", "kind": "holiday"}
    _ok(api_client.post(f"{V1}/sites/{site['id']}/shift-exceptions", json=exc, headers=admin), 201)
    off = _ok(_oee(api_client, role_headers, machine["id"]))["whole"]
    assert off["planned_s"] == 0 and off["availability"] is None and off["oee"] is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"weekday": 9}, "0-6 (0 = Monday)"),
        ({"duration": "eight hours"}, "PT8H"),
        ({"duration": 30}, "at most 24"),
        ({"start_local": "06:00+01:00"}, "without offset"),
        ({"name": "a\nb"}, "control characters"),
    ],
)
def test_shift_errors_say_what_to_send(
    api_client: TestClient,
    role_headers: Headers,
    plant: dict[str, Any],
    change: dict[str, Any],
    words: str,
) -> None:
    url = f"{V1}/sites/{plant['site']['id']}/shifts"
    response = api_client.post(url, json=GOOD_SHIFT | change, headers=role_headers["admin"])
    assert words in _error(response, 422, next(iter(change)))["message"]
