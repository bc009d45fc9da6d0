"""OEE configuration against real PostgreSQL: products and cycle times, downtime reasons,
state loss classes, machine settings — round trips, roles, audit rows, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.db import INT4_MAX
from tests.api.helpers import error_of as _error
from tests.api.helpers import ok as _ok
from tests.api.helpers import unique_name as _name

Headers = dict[str, dict[str, str]]
V1 = "/api/v1"


def _audit(session: Session, entity: str, entity_id: object) -> list[dict[str, Any]]:
    session.rollback()  # a fresh snapshot
    rows = session.execute(
        text(
            "SELECT action, actor_key, before, after FROM audit_log"
            " WHERE entity = :e AND entity_id = :id ORDER BY id"
        ),
        {"e": entity, "id": str(entity_id)},
    ).mappings()
    return [dict(r) for r in rows]


@pytest.fixture
def plant(api_client: TestClient, role_headers: Headers) -> dict[str, dict[str, Any]]:
    """A site > area > line with two machines, made through the assets API."""
    admin = role_headers["admin"]

    def make(**body: Any) -> dict[str, Any]:
        return dict(_ok(api_client.post(f"{V1}/assets", json=body, headers=admin), 201))

    site = make(name=_name("site"), level="site", timezone="Europe/Berlin")
    area = make(name="area", level="area", parent_id=site["id"])
    line = make(name="line", level="line", parent_id=area["id"])
    filler = make(name="filler", level="machine", parent_id=line["id"])
    capper = make(name="capper", level="machine", parent_id=line["id"])
    return {"site": site, "area": area, "line": line, "filler": filler, "capper": capper}


# --- products --------------------------------------------------------------------------


def test_product_round_trip_is_audited(
    api_client: TestClient, role_headers: Headers, db_session: Session, api_keys: dict[str, Any]
) -> None:
    admin, viewer = role_headers["admin"], role_headers["viewer"]
    code = _name("SKU")
    body = {"code": code, "name": "Bottle 0.5 l", "ideal_cycle_s": 1.5}
    made = _ok(api_client.post(f"{V1}/products", json=body, headers=admin), 201)
    assert made == {"id": made["id"], **body}
    url = f"{V1}/products/{made['id']}"
    assert _ok(api_client.get(url, headers=viewer)) == {**made, "cycle_times": []}
    assert made in _ok(api_client.get(f"{V1}/products", headers=viewer))

    changed = _ok(api_client.patch(url, json={"ideal_cycle_s": 1.2, "name": None}, headers=admin))
    assert changed == {**made, "ideal_cycle_s": 1.2, "name": None}
    assert _ok(api_client.patch(url, json={}, headers=admin)) == changed  # nothing to change

    _ok(api_client.delete(url, headers=admin), 204)
    _error(api_client.get(url, headers=viewer), 404, "product_id")
    _error(api_client.delete(url, headers=admin), 404, "product_id")

    audit = _audit(db_session, "product", made["id"])
    assert [a["action"] for a in audit] == ["create", "update", "delete"]
    assert {a["actor_key"] for a in audit} == {api_keys["admin"].key.id}
    assert audit[1]["before"]["ideal_cycle_s"] == 1.5 and audit[1]["after"]["ideal_cycle_s"] == 1.2
    assert audit[2]["before"]["code"] == code and audit[2]["after"] is None


def test_duplicate_product_code_is_a_conflict_naming_it(
    api_client: TestClient, role_headers: Headers
) -> None:
    admin = role_headers["admin"]
    first, second = _name("SKU"), _name("SKU")
    _ok(api_client.post(f"{V1}/products", json={"code": first}, headers=admin), 201)
    other = _ok(api_client.post(f"{V1}/products", json={"code": second}, headers=admin), 201)
    error = _error(api_client.post(f"{V1}/products", json={"code": first}, headers=admin), 409)
    assert error["field"] == "code" and first in error["message"]
    renamed = api_client.patch(f"{V1}/products/{other['id']}", json={"code": first}, headers=admin)
    assert first in _error(renamed, 409, "code")["message"]


def test_cycle_times_per_machine(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    admin, viewer = role_headers["admin"], role_headers["viewer"]
    product = _ok(
        api_client.post(
            f"{V1}/products", json={"code": _name("SKU"), "ideal_cycle_s": 2.0}, headers=admin
        ),
        201,
    )
    filler = plant["filler"]
    url = f"{V1}/products/{product['id']}/cycle-times"
    put = _ok(api_client.put(f"{url}/{filler['id']}", json={"ideal_cycle_s": 1.0}, headers=admin))
    assert put == {
        "product_id": product["id"],
        "asset_id": filler["id"],
        "asset_path": filler["path"],
        "ideal_cycle_s": 1.0,
    }
    _ok(api_client.put(f"{url}/{filler['id']}", json={"ideal_cycle_s": 0.9}, headers=admin))
    listed = _ok(api_client.get(url, headers=viewer))
    assert [(c["asset_id"], c["ideal_cycle_s"]) for c in listed] == [(filler["id"], 0.9)]
    detail = _ok(api_client.get(f"{V1}/products/{product['id']}", headers=viewer))
    assert detail["cycle_times"] == listed

    line = api_client.put(f"{url}/{plant['line']['id']}", json={"ideal_cycle_s": 1}, headers=admin)
    assert "machine" in _error(line, 422, "asset_id")["message"]
    _error(api_client.put(f"{url}/{INT4_MAX}", json={"ideal_cycle_s": 1}, headers=admin), 404)
    missing = f"{V1}/products/{INT4_MAX}/cycle-times/{filler['id']}"
    _error(api_client.put(missing, json={"ideal_cycle_s": 1}, headers=admin), 404, "product_id")

    _ok(api_client.delete(f"{url}/{filler['id']}", headers=admin), 204)
    assert _ok(api_client.get(url, headers=viewer)) == []
    _error(api_client.delete(f"{url}/{filler['id']}", headers=admin), 404, "asset_id")
    audit = _audit(db_session, "product_cycle_time", f"{product['id']}/{filler['id']}")
    assert [a["action"] for a in audit] == ["create", "update", "delete"]
    assert audit[1]["before"]["ideal_cycle_s"] == 1.0 and audit[1]["after"]["ideal_cycle_s"] == 0.9


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": "x", "ideal_cycle_s": 0}, "ideal_cycle_s"),
        ({"code": "x", "ideal_cycle_s": -1}, "ideal_cycle_s"),
        ({"code": "x", "ideal_cycle_s": 1e9}, "ideal_cycle_s"),
        ({"code": "x", "ideal_cycle_s": "fast"}, "ideal_cycle_s"),
        ({"code": ""}, "code"),
        ({"code": "x" * 257}, "code"),
        ({"code": "a\x00b"}, "code"),
        ({"code": "x", "name": "n" * 201}, "name"),
        ({"code": "x", "colour": "red"}, "colour"),
        ({"name": "no code"}, "code"),
    ],
)
def test_bad_product_bodies_are_422_naming_the_field(
    api_client: TestClient, role_headers: Headers, body: dict[str, Any], field: str
) -> None:
    response = api_client.post(f"{V1}/products", json=body, headers=role_headers["admin"])
    _error(response, 422, field)


def test_non_finite_numbers_and_huge_ids_are_refused(
    api_client: TestClient, role_headers: Headers
) -> None:
    admin = {**role_headers["admin"], "Content-Type": "application/json"}
    nan = api_client.post(
        f"{V1}/products", content=b'{"code": "nan", "ideal_cycle_s": NaN}', headers=admin
    )
    _error(nan, 422, "ideal_cycle_s")
    inf = api_client.post(
        f"{V1}/products", content=b'{"code": "inf", "ideal_cycle_s": Infinity}', headers=admin
    )
    _error(inf, 422, "ideal_cycle_s")
    # A lone surrogate is valid JSON but no text PostgreSQL can store.
    surrogate = api_client.post(f"{V1}/products", content=b'{"code": "a\\ud800"}', headers=admin)
    _error(surrogate, 422, "code")
    for bad in (INT4_MAX + 1, 0, -3, "abc"):
        _error(api_client.get(f"{V1}/products/{bad}", headers=admin), 422, "product_id")
    _error(api_client.get(f"{V1}/products/{INT4_MAX}", headers=admin), 404, "product_id")


# --- downtime reasons ------------------------------------------------------------------


def test_reason_round_trip_tree_and_filters(
    api_client: TestClient, role_headers: Headers, db_session: Session
) -> None:
    admin, viewer = role_headers["admin"], role_headers["viewer"]
    category = _name("cat")
    jam, cip = _name("E31"), _name("CIP")
    bodies: list[dict[str, Any]] = [
        {"code": jam, "reason": "Jam at infeed", "category": category},
        {"code": cip, "reason": "Cleaning", "category": category, "planned": True},
    ]
    for body in bodies:
        made = _ok(api_client.post(f"{V1}/downtime-reasons", json=body, headers=admin), 201)
        assert made == {"planned": False, **body}
    listed = _ok(
        api_client.get(f"{V1}/downtime-reasons", params={"category": category}, headers=viewer)
    )
    assert [r["code"] for r in listed] == [cip, jam]  # by reason text within a category
    planned = _ok(
        api_client.get(
            f"{V1}/downtime-reasons",
            params={"category": category, "planned": "true"},
            headers=viewer,
        )
    )
    assert [r["code"] for r in planned] == [cip]
    tree = _ok(api_client.get(f"{V1}/downtime-reasons/tree", headers=viewer))
    node = next(c for c in tree if c["category"] == category)
    assert node["planned"] is None  # one planned, one not
    assert [r["code"] for r in node["reasons"]] == [cip, jam]

    url = f"{V1}/downtime-reasons/{jam}"
    changed = _ok(api_client.patch(url, json={"reason": "Jam", "planned": True}, headers=admin))
    assert changed["reason"] == "Jam" and changed["planned"] is True
    tree = _ok(api_client.get(f"{V1}/downtime-reasons/tree", headers=viewer))
    assert next(c for c in tree if c["category"] == category)["planned"] is True
    _error(api_client.patch(url, json={"category": None}, headers=admin), 422, "category")
    dup = api_client.post(f"{V1}/downtime-reasons", json=bodies[0], headers=admin)
    assert jam in _error(dup, 409, "code")["message"]

    _ok(api_client.delete(url, headers=admin), 204)
    _error(api_client.get(url, headers=viewer), 404, "code")
    audit = _audit(db_session, "downtime_reason", jam)
    assert [a["action"] for a in audit] == ["create", "update", "delete"]


def test_reason_in_use_cannot_be_deleted_and_renames_carry_assignments(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    admin = role_headers["admin"]
    code = _name("E")
    body = {"code": code, "reason": "Motor", "category": "electrical"}
    _ok(api_client.post(f"{V1}/downtime-reasons", json=body, headers=admin), 201)
    for hour in (1, 2):
        db_session.execute(
            text(
                "INSERT INTO stop_reasons (asset_id, start_time, end_time, code) VALUES"
                " (:a, CAST(:s AS timestamptz), CAST(:s AS timestamptz) + interval '10m', :c)"
            ),
            {"a": plant["filler"]["id"], "s": f"2026-01-05 0{hour}:00+00", "c": code},
        )
    db_session.commit()
    error = _error(api_client.delete(f"{V1}/downtime-reasons/{code}", headers=admin), 409, "code")
    assert "2 stops" in error["message"]

    renamed = _name("E")
    url = f"{V1}/downtime-reasons/{code}"
    _ok(api_client.patch(url, json={"code": renamed}, headers=admin))
    db_session.rollback()
    codes = db_session.execute(
        text("SELECT DISTINCT code FROM stop_reasons WHERE asset_id = :a"),
        {"a": plant["filler"]["id"]},
    ).scalars()
    assert list(codes) == [renamed]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": "a/b", "reason": "r", "category": "c"}, "code"),
        ({"code": "tree", "reason": "r", "category": "c"}, "code"),
        ({"code": "x" * 129, "reason": "r", "category": "c"}, "code"),
        ({"code": "x", "reason": "", "category": "c"}, "reason"),
        ({"code": "x", "reason": "r", "category": "c" * 65}, "category"),
        ({"code": "x", "reason": "r", "category": "c", "planned": "perhaps"}, "planned"),
        ({"code": "x", "reason": "r"}, "category"),
    ],
)
def test_bad_reason_bodies_are_422_naming_the_field(
    api_client: TestClient, role_headers: Headers, body: dict[str, Any], field: str
) -> None:
    response = api_client.post(f"{V1}/downtime-reasons", json=body, headers=role_headers["admin"])
    _error(response, 422, field)


# --- state loss classes ----------------------------------------------------------------


def _classes(client: TestClient, headers: Headers, asset_id: int | None = None) -> Any:
    params = {} if asset_id is None else {"asset_id": asset_id}
    body = _ok(client.get(f"{V1}/state-classes", params=params, headers=headers["viewer"]))
    return {e["state"]: e for e in body["entries"]}


def test_state_classes_layer_defaults_global_and_asset(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    admin, filler = role_headers["admin"], plant["filler"]
    state = _name("setup")
    assert _classes(api_client, role_headers)["running"] == {
        "state": "running", "loss_class": "running", "source": "default", "id": None,
    }  # fmt: skip
    url = f"{V1}/state-classes"
    glob = _ok(
        api_client.put(url, json={"state": state, "loss_class": "planned_down"}, headers=admin)
    )
    assert glob["asset_id"] is None
    own = _ok(
        api_client.put(
            url,
            json={"asset_id": filler["id"], "state": state, "loss_class": "unplanned_down"},
            headers=admin,
        )
    )
    assert _classes(api_client, role_headers)[state]["source"] == "global"
    mine = _classes(api_client, role_headers, filler["id"])[state]
    assert mine == {
        "state": state,
        "loss_class": "unplanned_down",
        "source": "asset",
        "id": own["id"],
    }
    capper = _classes(api_client, role_headers, plant["capper"]["id"])[state]
    assert capper["source"] == "global" and capper["loss_class"] == "planned_down"

    again = _ok(
        api_client.put(
            url,
            json={"asset_id": filler["id"], "state": state, "loss_class": "running"},
            headers=admin,
        )
    )
    assert again["id"] == own["id"] and again["loss_class"] == "running"
    _ok(api_client.delete(f"{url}/{own['id']}", headers=admin), 204)
    assert _classes(api_client, role_headers, filler["id"])[state]["source"] == "global"
    _error(api_client.delete(f"{url}/{own['id']}", headers=admin), 404, "class_id")

    audit = _audit(db_session, "state_loss_class", own["id"])
    assert [a["action"] for a in audit] == ["create", "update", "delete"]
    assert audit[1]["before"]["loss_class"] == "unplanned_down"


def test_state_class_bad_input(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    admin, url = role_headers["admin"], f"{V1}/state-classes"
    bad = {"state": "idle", "loss_class": "coffee"}
    _error(api_client.put(url, json=bad, headers=admin), 422, "loss_class")
    line = {"asset_id": plant["line"]["id"], "state": "idle", "loss_class": "running"}
    _error(api_client.put(url, json=line, headers=admin), 422, "asset_id")
    gone = {"asset_id": INT4_MAX, "state": "idle", "loss_class": "running"}
    _error(api_client.put(url, json=gone, headers=admin), 404, "asset_id")
    huge = {"asset_id": INT4_MAX + 1, "state": "idle", "loss_class": "running"}
    _error(api_client.put(url, json=huge, headers=admin), 422, "asset_id")
    long_state = {"state": "s" * 65, "loss_class": "running"}
    _error(api_client.put(url, json=long_state, headers=admin), 422, "state")
    viewer = role_headers["viewer"]
    _error(api_client.get(url, params={"asset_id": INT4_MAX}, headers=viewer), 404, "asset_id")
    area = api_client.get(url, params={"asset_id": plant["area"]["id"]}, headers=viewer)
    _error(area, 422, "asset_id")


# --- machine settings ------------------------------------------------------------------


def test_machine_settings_and_one_output_per_line(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any], db_session: Session
) -> None:
    admin, viewer = role_headers["admin"], role_headers["viewer"]
    filler, capper = plant["filler"], plant["capper"]

    def url(m: dict[str, Any]) -> str:
        return f"{V1}/machines/{m['id']}/settings"

    assert _ok(api_client.get(url(filler), headers=viewer)) == {
        "asset_id": filler["id"], "path": filler["path"], "micro_stop_s": 0.0,
        "is_line_output": False, "stored": False,
    }  # fmt: skip
    first = _ok(
        api_client.put(
            url(filler), json={"micro_stop_s": 30, "is_line_output": True}, headers=admin
        )
    )
    assert first["stored"] and first["cleared_line_output"] == []
    second = _ok(
        api_client.put(url(capper), json={"micro_stop_s": 5, "is_line_output": True}, headers=admin)
    )
    assert second["cleared_line_output"] == [filler["id"]]
    now = _ok(api_client.get(url(filler), headers=viewer))
    assert now["is_line_output"] is False and now["micro_stop_s"] == 30.0
    audit = _audit(db_session, "machine_settings", filler["id"])
    assert [a["action"] for a in audit] == ["create", "update"]
    assert audit[1]["before"]["is_line_output"] is True
    assert audit[1]["after"]["is_line_output"] is False
    # Unflagging the output leaves the line without one; nothing else changes.
    off = _ok(
        api_client.put(
            url(capper), json={"micro_stop_s": 5, "is_line_output": False}, headers=admin
        )
    )
    assert off["cleared_line_output"] == [] and off["is_line_output"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"micro_stop_s": -1, "is_line_output": False}, "micro_stop_s"),
        ({"micro_stop_s": 3601, "is_line_output": False}, "micro_stop_s"),
        ({"micro_stop_s": "long", "is_line_output": False}, "micro_stop_s"),
        ({"is_line_output": False}, "micro_stop_s"),
        ({"micro_stop_s": 1}, "is_line_output"),
        ({"micro_stop_s": 1, "is_line_output": False, "x": 1}, "x"),
    ],
)
def test_bad_machine_settings_are_422(
    api_client: TestClient,
    role_headers: Headers,
    plant: dict[str, Any],
    body: dict[str, Any],
    field: str,
) -> None:
    url = f"{V1}/machines/{plant['filler']['id']}/settings"
    _error(api_client.put(url, json=body, headers=role_headers["admin"]), 422, field)


def test_machine_settings_need_a_machine(
    api_client: TestClient, role_headers: Headers, plant: dict[str, Any]
) -> None:
    viewer = role_headers["viewer"]
    line = api_client.get(f"{V1}/machines/{plant['line']['id']}/settings", headers=viewer)
    assert "machine" in _error(line, 422, "asset_id")["message"]
    _error(api_client.get(f"{V1}/machines/{INT4_MAX}/settings", headers=viewer), 404, "asset_id")
    _error(api_client.get(f"{V1}/machines/{INT4_MAX + 1}/settings", headers=viewer), 422)


# --- roles -----------------------------------------------------------------------------

WRITES = [
    ("post", "/products", {"code": "role-test"}),
    ("patch", "/products/1", {"name": "x"}),
    ("delete", "/products/1", None),
    ("put", "/products/1/cycle-times/1", {"ideal_cycle_s": 1}),
    ("delete", "/products/1/cycle-times/1", None),
    ("post", "/downtime-reasons", {"code": "r", "reason": "r", "category": "c"}),
    ("patch", "/downtime-reasons/r", {"reason": "x"}),
    ("delete", "/downtime-reasons/r", None),
    ("put", "/state-classes", {"state": "idle", "loss_class": "running"}),
    ("delete", "/state-classes/1", None),
    ("put", "/machines/1/settings", {"micro_stop_s": 0, "is_line_output": False}),
]
READS = [
    "/products",
    "/downtime-reasons",
    "/downtime-reasons/tree",
    "/state-classes",
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_config_writes_need_admin(
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
    anonymous = api_client.request(method, V1 + path, **kwargs)
    assert _error(anonymous, 401)["code"] == "unauthorized"


@pytest.mark.parametrize("path", READS)
def test_config_reads_need_a_key(api_client: TestClient, role_headers: Headers, path: str) -> None:
    _ok(api_client.get(V1 + path, headers=role_headers["viewer"]))
    _error(api_client.get(V1 + path), 401)
