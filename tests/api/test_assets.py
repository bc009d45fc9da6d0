"""The assets domain against real PostgreSQL: CRUD, rules, audit, tags with last values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import AwareDatetime
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.config import ApiSettings
from api.errors import NAIVE_TIMESTAMP, install_handlers

Headers = dict[str, dict[str, str]]
URL = "/api/v1/assets"


def _name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def _make(client: TestClient, headers: Headers, **body: Any) -> dict[str, Any]:
    response = client.post(URL, json=body, headers=headers["admin"])
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def line(api_client: TestClient, role_headers: Headers) -> dict[str, dict[str, Any]]:
    """A site > area > line > machine chain with fresh names."""
    site = _make(
        api_client, role_headers, name=_name("site"), level="site", timezone="Europe/Berlin"
    )
    area = _make(api_client, role_headers, name="pack", level="area", parent_id=site["id"])
    ln = _make(api_client, role_headers, name="line_1", level="line", parent_id=area["id"])
    machine = _make(api_client, role_headers, name="filler", level="machine", parent_id=ln["id"])
    return {"site": site, "area": area, "line": ln, "machine": machine}


def _audit(session: Session, asset_id: int) -> list[dict[str, Any]]:
    session.rollback()  # a fresh snapshot
    rows = session.execute(
        text(
            "SELECT action, actor_key, before, after FROM audit_log"
            " WHERE entity = 'asset' AND entity_id = :id ORDER BY id"
        ),
        {"id": str(asset_id)},
    ).mappings()
    return [dict(r) for r in rows]


def test_create_builds_paths_and_is_audited(
    api_client: TestClient,
    role_headers: Headers,
    line: dict[str, Any],
    db_session: Session,
    api_keys: dict[str, Any],
) -> None:
    site, machine = line["site"], line["machine"]
    assert machine["path"] == f"{site['name']}/pack/line_1/filler"
    assert machine["level"] == "machine" and machine["parent_id"] == line["line"]["id"]
    audit = _audit(db_session, machine["id"])
    assert [a["action"] for a in audit] == ["create"]
    assert audit[0]["actor_key"] == api_keys["admin"].key.id
    assert audit[0]["after"]["path"] == machine["path"] and audit[0]["before"] is None


def test_read_flat_tree_detail(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    viewer = role_headers["viewer"]
    site_id = line["site"]["id"]
    flat = api_client.get(URL, params={"parent": site_id}, headers=viewer).json()
    assert [a["name"] for a in flat] == ["pack"]
    machines = api_client.get(URL, params={"level": "machine"}, headers=viewer).json()
    assert line["machine"]["id"] in {m["id"] for m in machines}
    assert {m["level"] for m in machines} == {"machine"}
    tree = api_client.get(f"{URL}/tree", headers=viewer).json()
    node = next(n for n in tree if n["id"] == site_id)
    assert node["children"][0]["children"][0]["children"][0]["name"] == "filler"
    detail = api_client.get(f"{URL}/{line['line']['id']}", headers=viewer).json()
    assert detail["path"].endswith("pack/line_1")
    assert [c["name"] for c in detail["children"]] == ["filler"]


def test_rename_repaths_subtree_and_audits(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any], db_session: Session
) -> None:
    area_id = line["area"]["id"]
    response = api_client.patch(
        f"{URL}/{area_id}",
        json={"name": "packing", "display_name": "Packing hall"},
        headers=role_headers["admin"],
    )
    assert response.status_code == 200, response.text
    site = line["site"]["name"]
    assert response.json()["path"] == f"{site}/packing"
    machine = api_client.get(f"{URL}/{line['machine']['id']}", headers=role_headers["viewer"])
    assert machine.json()["path"] == f"{site}/packing/line_1/filler"
    audit = _audit(db_session, area_id)
    assert audit[-1]["action"] == "update"
    assert audit[-1]["before"]["name"] == "pack" and audit[-1]["after"]["name"] == "packing"
    assert audit[-1]["after"]["display_name"] == "Packing hall"


def test_move_machine_to_another_line(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    other = _make(
        api_client, role_headers, name="line_2", level="line", parent_id=line["area"]["id"]
    )
    moved = api_client.patch(
        f"{URL}/{line['machine']['id']}",
        json={"parent_id": other["id"]},
        headers=role_headers["admin"],
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["path"].endswith("/pack/line_2/filler")


def test_timezone_set_and_cleared(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    url = f"{URL}/{line['site']['id']}"
    admin = role_headers["admin"]
    assert (
        api_client.patch(url, json={"timezone": "America/Chicago"}, headers=admin).json()[
            "timezone"
        ]
        == "America/Chicago"
    )
    assert api_client.patch(url, json={"timezone": None}, headers=admin).json()["timezone"] is None


def test_delete_refuses_children_unless_recursive(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any], db_session: Session
) -> None:
    admin = role_headers["admin"]
    area_id = line["area"]["id"]
    refused = api_client.delete(f"{URL}/{area_id}", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["error"]["field"] == "recursive"
    done = api_client.delete(f"{URL}/{area_id}", params={"recursive": "true"}, headers=admin)
    assert done.status_code == 204
    for asset in ("area", "line", "machine"):
        gone = api_client.get(f"{URL}/{line[asset]['id']}", headers=admin)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    audit = _audit(db_session, area_id)
    assert audit[-1]["action"] == "delete" and audit[-1]["before"]["name"] == "pack"
    assert audit[-1]["after"] is None


RULES = [
    ({"level": "machine", "parent": "area"}, "parent_id", "must be a line"),
    ({"level": "area", "parent": "line"}, "parent_id", "must be a site"),
    ({"level": "line"}, "parent_id", "needs a parent area"),
    ({"level": "site", "parent": "site"}, "parent_id", "has no parent"),
    ({"level": "line", "parent": "area", "timezone": "Europe/Paris"}, "timezone", "only sites"),
    ({"level": "site", "timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ({"level": "site", "timezone": "../../etc/passwd"}, "timezone", "IANA"),
    ({"level": "site", "name": "bad/name"}, "name", "pattern"),
    ({"level": "site", "name": ""}, "name", ""),
    ({"level": "galaxy"}, "level", "enterprise"),
    ({"level": "site", "display_name": "a\x00b"}, "display_name", ""),
    ({"level": "site", "extra": 1}, "extra", "not permitted"),
    ({"level": "area", "parent_id": 2147483647}, "parent_id", "no asset"),
    ({"level": "area", "parent_id": 2**40}, "parent_id", "less than or equal"),
]


@pytest.mark.parametrize(("spec", "field", "words"), RULES)
def test_invalid_asset_is_422_naming_the_field(
    api_client: TestClient,
    role_headers: Headers,
    line: dict[str, Any],
    spec: dict[str, Any],
    field: str,
    words: str,
) -> None:
    body: dict[str, Any] = {"name": _name("x"), **spec}
    if "parent" in body:
        body["parent_id"] = line[body.pop("parent")]["id"]
    response = api_client.post(URL, json=body, headers=role_headers["admin"])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == field
    assert words in error["message"]


def test_duplicate_path_is_409(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    body = {"name": "line_1", "level": "line", "parent_id": line["area"]["id"]}
    response = api_client.post(URL, json=body, headers=role_headers["admin"])
    assert response.status_code == 409
    assert response.json()["error"]["field"] == "name"
    rename = api_client.patch(
        f"{URL}/{line['site']['id']}", json={"name": "line_1"}, headers=role_headers["admin"]
    )
    assert rename.status_code == 200  # a root named like a line elsewhere is no clash


def test_patch_rules(api_client: TestClient, role_headers: Headers, line: dict[str, Any]) -> None:
    admin = role_headers["admin"]
    url = f"{URL}/{line['machine']['id']}"
    cases = [
        ({"name": None}, "name"),
        ({"parent_id": line["area"]["id"]}, "parent_id"),
        ({"parent_id": line["machine"]["id"]}, "parent_id"),
        ({"timezone": "Europe/Berlin"}, "timezone"),
        ({"level": "line"}, "level"),
    ]
    for body, field in cases:
        response = api_client.patch(url, json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["field"] == field, body
    assert api_client.patch(f"{URL}/2147483600", json={}, headers=admin).status_code == 404


def test_tags_with_last_values(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any], db_session: Session
) -> None:
    machine_id = line["machine"]["id"]
    ids = {}
    for name, datatype, unit in [
        ("speed", "float64", "rpm"),
        ("recipe", "string", None),
        ("silent", "int16", None),
        ("temp", "float32", "°C"),
    ]:
        ids[name] = db_session.execute(
            text(
                "INSERT INTO tags (asset_id, name, datatype, unit) VALUES (:a, :n, :d, :u)"
                " RETURNING id"
            ),
            {"a": machine_id, "n": name, "d": datatype, "u": unit},
        ).scalar_one()
    t0 = datetime(2026, 3, 1, 6, tzinfo=UTC)
    samples = [
        (t0, ids["speed"], 100.0, 0),
        (t0 + timedelta(seconds=2), ids["speed"], 120.5, 1),
        (t0 + timedelta(seconds=1), ids["speed"], 110.0, 0),
        (t0, ids["temp"], 20.0, 0),
        (t0 + timedelta(seconds=5), ids["temp"], None, 2),
    ]
    for time, tag, value, quality in samples:
        db_session.execute(
            text("INSERT INTO samples (time, tag_id, value, quality) VALUES (:t, :g, :v, :q)"),
            {"t": time, "g": tag, "v": value, "q": quality},
        )
    for offset, word in ((0, "A-100"), (30, "B-200")):
        db_session.execute(
            text("INSERT INTO samples_text (time, tag_id, value, quality) VALUES (:t, :g, :v, 0)"),
            {"t": t0 + timedelta(seconds=offset), "g": ids["recipe"], "v": word},
        )
    db_session.commit()

    response = api_client.get(f"{URL}/{machine_id}/tags", headers=role_headers["viewer"])
    assert response.status_code == 200, response.text
    tags = {t["name"]: t for t in response.json()}
    assert list(tags) == ["recipe", "silent", "speed", "temp"]
    assert tags["speed"]["unit"] == "rpm" and tags["speed"]["datatype"] == "float64"
    assert tags["speed"]["last"] == {
        "time": "2026-03-01T06:00:02Z",
        "value": 120.5,
        "quality": "uncertain",
    }
    assert tags["recipe"]["last"]["value"] == "B-200"
    assert tags["temp"]["last"]["value"] is None and tags["temp"]["last"]["quality"] == "bad"
    assert tags["silent"]["last"] is None
    assert (
        api_client.get(f"{URL}/2147483000/tags", headers=role_headers["viewer"]).status_code == 404
    )


NONSENSE = [
    ("GET", f"{URL}/abc", None),
    ("GET", f"{URL}/-1", None),
    ("GET", f"{URL}/0/tags", None),
    ("GET", f"{URL}/99999999999999999999999", None),
    ("GET", f"{URL}?level=galaxy", None),
    ("GET", f"{URL}?parent=1e9", None),
    ("GET", f"{URL}?parent=%00", None),
    ("POST", URL, "not json"),
    ("POST", URL, [1, 2, 3]),
    ("POST", URL, {"name": "\u0000", "level": "site"}),
    ("POST", URL, {"name": "x" * 10_000, "level": "site"}),
    ("POST", URL, {"name": "ok-name", "level": "site", "timezone": "\u0000"}),
    ("POST", URL, {"name": "ok-name", "level": "site", "timezone": "x" * 5000}),
    ("PATCH", f"{URL}/1", {"parent_id": "one"}),
    ("PATCH", f"{URL}/1", None),
    ("DELETE", f"{URL}/1?recursive=maybe", None),
    ("PUT", URL, None),
    ("GET", "/api/v1/nothing-here", None),
]


@pytest.mark.parametrize(("method", "path", "body"), NONSENSE)
def test_nonsense_is_a_json_4xx(
    api_client: TestClient, role_headers: Headers, method: str, path: str, body: object
) -> None:
    kwargs: dict[str, Any] = {"headers": role_headers["admin"]}
    if isinstance(body, str):
        kwargs["content"] = body
        kwargs["headers"] = {**role_headers["admin"], "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    response = api_client.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_naive_timestamp_message() -> None:
    """The shared handler turns pydantic's timezone error into the house message."""
    app = FastAPI()
    install_handlers(app)

    @app.get("/t")
    def probe(at: AwareDatetime) -> str:
        return at.isoformat()

    client = TestClient(app)
    response = client.get("/t", params={"at": "2026-01-01T06:00:00"})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "validation_error",
        "message": f"at: {NAIVE_TIMESTAMP}",
        "field": "at",
        "details": [{"field": "at", "message": NAIVE_TIMESTAMP}],
    }
    assert client.get("/t", params={"at": "2026-01-01T06:00:00+01:00"}).status_code == 200


def test_unexpected_error_is_generic_500(capsys: pytest.CaptureFixture[str]) -> None:
    app = FastAPI()
    install_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals /etc/shadow")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text
    logged = capsys.readouterr()
    assert "RuntimeError: secret internals" in logged.out + logged.err  # the traceback is logged


def test_health_docs_metrics(api_client: TestClient) -> None:
    assert api_client.get("/health").json() == {"status": "ok", "database": "ok"}
    assert api_client.get("/docs").status_code == 200
    spec = api_client.get("/openapi.json").json()
    assert spec["info"]["title"] == "linepulse API"
    for path, item in spec["paths"].items():
        for op in item.values():
            assert op.get("summary") and op.get("description"), path
    api_client.get("/api/v1/assets")
    metrics = api_client.get("/metrics").text
    assert (
        'linepulse_api_requests_total{method="GET",route="/api/v1/assets",status="401"}' in metrics
    )


def test_health_reports_unreachable_database(pg_admin_url: str) -> None:
    from api.app import create_app
    from tests.harness import free_port

    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    app = create_app(ApiSettings(database_url=dead))
    response = TestClient(app).get("/health")
    assert response.status_code == 503 and response.json()["database"] == "unreachable"


def test_cors_only_when_configured(api_database_url: str) -> None:
    from api.app import create_app

    origin = "https://dash.example.com"
    closed = TestClient(create_app(ApiSettings(database_url=api_database_url)))
    assert (
        "access-control-allow-origin"
        not in closed.get("/health", headers={"Origin": origin}).headers
    )
    opened = TestClient(
        create_app(ApiSettings(database_url=api_database_url, cors_origins=origin))  # type: ignore[arg-type]
    )
    answer = opened.get("/health", headers={"Origin": origin})
    assert answer.headers["access-control-allow-origin"] == origin


def test_production_refuses_default_database_url() -> None:
    with pytest.raises(ValueError, match="development default"):
        ApiSettings(environment="production")
