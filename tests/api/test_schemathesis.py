"""schemathesis against the app's own OpenAPI schema, and every route's key and role rules.

Every operation of the app is called with generated input (valid and invalid) and an admin
key, through the Starlette test client against the module's real database: no answer may
be a 5xx, and every answer must be one the schema declares (status code, content type,
body). A few assets, tags and rows are seeded first, and generated ids are sometimes
replaced by seeded ones, so requests reach real rows and not only 404s.

The role test is built from ``app.routes``: a route added later is covered without
editing this file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.app import API_PREFIX, create_app
from api.auth.keys import RANK
from api.config import ApiSettings
from api.errors import NOT_JSON
from tests.api.helpers import insert_asset

Headers = dict[str, dict[str, str]]
# The schema is the app's own; building it needs no database (the engine connects lazily).
_SCHEMA_APP = create_app(ApiSettings(database_url="postgresql://schema@127.0.0.1:9/none"))
SCHEMA = schemathesis.openapi.from_dict(_SCHEMA_APP.openapi())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)  # a Monday: the seeded shift's day
# Ids of the seeded rows (any table): generated ids are sometimes swapped for one of them.
_SEEDED: dict[str, Any] = {"site": None, "ids": [1]}


def _seed_ids(values: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Keep the generated values, or swap integer ``*_id`` values for seeded-row ids."""
    keys = [k for k, v in values.items() if k.endswith("_id") and type(v) is int]
    if not keys:
        return st.just(values)
    ids = st.none() | st.sampled_from(_SEEDED["ids"])
    swaps = st.fixed_dictionaries({k: ids for k in keys})
    return swaps.map(lambda s: values | {k: v for k, v in s.items() if v is not None})


def _seed_range(values: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Keep a generated start/end, or swap it for a short range around the seeded rows."""
    if not all(isinstance(values.get(k), str) for k in ("start", "end")):
        return st.just(values)
    ranges = st.tuples(st.integers(-180, 120), st.integers(1, 3 * 24 * 60)).map(
        lambda r: {
            "start": (T0 + timedelta(minutes=r[0])).isoformat(),
            "end": (T0 + timedelta(minutes=r[0] + r[1])).isoformat(),
        }
    )
    return st.just(values) | ranges.map(lambda r: values | r)


@SCHEMA.hook
def flatmap_path_parameters(_context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Path ids sometimes point at seeded rows."""
    return _seed_ids(path_parameters) if path_parameters else st.just(path_parameters)


@SCHEMA.hook
def flatmap_query(_context: Any, query: dict[str, Any] | None) -> Any:
    """Query ids sometimes point at seeded rows, and ranges at the seeded time."""
    if not query:
        return st.just(query)
    return _seed_ids(query).flatmap(_seed_range)


def _insert(s: Session, table: str, returning: str = "id", **row: Any) -> Any:
    cols, params = ", ".join(row), ", ".join(f":{c}" for c in row)
    sql = f"INSERT INTO {table} ({cols}) VALUES ({params}) RETURNING {returning}"
    return s.execute(text(sql), row).scalar_one()


def _seed(s: Session) -> tuple[int, list[int]]:
    """A site with a calendar, a line whose machine has settings, states, counts, tags and a
    product; returns the site's id and the ids of every row made."""
    site = insert_asset(s, name=f"st-{uuid.uuid4().hex[:6]}", level="site", parent=None)
    s.execute(text("UPDATE assets SET timezone = 'Europe/Berlin' WHERE id = :i"), {"i": site["id"]})
    area = insert_asset(s, name="area", level="area", parent=site)
    line = insert_asset(s, name="line", level="line", parent=area)
    mid = insert_asset(s, name="filler", level="machine", parent=line)["id"]
    ids = [site["id"], area["id"], line["id"], mid]
    product, code = f"P-{uuid.uuid4().hex[:6]}", f"JAM-{uuid.uuid4().hex[:6]}"
    ids += _seed_config(s, site_id=site["id"], machine_id=mid, product=product, code=code)
    ids += _seed_data(s, machine_id=mid, product=product, code=code)
    s.commit()
    return int(site["id"]), sorted(set(ids))


def _seed_config(
    s: Session, *, site_id: int, machine_id: int, product: str, code: str
) -> list[int]:
    """Shift, holiday, planned downtime, reason, stop reason, state class, product."""
    hour = timedelta(hours=1)
    _insert(s, "downtime_reasons", "code", code=code, reason="jam", category="breakdown")
    _insert(s, "machine_settings", "asset_id", asset_id=machine_id, is_line_output=True)
    product_id = _insert(s, "products", code=product, ideal_cycle_s=1.0)
    _insert(
        s,
        "product_cycle_times",
        "product_id",
        product_id=product_id,
        asset_id=machine_id,
        ideal_cycle_s=0.9,
    )
    return [
        product_id,
        _insert(
            s,
            "shifts",
            site_id=site_id,
            name="early",
            weekday=0,
            start_local=time(6),
            duration=8 * hour,
        ),
        _insert(s, "shift_exceptions", site_id=site_id, date=date(2026, 3, 9), kind="holiday"),
        _insert(
            s,
            "planned_downtime",
            asset_id=machine_id,
            category="break",
            start_time=T0 + 3 * hour,
            end_time=T0 + 3.5 * hour,
        ),
        _insert(
            s,
            "stop_reasons",
            asset_id=machine_id,
            start_time=T0 + hour,
            end_time=T0 + 2 * hour,
            code=code,
        ),
        _insert(
            s, "state_loss_classes", asset_id=machine_id, state="odd", loss_class="unplanned_down"
        ),
    ]


def _seed_data(s: Session, *, machine_id: int, product: str, code: str) -> list[int]:
    """Three hours of states and counts of the product, and two tags with samples."""
    for hour, state in enumerate(("running", "faulted", "running")):
        _insert(
            s,
            "state_intervals",
            "asset_id",
            asset_id=machine_id,
            state=state,
            code=code if state == "faulted" else None,
            start_time=T0 + timedelta(hours=hour),
            end_time=T0 + timedelta(hours=hour + 1),
        )
    for minute in range(0, 180, 3):
        _insert(
            s,
            "production_counts",
            "asset_id",
            asset_id=machine_id,
            product=product,
            time=T0 + timedelta(minutes=minute),
            total=10,
            good=9,
            reject=1,
        )
    _insert(
        s,
        "production_rejects",
        "asset_id",
        asset_id=machine_id,
        time=T0,
        reason="scratch",
        count=1,
        product=product,
    )
    tags = []
    for name, table in (("speed", "samples"), ("recipe", "samples_text")):
        tag = _insert(
            s,
            "tags",
            asset_id=machine_id,
            name=name,
            datatype="string" if table == "samples_text" else "float64",
        )
        for i in range(30):
            value: Any = str(i) if table == "samples_text" else float(i)
            _insert(s, table, "tag_id", time=T0 + timedelta(minutes=i), tag_id=tag, value=value)
        tags.append(tag)
    return tags


@pytest.fixture
def seeded(db_session: Session) -> None:
    """Seeded rows for the next operation (again when an earlier operation deleted them)."""
    site = _SEEDED["site"]
    if (
        site is None
        or db_session.execute(text("SELECT 1 FROM assets WHERE id = :i"), {"i": site}).first()
        is None
    ):
        try:
            site, ids = _seed(db_session)
        except Exception:
            db_session.rollback()
            raise
        _SEEDED.update(site=site, ids=ids)


@SCHEMA.parametrize()
# ``seeded`` is function-scoped on purpose: once per operation, not per example.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_operation_conforms(
    case: schemathesis.Case,
    api_client: TestClient,
    role_headers: Headers,
    seeded: None,
) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=role_headers["admin"])
    response = api_client.request(**_httpx_kwargs(kwargs))
    case.validate_response(response, checks=CHECKS)


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis serialises for requests; the test client speaks httpx."""
    out: dict[str, Any] = {
        k: kwargs[k] for k in ("method", "url", "headers", "params") if k in kwargs
    }
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    if "data" in kwargs:
        data = kwargs["data"]
        out["content" if isinstance(data, bytes | str) else "data"] = data
    return out


# --- every /api/v1 route needs a key; every write refuses a viewer ------------------------


def _api_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, lowest role) of every API route, from the app itself."""
    found = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if not isinstance(route, APIRoute) or not (ctx.path or "").startswith(API_PREFIX):
            continue
        for method in sorted(ctx.methods or ()):
            found.append((method, str(ctx.path), _lowest_role(route)))
    return found


def _lowest_role(route: APIRoute) -> str:
    """The role the route's dependencies ask for (``require_<role>``); "none" if none."""

    def calls(dep: Any) -> Iterator[Any]:
        for sub in dep.dependencies:
            yield sub.call
            yield from calls(sub)

    names = {getattr(c, "__name__", "") for c in calls(route.dependant)}
    asked = [role for role in RANK if f"require_{role}" in names]
    return max(asked, key=RANK.__getitem__, default="none")


ROUTES = _api_routes(_SCHEMA_APP)
_PARAM = re.compile(r"\{[^}]+\}")


def test_the_route_table_is_not_empty() -> None:
    assert len(ROUTES) >= 10
    assert {m for m, _, _ in ROUTES} >= {"GET", "POST", "PATCH", "DELETE"}


@pytest.mark.parametrize(
    ("method", "path", "lowest"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
def test_route_needs_a_key_and_the_right_role(
    api_client: TestClient, role_headers: Headers, method: str, path: str, lowest: str
) -> None:
    assert lowest in RANK, f"{method} {path} asks for no role"
    if method not in ("GET", "HEAD"):
        assert RANK[lowest] > RANK["viewer"], f"{method} {path} lets a viewer write"
    url = _PARAM.sub("1", path)  # auth comes before the path is looked up
    anonymous = api_client.request(method, url)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    for role in (r for r in RANK if RANK[r] < RANK[lowest]):
        refused = api_client.request(method, url, headers=role_headers[role])
        assert refused.status_code == 403, (role, refused.text)
        assert refused.json()["error"]["code"] == "forbidden"
    if method == "GET":  # a read changes nothing, so the allowed role may try it
        allowed = api_client.get(url, headers=role_headers[lowest])
        assert allowed.status_code not in (401, 403), allowed.text


@pytest.mark.parametrize("body", [b"\xff\xfe not utf-8", b'{"name": ', b'"\xc3('])
def test_unreadable_body_is_the_declared_422(
    api_client: TestClient, role_headers: Headers, body: bytes
) -> None:
    """Bodies FastAPI cannot read at all (its own 400) answer like broken JSON: a 422."""
    headers = role_headers["admin"] | {"Content-Type": "application/json"}
    response = api_client.post("/api/v1/assets", content=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["message"], error["field"]) == ("validation_error", NOT_JSON, None)
