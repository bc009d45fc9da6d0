"""GET /api/v1/tags/{id}/samples against real PostgreSQL: raw, buckets, rollups, text, m4, lttb."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.errors import NAIVE_TIMESTAMP
from api.timeseries import service, shape

Headers = dict[str, dict[str, str]]
T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)


def _url(tag_id: int) -> str:
    return f"/api/v1/tags/{tag_id}/samples"


@pytest.fixture
def tag_id(db_session: Session) -> int:
    """A fresh tag on a fresh site > area > line > machine."""
    site = f"site-{uuid.uuid4().hex[:8]}"
    parent = None
    for level, name in (("site", site), ("area", "a"), ("line", "l"), ("machine", "m")):
        path = name if parent is None else f"{parent[1]}/{name}"
        asset_id = db_session.execute(
            text(
                "INSERT INTO assets (name, level, parent_id, path)"
                " VALUES (:n, :l, :p, :path) RETURNING id"
            ),
            {"n": name, "l": level, "p": parent[0] if parent else None, "path": path},
        ).scalar_one()
        parent = (asset_id, path)
    assert parent is not None
    tid = db_session.execute(
        text("INSERT INTO tags (asset_id, name) VALUES (:a, 'temp') RETURNING id"),
        {"a": parent[0]},
    ).scalar_one()
    db_session.commit()
    return int(tid)


def _insert(session: Session, table: str, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    session.execute(
        text(
            f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join(':' + c for c in columns)})"
        ),
        rows,
    )
    session.commit()


def _get(
    client: TestClient, headers: Headers, tag_id: int, start: datetime, end: datetime, **kw: Any
) -> dict[str, Any]:
    params = {"start": start.isoformat(), "end": end.isoformat(), **kw}
    response = client.get(_url(tag_id), params=params, headers=headers["viewer"])
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_raw_points_in_range_with_quality(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    rows = [
        {"time": T0 - timedelta(seconds=1), "tag_id": tag_id, "value": 99.0, "quality": 0},
        {"time": T0, "tag_id": tag_id, "value": 1.5, "quality": 0},
        {"time": T0 + timedelta(seconds=1), "tag_id": tag_id, "value": 2.5, "quality": 1},
        {"time": T0 + timedelta(seconds=2), "tag_id": tag_id, "value": None, "quality": 2},
        {"time": T0 + timedelta(seconds=10), "tag_id": tag_id, "value": 98.0, "quality": 0},
    ]
    _insert(db_session, "samples", rows)
    body = _get(api_client, role_headers, tag_id, T0, T0 + timedelta(seconds=10))
    assert (body["kind"], body["method"], body["source"], body["bucket_s"], body["buckets"]) == (
        "numeric", "raw", "samples", None, [],
    )  # fmt: skip
    got = [(p["value"], p["quality"]) for p in body["points"]]
    assert got == [(1.5, "good"), (2.5, "uncertain"), (None, "bad")]
    assert datetime.fromisoformat(body["points"][0]["time"]) == T0


def test_downsampling_min_max_avg_per_bucket(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    rows = [
        {"time": T0 + timedelta(seconds=i), "tag_id": tag_id, "value": float(i), "quality": 0}
        for i in range(100)
    ]
    # Not good: never part of a bucket (as in the rollups).
    rows.append({"time": T0 + timedelta(seconds=5.5), "tag_id": tag_id, "value": 1e6, "quality": 1})
    _insert(db_session, "samples", rows)
    end = T0 + timedelta(seconds=100)
    body = _get(api_client, role_headers, tag_id, T0, end, max_points=10)
    assert (body["method"], body["source"], body["bucket_s"], body["points"]) == (
        "buckets", "samples", 10.0, [],
    )  # fmt: skip
    assert body["note"] is None and body["preselected"] is False
    buckets = body["buckets"]
    assert len(buckets) == 10
    for k, b in enumerate(buckets):
        assert datetime.fromisoformat(b["time"]) == T0 + timedelta(seconds=10 * k)
        assert (b["min"], b["max"], b["count"]) == (10 * k, 10 * k + 9, 10)
        assert b["avg"] == pytest.approx(10 * k + 4.5)
    # An uneven width: still at most N buckets, and together they hold every good sample.
    body = _get(api_client, role_headers, tag_id, T0, end, max_points=7)
    buckets = body["buckets"]
    assert 0 < len(buckets) <= 7
    assert sum(b["count"] for b in buckets) == 100
    assert sum(b["avg"] * b["count"] for b in buckets) == pytest.approx(sum(range(100)))
    assert min(b["min"] for b in buckets) == 0 and max(b["max"] for b in buckets) == 99


def test_long_range_reaggregates_the_minute_rollup(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    rows = [
        {
            "bucket": T0 + timedelta(minutes=i),
            "tag_id": tag_id,
            "min": float(i),
            "max": float(i + 10),
            "avg": float(i + 5),
            "count": i + 1,
            "last": float(i),
        }
        for i in range(30)
    ]
    _insert(db_session, "samples_1m", rows)
    # A raw sample the rollup does not know of: proof the answer comes from the rollup.
    _insert(db_session, "samples", [{"time": T0, "tag_id": tag_id, "value": -5.0, "quality": 0}])
    # One day in 100 points: 14.4 min, rounded up to whole minutes.
    body = _get(api_client, role_headers, tag_id, T0, T0 + timedelta(days=1), max_points=100)
    assert (body["source"], body["bucket_s"]) == ("samples_1m", 15 * 60.0)
    buckets = body["buckets"]
    assert len(buckets) == 2
    for b, minutes in zip(buckets, (range(0, 15), range(15, 30)), strict=True):
        weights = [i + 1 for i in minutes]
        assert b["min"] == minutes[0] and b["max"] == minutes[-1] + 10
        assert b["count"] == sum(weights)
        assert b["avg"] == pytest.approx(sum((i + 5) * (i + 1) for i in minutes) / sum(weights))


def test_longer_range_uses_the_hour_rollup(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    hour = [
        {
            "bucket": T0 + timedelta(hours=h),
            "tag_id": tag_id,
            "min": float(h),
            "max": float(h),
            "avg": float(h),
            "count": 60,
            "last": float(h),
        }
        for h in range(24)
    ]
    _insert(db_session, "samples_1h", hour)
    minute = [dict(hour[0], bucket=T0, min=-1.0)]  # only in the 1 m rollup
    _insert(db_session, "samples_1m", minute)
    # 30 days in 100 points: 7.2 h, rounded up to 8 h.
    body = _get(api_client, role_headers, tag_id, T0, T0 + timedelta(days=30), max_points=100)
    assert (body["source"], body["bucket_s"]) == ("samples_1h", 8 * 3600.0)
    got = [(b["min"], b["max"], b["avg"], b["count"]) for b in body["buckets"]]
    assert got == [(0, 7, 3.5, 480), (8, 15, 11.5, 480), (16, 23, 19.5, 480)]


def test_text_tag_raw_and_capped(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    rows = [
        {"time": T0 + timedelta(seconds=i), "tag_id": tag_id, "value": f"recipe-{i}", "quality": 0}
        for i in range(5)
    ]
    _insert(db_session, "samples_text", rows)
    end = T0 + timedelta(minutes=1)
    body = _get(api_client, role_headers, tag_id, T0, end, max_points=3)
    assert (body["kind"], body["source"], body["truncated"]) == ("text", "samples_text", True)
    assert [p["value"] for p in body["points"]] == ["recipe-0", "recipe-1", "recipe-2"]
    body = _get(api_client, role_headers, tag_id, T0, end)
    assert len(body["points"]) == 5 and body["truncated"] is False


A, B = "2025-03-03T06:00:00", "2025-03-03T07:00:00"
Z = "+00:00"


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"start": A, "end": B + Z}, "start", NAIVE_TIMESTAMP),
        ({"start": A + Z, "end": B}, "end", NAIVE_TIMESTAMP),
        ({"start": B + Z, "end": A + Z}, "end", "after start"),
        ({"start": "2015-03-03T06:00:00" + Z, "end": A + Z}, "start", "at most 1830 days"),
        ({"start": A + Z, "end": B + Z, "max_points": 10001}, "max_points", "10000"),
        ({"start": A + Z, "end": B + Z, "max_points": 0}, "max_points", ""),
        ({"start": A + Z}, "end", "required"),
    ],
)
def test_bad_input_is_a_clear_422(
    api_client: TestClient,
    role_headers: Headers,
    tag_id: int,
    params: dict[str, Any],
    field: str,
    needle: str,
) -> None:
    response = api_client.get(_url(tag_id), params=params, headers=role_headers["viewer"])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and needle in error["message"]


def test_unknown_tag_404_and_no_key_401(api_client: TestClient, role_headers: Headers) -> None:
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
    response = api_client.get(_url(2**31 - 2), params=params, headers=role_headers["viewer"])
    assert response.status_code == 404 and response.json()["error"]["field"] == "tag_id"
    assert api_client.get(_url(1), params=params).status_code == 401


# ---------------------------------------------------------------------------------------
# Shape-keeping methods: m4 in SQL against its pure definition, lttb, fallbacks.


def _series(n: int, tag_id: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` samples a second from T0 with coarse values (ties), some not good, one double time."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = [
        {
            "time": T0 + timedelta(seconds=i),
            "tag_id": tag_id,
            "value": float(rng.randint(0, 20)),
            "quality": rng.choice((0, 0, 0, 0, 1)),
        }
        for i in range(n)
    ]
    for r in rows[::37]:  # bad samples carry no value
        r.update(value=None, quality=2)
    rows.append({"time": T0 + timedelta(seconds=100), "tag_id": tag_id, "value": 7.5, "quality": 0})
    return rows


def _good(rows: list[dict[str, Any]]) -> list[tuple[datetime, float]]:
    return sorted((r["time"], r["value"]) for r in rows if r["quality"] == 0)


def _pairs(body: dict[str, Any]) -> list[tuple[datetime, float]]:
    assert {p["quality"] for p in body["points"]} <= {"good"}
    return [(datetime.fromisoformat(p["time"]), p["value"]) for p in body["points"]]


def _m4(points: list[tuple[datetime, float]], width: timedelta) -> list[tuple[datetime, float]]:
    columns = [(t - T0) // width for t, _ in points]
    return [points[i] for i in shape.m4(columns, [v for _, v in points])]


def test_m4_in_sql_is_the_reference_m4(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    rows = _series(500, tag_id, seed=4)
    _insert(db_session, "samples", rows)
    end = T0 + timedelta(seconds=500)
    # 28 points: 7 columns of 500/7 s, rounded up to the microsecond (an uneven width).
    body = _get(api_client, role_headers, tag_id, T0, end, max_points=28, method="m4")
    width = timedelta(microseconds=71_428_572)
    assert (body["method"], body["source"], body["bucket_s"]) == (
        "m4", "samples", width.total_seconds(),
    )  # fmt: skip
    assert body["buckets"] == [] and body["note"] is None
    got, good = _pairs(body), _good(rows)
    assert got == _m4(good, width) and 7 < len(got) <= 28
    # What a line chart of 7 columns needs: each column's extremes and both ends.
    for k in range(7):
        column = [p for p in good if (p[0] - T0) // width == k]
        mine = [p for p in got if (p[0] - T0) // width == k]
        assert min(v for _, v in mine) == min(v for _, v in column)
        assert max(v for _, v in mine) == max(v for _, v in column)
        assert (mine[0], mine[-1]) == (column[0], column[-1])


def test_lttb_keeps_the_shape_with_exactly_n_samples(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    rows = _series(1000, tag_id, seed=5)
    rows[613].update(value=500.0, quality=0)  # a lone spike
    _insert(db_session, "samples", rows)
    end = T0 + timedelta(seconds=1000)
    body = _get(api_client, role_headers, tag_id, T0, end, max_points=50, method="lttb")
    assert (body["method"], body["source"], body["bucket_s"], body["preselected"]) == (
        "lttb", "samples", None, False,
    )  # fmt: skip
    got, good = _pairs(body), _good(rows)
    assert len(got) == 50 and (got[0], got[-1]) == (good[0], good[-1])
    assert (rows[613]["time"], 500.0) in got and set(got) <= set(good)
    xs = [(t - T0).total_seconds() for t, _ in good]
    assert got == [good[i] for i in shape.lttb(xs, [v for _, v in good], 50)]


def test_lttb_past_the_read_cap_runs_over_m4_points(
    api_client: TestClient,
    role_headers: Headers,
    db_session: Session,
    tag_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "LTTB_MAX_READ", 200)
    rows = _series(1000, tag_id, seed=6)
    _insert(db_session, "samples", rows)
    end = T0 + timedelta(seconds=1000)
    body = _get(api_client, role_headers, tag_id, T0, end, max_points=30, method="lttb")
    # 200 // 4 = 50 columns of 20 s preselected in SQL, then LTTB in Python.
    assert (body["method"], body["preselected"], body["bucket_s"]) == ("lttb", True, 20.0)
    assert "more than 200 good samples" in body["note"]
    pre = _m4(_good(rows), timedelta(seconds=20))
    xs = [(t - T0).total_seconds() for t, _ in pre]
    assert _pairs(body) == [pre[i] for i in shape.lttb(xs, [v for _, v in pre], 30)]
    # Under the cap, no preselection.
    monkeypatch.setattr(service, "LTTB_MAX_READ", 10_000)
    body = _get(api_client, role_headers, tag_id, T0, end, max_points=30, method="lttb")
    assert (body["preselected"], body["bucket_s"], body["note"]) == (False, None, None)


@pytest.mark.parametrize("method", ["m4", "lttb"])
def test_shape_methods_return_raw_samples_when_all_fit(
    api_client: TestClient,
    role_headers: Headers,
    db_session: Session,
    tag_id: int,
    method: str,
) -> None:
    rows = [
        {"time": T0 + timedelta(seconds=i), "tag_id": tag_id, "value": float(i), "quality": q}
        for i, q in enumerate((0, 1, 0, 0, 0))
    ]
    rows.append({"time": T0 + timedelta(seconds=5), "tag_id": tag_id, "value": None, "quality": 2})
    _insert(db_session, "samples", rows)
    body = _get(api_client, role_headers, tag_id, T0, T0 + timedelta(minutes=1), method=method)
    assert (body["method"], body["note"]) == ("raw", None)
    assert [p["quality"] for p in body["points"]] == ["good", "uncertain"] + ["good"] * 3 + ["bad"]


@pytest.mark.parametrize("method", ["m4", "lttb"])
def test_long_ranges_are_rollup_buckets_whatever_the_method(
    api_client: TestClient,
    role_headers: Headers,
    db_session: Session,
    tag_id: int,
    method: str,
) -> None:
    row = {"bucket": T0, "tag_id": tag_id, "min": 1.0, "max": 3.0, "avg": 2.0, "count": 60}
    _insert(db_session, "samples_1m", [{**row, "last": 3.0}])
    body = _get(
        api_client, role_headers, tag_id, T0, T0 + timedelta(days=1), max_points=100, method=method
    )
    assert (body["method"], body["source"], body["points"]) == ("buckets", "samples_1m", [])
    assert [(b["min"], b["max"]) for b in body["buckets"]] == [(1.0, 3.0)]
    assert body["note"].startswith(f"{method} reads raw samples")


def test_text_tag_ignores_the_method_and_says_so(
    api_client: TestClient, role_headers: Headers, db_session: Session, tag_id: int
) -> None:
    rows = [{"time": T0, "tag_id": tag_id, "value": "recipe-1", "quality": 0}]
    _insert(db_session, "samples_text", rows)
    body = _get(api_client, role_headers, tag_id, T0, T0 + timedelta(minutes=1), method="m4")
    assert (body["kind"], body["method"], body["note"]) == (
        "text", "raw", "a text tag has no m4: its raw samples",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"method": "m4", "max_points": 3}, "m4 needs max_points >= 4"),
        ({"method": "lttb", "max_points": 1}, "lttb needs max_points >= 4"),
        ({"method": "m5"}, "'buckets', 'm4' or 'lttb'"),
    ],
)
def test_bad_method_or_too_few_points_is_a_422(
    api_client: TestClient,
    role_headers: Headers,
    tag_id: int,
    params: dict[str, Any],
    needle: str,
) -> None:
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat(), **params}
    response = api_client.get(_url(tag_id), params=params, headers=role_headers["viewer"])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    field = "method" if params["method"] == "m5" else "max_points"
    assert error["field"] == field and needle in error["message"], error
