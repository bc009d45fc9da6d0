"""GET /api/v1/live against real PostgreSQL: current state, product and gateways."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.api.helpers import insert_asset as _asset

Headers = dict[str, dict[str, str]]
URL = "/api/v1/live"
T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)


def _site(session: Session, machines: tuple[str, ...]) -> dict[str, Any]:
    site = _asset(session, name=f"site-{uuid.uuid4().hex[:8]}", level="site", parent=None)
    area = _asset(session, name="pack", level="area", parent=site)
    line = _asset(session, name="line_1", level="line", parent=area)
    site["machines"] = [_asset(session, name=m, level="machine", parent=line) for m in machines]
    return site


def _run(session: Session, sql: str, rows: list[dict[str, Any]]) -> None:
    session.execute(text(sql), rows)


@pytest.fixture
def plant(db_session: Session) -> dict[str, Any]:
    """A site with a faulted filler (product p2) and a capper with no open state; another
    site with one machine; a gateway publishing for the first site, one for neither."""
    site = _site(db_session, ("capper", "filler"))
    other = _site(db_session, ("labeler",))
    capper, filler = site["machines"]
    tag = uuid.uuid4().hex[:8]
    gw_site, gw_other = f"gw-site-{tag}", f"gw-none-{tag}"
    _run(
        db_session,
        "INSERT INTO state_intervals (asset_id, start_time, end_time, state, reason, code)"
        " VALUES (:a, :s, :e, :state, :reason, :code)",
        [
            {"a": filler["id"], "s": T0, "e": T0 + timedelta(minutes=5), "state": "running",
             "reason": None, "code": None},
            {"a": filler["id"], "s": T0 + timedelta(minutes=5), "e": None, "state": "fault",
             "reason": "jam", "code": "E12"},
            {"a": capper["id"], "s": T0, "e": T0 + timedelta(minutes=1), "state": "running",
             "reason": None, "code": None},
        ],
    )  # fmt: skip
    _run(
        db_session,
        "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
        " VALUES (:a, :t, 1, 1, 0, :p)",
        [
            {"a": filler["id"], "t": T0 + timedelta(minutes=1), "p": "p1"},
            {"a": filler["id"], "t": T0 + timedelta(minutes=4), "p": "p2"},
        ],
    )
    _run(
        db_session,
        "INSERT INTO gateways (agent, status, since, last_seen) VALUES (:g, :s, :since, :seen)",
        [
            {"g": gw_site, "s": "online", "since": T0, "seen": T0 + timedelta(minutes=9)},
            {"g": gw_other, "s": "offline", "since": T0 + timedelta(minutes=2), "seen": T0},
        ],
    )
    _run(
        db_session,
        "INSERT INTO tags (asset_id, name, agent) VALUES (:a, 'speed', :g)",
        [{"a": filler["id"], "g": gw_site}],
    )
    db_session.commit()
    return {"site": site, "other": other, "gateways": (gw_site, gw_other)}


def _get(client: TestClient, headers: Headers, **params: Any) -> Any:
    response = client.get(URL, params=params, headers=headers["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def test_site_machines_state_product_and_gateways(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    site = plant["site"]
    body = _get(api_client, role_headers, site_id=site["id"])
    capper, filler = body["machines"]
    assert [capper["path"], filler["path"]] == [m["path"] for m in site["machines"]]
    assert capper["current"] is None and capper["product"] is None
    assert filler["current"]["state"] == "fault"
    assert (filler["current"]["reason"], filler["current"]["code"]) == ("jam", "E12")
    assert datetime.fromisoformat(filler["current"]["since"]) == T0 + timedelta(minutes=5)
    assert filler["product"] == "p2"
    assert datetime.fromisoformat(filler["product_time"]) == T0 + timedelta(minutes=4)
    gw_site, _ = plant["gateways"]
    assert [(g["agent"], g["status"]) for g in body["gateways"]] == [(gw_site, "online")]
    assert datetime.fromisoformat(body["gateways"][0]["last_seen"]) == T0 + timedelta(minutes=9)


def test_without_site_every_machine_and_gateway(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    body = _get(api_client, role_headers)
    paths = {m["path"] for m in body["machines"]}
    wanted = {m["path"] for s in (plant["site"], plant["other"]) for m in s["machines"]}
    assert wanted <= paths
    agents = {g["agent"]: g["status"] for g in body["gateways"]}
    gw_site, gw_other = plant["gateways"]
    assert (agents[gw_site], agents[gw_other]) == ("online", "offline")


def test_site_id_errors(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    machine = plant["site"]["machines"][0]["id"]
    response = api_client.get(URL, params={"site_id": machine}, headers=role_headers["viewer"])
    assert response.status_code == 422 and "not a site" in response.json()["error"]["message"]
    response = api_client.get(URL, params={"site_id": 2**31 - 2}, headers=role_headers["viewer"])
    assert response.status_code == 404 and response.json()["error"]["field"] == "site_id"
    assert api_client.get(URL).status_code == 401
