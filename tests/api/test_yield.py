"""GET /api/v1/yield against real PostgreSQL: subtree, clipping, per product and reason, nulls."""

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


# (machine, minute from T0, good, reject, product). Rows at -1 and at 60 (= END) lie just
# outside [T0, END); line_10 is a sibling whose path starts with "line_1" but is not under it.
COUNTS = [
    ("m1", -1, 90, 10, "A"), ("m1", 0, 45, 5, "A"), ("m1", 10, 27, 3, "B"),
    ("m1", 20, 20, 0, None), ("m1", 60, 0, 40, "A"), ("m2", 30, 54, 6, "A"),
    ("m2", 35, 0, 0, "C"), ("m2", 59.999, 5, 5, None), ("other", 30, 1, 999, "A"),
]  # fmt: skip


@pytest.fixture
def line(db_session: Session) -> dict[str, Any]:
    """line_1 with machines m1 and m2, a sibling line_10 with machine 'other', and COUNTS."""
    site = _asset(db_session, name=f"site-{uuid.uuid4().hex[:8]}", level="site", parent=None)
    area = _asset(db_session, name="pack", level="area", parent=site)
    ln = _asset(db_session, name="line_1", level="line", parent=area)
    sibling = _asset(db_session, name="line_10", level="line", parent=area)
    assets = {
        "line": ln,
        "m1": _asset(db_session, name="m1", level="machine", parent=ln),
        "m2": _asset(db_session, name="m2", level="machine", parent=ln),
        "other": _asset(db_session, name="other", level="machine", parent=sibling),
    }
    rows = [{"a": assets[m]["id"], "t": _m(t), "g": g, "r": r, "p": p} for m, t, g, r, p in COUNTS]
    db_session.execute(
        text(
            "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
            " VALUES (:a, :t, :g + :r, :g, :r, :p)"
        ),
        rows,
    )
    db_session.commit()
    return assets


def _get(client: TestClient, headers: Headers, **params: Any) -> Any:
    params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
    response = client.get("/api/v1/yield", params=params, headers=headers["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def _fig(body: Any) -> tuple[Any, ...]:
    return (
        body["total"], body["good"], body["reject"], body["first_pass_yield"], body["scrap_rate"]
    )  # fmt: skip


def test_machine_clipped_to_the_range(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    body = _get(api_client, role_headers, asset_id=line["m1"]["id"], start=T0, end=END)
    # The rows at T0 (included) and END (excluded); the one a minute before is out.
    assert _fig(body["whole"]) == (100, 92, 8, pytest.approx(0.92), pytest.approx(0.08))
    assert body["by"] == "none" and body["products"] == []
    # Narrower: only the row at minute 10 is in [10, 20).
    body = _get(api_client, role_headers, asset_id=line["m1"]["id"], start=_m(10), end=_m(20))
    assert _fig(body["whole"]) == (30, 27, 3, pytest.approx(0.9), pytest.approx(0.1))
    # Widened by a minute each way: both edge rows come in.
    body = _get(api_client, role_headers, asset_id=line["m1"]["id"], start=_m(-1), end=_m(61))
    assert _fig(body["whole"])[:3] == (240, 182, 58)


def test_line_by_product(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    body = _get(
        api_client, role_headers, asset_id=line["line"]["id"], start=T0, end=END, by="product"
    )
    assert _fig(body["whole"]) == (
        170, 151, 19, pytest.approx(151 / 170), pytest.approx(19 / 170)
    )  # fmt: skip
    # Most parts first; B and the null product tie at 30; C made none: null ratios.
    assert [(p["product"], *_fig(p)) for p in body["products"]] == [
        ("A", 110, 99, 11, pytest.approx(0.9), pytest.approx(0.1)),
        ("B", 30, 27, 3, pytest.approx(0.9), pytest.approx(0.1)),
        (None, 30, 25, 5, pytest.approx(25 / 30), pytest.approx(5 / 30)),
        ("C", 0, 0, 0, None, None),
    ]


def test_zero_total_gives_null_ratios(
    api_client: TestClient, role_headers: Headers, line: dict[str, Any]
) -> None:
    m2 = line["m2"]["id"]
    empty = _get(api_client, role_headers, asset_id=m2, start=_m(40), end=_m(50), by="product")
    assert _fig(empty["whole"]) == (0, 0, 0, None, None) and empty["products"] == []
    zero = _get(api_client, role_headers, asset_id=m2, start=_m(31), end=_m(40), by="product")
    assert _fig(zero["whole"]) == (0, 0, 0, None, None)
    assert [p["product"] for p in zero["products"]] == ["C"]


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"start": "2025-03-03T06:00:00", "end": END.isoformat()}, "start", NAIVE_TIMESTAMP),
        ({"start": T0.isoformat(), "end": "2025-03-03T07:00:00"}, "end", NAIVE_TIMESTAMP),
        ({"start": END.isoformat(), "end": T0.isoformat()}, "end", "after start"),
        ({"start": T0.isoformat(), "end": T0.isoformat()}, "end", "after start"),
        ({"start": "2023-01-01T00:00:00Z", "end": END.isoformat()}, "start", "at most"),
        ({"start": T0.isoformat(), "end": END.isoformat(), "by": "shift"}, "by", ""),
        ({"start": T0.isoformat()}, "end", "required"),
    ],
)
def test_bad_input_422(
    api_client: TestClient,
    role_headers: Headers,
    line: dict[str, Any],
    params: dict[str, Any],
    field: str,
    needle: str,
) -> None:
    params = {"asset_id": line["m1"]["id"], **params}
    response = api_client.get("/api/v1/yield", params=params, headers=role_headers["viewer"])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and needle in error["message"]


def test_unknown_asset_404_and_no_key_401(api_client: TestClient, role_headers: Headers) -> None:
    params: dict[str, Any] = {
        "asset_id": 2**31 - 2,
        "start": T0.isoformat(),
        "end": END.isoformat(),
    }
    response = api_client.get("/api/v1/yield", params=params, headers=role_headers["viewer"])
    assert response.status_code == 404 and response.json()["error"]["field"] == "asset_id"
    assert api_client.get("/api/v1/yield", params=params).status_code == 401
    bad_key = {"Authorization": "Bearer not-a-key"}
    assert api_client.get("/api/v1/yield", params=params, headers=bad_key).status_code == 401


# ---------------------------------------------------------------------------------------
# Rejects by reason (production_rejects), with the unattributed rest and the excess.

# (machine, minute, reason, count, product). m1/A: 5 rejects, 4 by reason (1 unattributed);
# m1/B: all 3; m1/None: 0 rejects but 2 by reason (2 over); m2/A: 6, 4 by reason (2
# unattributed); m2/None: 5, none by reason; m2/D: a product no count row has (1 over).
# The rows at -1 and 60 and on the sibling line lie outside.
REJECTS = [
    ("m1", 0, "scratch", 3, "A"), ("m1", 0, "dent", 1, "A"), ("m1", 10, "scratch", 3, "B"),
    ("m1", 20, "dent", 2, None), ("m2", 30, "scratch", 2, "A"), ("m2", 30, "short", 2, "A"),
    ("m2", 40, "dent", 1, "D"), ("m1", -1, "dent", 10, "A"), ("m1", 60, "scratch", 40, "A"),
    ("other", 30, "scratch", 999, "A"),
]  # fmt: skip


@pytest.fixture
def rejects(db_session: Session, line: dict[str, Any]) -> dict[str, Any]:
    """The line of ``line`` with REJECTS."""
    rows = [{"a": line[m]["id"], "t": _m(t), "r": r, "n": n, "p": p} for m, t, r, n, p in REJECTS]
    db_session.execute(
        text(
            "INSERT INTO production_rejects (asset_id, time, reason, count, product)"
            " VALUES (:a, :t, :r, :n, :p)"
        ),
        rows,
    )
    db_session.commit()
    return line


def _reasons(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["reason"], r["count"], r["share"], r["rate"]) for r in rows]


def test_line_by_reason(
    api_client: TestClient, role_headers: Headers, rejects: dict[str, Any]
) -> None:
    body = _get(
        api_client, role_headers, asset_id=rejects["line"]["id"], start=T0, end=END, by="reason"
    )
    # The same whole as every other view; reasons 14 + unattributed 8 - excess 3 = 19.
    assert _fig(body["whole"])[:3] == (170, 151, 19)
    assert body["products"] == [] and body["over_attributed"] == 3
    assert _reasons(body["reasons"]) == [
        ("scratch", 8, pytest.approx(8 / 22), pytest.approx(8 / 170)),
        ("dent", 4, pytest.approx(4 / 22), pytest.approx(4 / 170)),
        ("short", 2, pytest.approx(2 / 22), pytest.approx(2 / 170)),
        (None, 8, pytest.approx(8 / 22), pytest.approx(8 / 170)),
    ]
    assert "counted 3 rejects more than the reject counters" in body["note"]


def test_line_by_product_and_reason_agrees_with_by_product(
    api_client: TestClient, role_headers: Headers, rejects: dict[str, Any]
) -> None:
    line_id = rejects["line"]["id"]
    both = _get(api_client, role_headers, asset_id=line_id, start=T0, end=END, by="product_reason")
    plain = _get(api_client, role_headers, asset_id=line_id, start=T0, end=END, by="product")
    products = {p["product"]: p for p in both["products"]}
    # Ties by code, None last; D only the reason counters saw (zero counts, all excess).
    assert list(products) == ["A", "B", None, "C", "D"]
    assert [_fig(p) for p in plain["products"]] == [_fig(p) for p in both["products"][:4]]
    assert _fig(both["whole"]) == _fig(plain["whole"])
    assert _fig(products["D"]) == (0, 0, 0, None, None)
    got = {p: (_reasons(row["reasons"]), row["over_attributed"]) for p, row in products.items()}
    assert got == {
        "A": (
            [
                ("scratch", 5, pytest.approx(5 / 11), pytest.approx(5 / 110)),
                ("short", 2, pytest.approx(2 / 11), pytest.approx(2 / 110)),
                ("dent", 1, pytest.approx(1 / 11), pytest.approx(1 / 110)),
                (None, 3, pytest.approx(3 / 11), pytest.approx(3 / 110)),
            ],
            0,
        ),
        "B": ([("scratch", 3, 1.0, pytest.approx(0.1))], 0),
        None: (
            [
                ("dent", 2, pytest.approx(2 / 7), pytest.approx(2 / 30)),
                (None, 5, pytest.approx(5 / 7), pytest.approx(5 / 30)),
            ],
            2,
        ),
        "C": ([], 0),
        "D": ([("dent", 1, 1.0, None)], 1),
    }
    # The overall breakdown is the same as by=reason's, and the products' excess adds up.
    by_reason = _get(api_client, role_headers, asset_id=line_id, start=T0, end=END, by="reason")
    assert both["reasons"] == by_reason["reasons"]
    assert sum(p["over_attributed"] for p in both["products"]) == both["over_attributed"]
    for p in plain["products"]:
        assert p["reasons"] == [] and p["over_attributed"] is None
    assert plain["reasons"] == [] and plain["over_attributed"] is None


def test_machine_by_reason_edges(
    api_client: TestClient, role_headers: Headers, rejects: dict[str, Any]
) -> None:
    m1, m2 = rejects["m1"]["id"], rejects["m2"]["id"]
    body = _get(api_client, role_headers, asset_id=m1, start=T0, end=END, by="reason")
    assert _fig(body["whole"])[:3] == (100, 92, 8) and body["over_attributed"] == 2
    assert [(r["reason"], r["count"]) for r in body["reasons"]] == [
        ("scratch", 6), ("dent", 3), (None, 1),
    ]  # fmt: skip
    # Rejects but no reason counter: all unattributed, and said so.
    body = _get(api_client, role_headers, asset_id=m2, start=_m(50), end=END, by="reason")
    assert _reasons(body["reasons"]) == [(None, 5, 1.0, 0.5)] and body["over_attributed"] == 0
    assert "every reject is unattributed" in body["note"]
    # A reason count where no part was made: no rate, the excess noted.
    body = _get(api_client, role_headers, asset_id=m2, start=_m(40), end=_m(50), by="reason")
    assert _reasons(body["reasons"]) == [("dent", 1, 1.0, None)] and body["over_attributed"] == 1
    # Nothing at all.
    body = _get(api_client, role_headers, asset_id=m1, start=_m(30), end=_m(50), by="reason")
    assert (body["reasons"], body["over_attributed"], body["note"]) == ([], 0, None)
