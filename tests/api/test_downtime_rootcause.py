"""Root cause on a line: starved and blocked machines attributed to the machine that stopped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.downtime.rootcause import Event, attribute, summarise
from tests.api.helpers import insert_asset

Headers = dict[str, dict[str, str]]
T0 = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
URL = "/api/v1/downtime/root-cause"


def at(minutes: float) -> datetime:
    """T0 + minutes."""
    return T0 + timedelta(minutes=minutes)


def ev(asset: int, start: float, end: float, state: str, began: float | None = None) -> Event:
    """An unplanned stop event between minute offsets."""
    induced = state in ("starved", "blocked")
    return Event(asset, at(start if began is None else began), at(start), at(end), state, induced)


# --- the pure attribution ----------------------------------------------------------------

FILLER, CAPPER, LABELER, PACKER = 1, 2, 3, 4
CASCADE = [
    ev(CAPPER, 10, 20, "fault"),
    ev(FILLER, 11, 20.5, "blocked"),
    ev(LABELER, 11.5, 21, "starved"),
    ev(PACKER, 12, 21.5, "starved"),
]


def test_a_cascade_goes_to_the_machine_that_stopped_first() -> None:
    roots = attribute(CASCADE)
    assert {e.asset_id: r.asset_id if r else None for e, r in roots.items()} == {
        FILLER: CAPPER,
        LABELER: CAPPER,
        PACKER: CAPPER,
    }


def test_the_most_recent_stop_going_on_is_the_cause() -> None:
    # The packer faults after the capper did: the labeler, blocked later, waits for the packer.
    events = [ev(CAPPER, 0, 30, "fault"), ev(PACKER, 5, 30, "fault"), ev(LABELER, 6, 30, "blocked")]
    roots = attribute(events)
    assert roots[events[2]] == events[1]
    # A stop that ended before the induced one began is no cause.
    events = [ev(CAPPER, 0, 5, "fault"), ev(LABELER, 6, 30, "starved")]
    assert attribute(events)[events[1]] is None


def test_ties_prefer_an_own_stop_and_cycles_end_as_unknown() -> None:
    events = [ev(1, 0, 10, "starved"), ev(2, 0, 10, "fault"), ev(3, 1, 10, "starved")]
    roots = attribute(events)
    assert roots[events[2]] == events[1] and roots[events[0]] == events[1]
    # Two machines waiting for each other and nothing else: unknown, no endless chain.
    events = [ev(1, 0, 10, "starved"), ev(2, 0, 10, "blocked")]
    assert attribute(events) == {events[0]: None, events[1]: None}


def test_a_part_of_a_stop_is_attributed_by_when_the_whole_stop_began() -> None:
    # The labeler's starved stop began at 11 (capper faulting); an operator split it at 25,
    # after the capper recovered: the second part still belongs to the capper.
    events = [ev(CAPPER, 10, 20, "fault"), ev(LABELER, 25, 30, "starved", began=11)]
    assert attribute(events)[events[1]] == events[0]


def test_a_planned_stop_is_a_root_but_no_loss() -> None:
    # The capper's changeover (planned) starves the labeler and, through it, the packer.
    changeover = Event(CAPPER, at(10), at(10), at(20), "changeover", False, planned=True)
    events = [changeover, ev(LABELER, 11, 21, "starved"), ev(PACKER, 12, 21.5, "starved")]
    roots = attribute(events)
    assert roots == {events[1]: changeover, events[2]: changeover}
    result = summarise(events, roots, start=at(0), end=at(60), output_asset=PACKER)
    capper = result.machines[CAPPER]
    assert (capper.own_stops, capper.own) == (0, timedelta(0))  # no loss of its own
    assert capper.caused == capper.caused_planned == timedelta(minutes=10 + 9.5)
    assert capper.output_down == result.output_down == timedelta(minutes=9.5)
    assert result.unknown.caused_stops == 0
    [episode] = result.episodes
    assert episode.root is changeover and len(episode.effects) == 2


def test_summary_adds_up_to_the_output_down_time() -> None:
    events = [*CASCADE, ev(PACKER, 40, 42, "starved"), ev(PACKER, 50, 53, "fault")]
    result = summarise(events, attribute(events), start=at(0), end=at(60), output_asset=PACKER)
    capper, packer = result.machines[CAPPER], result.machines[PACKER]
    assert (capper.own_stops, capper.own, capper.caused_stops) == (1, timedelta(minutes=10), 3)
    assert capper.caused == timedelta(minutes=3 * 9.5)
    assert capper.output_down == timedelta(minutes=9.5)
    assert (packer.own, packer.starved, packer.output_down) == (
        timedelta(minutes=3),
        timedelta(minutes=11.5),
        timedelta(minutes=3),
    )
    assert (result.unknown.caused_stops, result.unknown.output_down) == (1, timedelta(minutes=2))
    shares = sum((m.output_down for m in result.machines.values()), result.unknown.output_down)
    assert result.output_down == shares == timedelta(minutes=14.5)
    assert [len(ep.effects) for ep in result.episodes] == [3]
    # Clipped to a range that starts mid-cascade.
    late = summarise(events, attribute(events), start=at(15), end=at(60), output_asset=None)
    assert late.machines[CAPPER].own == timedelta(minutes=5) and late.output_down is None
    assert late.machines[CAPPER].caused == timedelta(minutes=5.5 + 6 + 6.5)


# --- through the API -----------------------------------------------------------------------

# filler → capper → labeler → packer (the line's output). The capper faults 10..20: the
# filler is blocked, the labeler and the packer starve. Later the packer starves with no
# stop anywhere (unknown) and faults on its own. After an hour, the capper's changeover (a
# planned stop) starves the packer.
LINE: dict[str, list[tuple[float, float | None, str]]] = {
    "filler": [(0, 11, "running"), (11, 20.5, "blocked"), (20.5, None, "running")],
    "capper": [
        (0, 10, "running"), (10, 20, "fault"), (20, 70, "running"), (70, 80, "changeover"),
        (80, None, "running"),
    ],
    "labeler": [(0, 11.5, "running"), (11.5, 21, "starved"), (21, None, "running")],
    "packer": [
        (0, 12, "running"), (12, 21.5, "starved"), (21.5, 40, "running"), (40, 42, "starved"),
        (42, 50, "running"), (50, 53, "fault"), (53, 71, "running"), (71, 80, "starved"),
        (80, None, "running"),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def line(db_session: Session) -> dict[str, Any]:
    """The line above, the packer flagged as its output."""
    site = insert_asset(db_session, name=f"site-{uuid.uuid4().hex[:8]}", level="site", parent=None)
    area = insert_asset(db_session, name="bottling", level="area", parent=site)
    ln = insert_asset(db_session, name="line_1", level="line", parent=area)
    ids = {}
    for name, intervals in LINE.items():
        machine = insert_asset(db_session, name=name, level="machine", parent=ln)
        ids[name] = machine["id"]
        db_session.execute(
            text(
                "INSERT INTO state_intervals (asset_id, start_time, end_time, state)"
                " VALUES (:a, :s, :e, :st)"
            ),
            [
                {"a": machine["id"], "s": at(s), "e": None if e is None else at(e), "st": st}
                for s, e, st in intervals
            ],
        )
    db_session.execute(
        text("INSERT INTO machine_settings (asset_id, is_line_output) VALUES (:a, true)"),
        {"a": ids["packer"]},
    )
    db_session.commit()
    return {"line": ln, "area": area, **ids}


def _root_cause(
    client: TestClient, headers: Headers, line_id: int, start: float, end: float
) -> Any:
    params: dict[str, Any] = {
        "asset_id": line_id, "start": at(start).isoformat(), "end": at(end).isoformat()
    }  # fmt: skip
    response = client.get(URL, params=params, headers=headers["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def test_the_capper_caused_it_all(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    body = _root_cause(api_client, role_headers, line["line"]["id"], 0, 60)
    by_name = {m["path"].rsplit("/", 1)[1]: m for m in body["machines"]}
    capper, packer = by_name["capper"], by_name["packer"]
    assert (capper["own_stops"], capper["own_s"]) == (1, 600.0)
    assert (capper["caused_stops"], capper["caused_s"], capper["output_down_s"]) == (
        3,
        1710.0,
        570.0,
    )
    assert (by_name["filler"]["blocked_s"], by_name["labeler"]["starved_s"]) == (570.0, 570.0)
    assert by_name["filler"]["caused_s"] == 0.0 and by_name["labeler"]["caused_s"] == 0.0
    assert (packer["own_s"], packer["starved_s"], packer["output_down_s"]) == (180.0, 690.0, 180.0)
    assert packer["is_line_output"] and body["output_asset_id"] == line["packer"]
    assert body["unknown"] == {"stops": 1, "seconds": 120.0, "output_down_s": 120.0}
    assert body["output_down_s"] == 870.0 == 570.0 + 180.0 + 120.0
    [episode] = body["episodes"]
    assert episode["asset_id"] == line["capper"] and episode["state"] == "fault"
    assert sorted(e["path"].rsplit("/", 1)[1] for e in episode["effects"]) == [
        "filler",
        "labeler",
        "packer",
    ]
    assert episode["caused_s"] == 1710.0 and body["flags"] == []


def test_starving_during_a_planned_changeover_goes_to_the_changeover(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    body = _root_cause(api_client, role_headers, line["line"]["id"], 60, 90)
    capper = next(m for m in body["machines"] if m["asset_id"] == line["capper"])
    assert (capper["own_stops"], capper["own_s"]) == (0, 0.0)  # the changeover is no loss
    assert capper["caused_s"] == capper["caused_planned_s"] == capper["output_down_s"] == 540.0
    assert body["unknown"]["stops"] == 0 and body["output_down_s"] == 540.0
    [episode] = body["episodes"]
    assert (episode["state"], episode["planned"]) == ("changeover", True)
    assert [e["asset_id"] for e in episode["effects"]] == [line["packer"]]


def test_causes_that_began_before_the_range_are_found(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    # From 20.7 min only the tails of the labeler's and packer's starving are left; the
    # capper's fault (10..20) and the filler's blocking (11..20.5) ended before the range.
    body = _root_cause(api_client, role_headers, line["line"]["id"], 20.7, 30)
    capper = next(m for m in body["machines"] if m["asset_id"] == line["capper"])
    assert capper["own_stops"] == 0 and capper["caused_s"] == pytest.approx(18.0 + 48.0)
    assert body["unknown"]["stops"] == 0
    assert datetime.fromisoformat(body["episodes"][0]["start"]) == at(10)


def test_refusals(api_client: TestClient, role_headers: Headers, line: dict[str, Any]) -> None:
    params: dict[str, Any] = {"start": at(0).isoformat(), "end": at(60).isoformat()}
    machine = api_client.get(
        URL, params={**params, "asset_id": line["capper"]}, headers=role_headers["viewer"]
    )
    assert machine.status_code == 422 and machine.json()["error"]["field"] == "asset_id"
    assert "per line" in machine.json()["error"]["message"]
    missing = api_client.get(
        URL, params={**params, "asset_id": 2**31 - 1}, headers=role_headers["viewer"]
    )
    assert missing.status_code == 404
    assert api_client.get(URL, params={**params, "asset_id": line["line"]["id"]}).status_code == 401


def test_a_line_without_an_output_machine_says_so(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any], db_session: Session
) -> None:
    other = insert_asset(db_session, name="line_2", level="line", parent=line["area"])
    machine = insert_asset(db_session, name="m", level="machine", parent=other)
    db_session.execute(
        text(
            "INSERT INTO state_intervals (asset_id, start_time, end_time, state)"
            " VALUES (:a, :s, :e, 'starved')"
        ),
        {"a": machine["id"], "s": at(0), "e": at(5)},
    )
    db_session.commit()
    body = _root_cause(api_client, role_headers, other["id"], 0, 60)
    assert body["flags"] == ["no_line_output"] and body["output_down_s"] is None
    assert body["unknown"] == {"stops": 1, "seconds": 300.0, "output_down_s": None}
    assert body["machines"][0]["output_down_s"] is None
