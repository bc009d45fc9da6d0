"""A site's lines computed side by side (api.oee.parallel) against real PostgreSQL: the same
figures as one after another, the caller always taking part, errors reaching the caller."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.config import ApiSettings
from api.db import make_engine
from api.oee import service
from api.oee.parallel import Helpers
from tests.api.helpers import insert_asset, unique_name

START = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def helpers(api_settings: ApiSettings) -> Iterator[Helpers]:
    h = Helpers(make_engine(api_settings, pool_size=2), 2)
    yield h
    h.close()


def _pid(s: Session, item: int) -> tuple[int, int]:
    """The item and the backend that handled it (after a short wait, so helpers join in)."""
    pid = s.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.02)")).scalar_one()
    return item, int(pid)


def test_items_come_back_in_order_from_the_caller_and_free_helpers(
    db_session: Session, helpers: Helpers
) -> None:
    results = helpers.map(db_session, _pid, list(range(12)))
    assert [i for i, _ in results] == list(range(12))
    caller = db_session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    pids = {pid for _, pid in results}
    assert caller in pids and len(pids) > 1  # the caller and at least one helper


def test_busy_helpers_leave_the_work_to_the_caller(db_session: Session, helpers: Helpers) -> None:
    assert helpers._free is not None
    taken = [helpers._free.acquire(blocking=False) for _ in range(2)]
    try:
        assert all(taken)
        caller = db_session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert {pid for _, pid in helpers.map(db_session, _pid, [1, 2, 3])} == {caller}
    finally:
        for _ in taken:
            helpers._free.release()


def test_an_error_in_any_item_reaches_the_caller(db_session: Session, helpers: Helpers) -> None:
    def fail_on_5(s: Session, item: int) -> int:
        _pid(s, item)
        if item == 5:
            raise ValueError("item 5 is bad")
        return item

    with pytest.raises(ValueError, match="item 5"):
        helpers.map(db_session, fail_on_5, list(range(10)))
    db_session.rollback()
    # The helpers are free again.
    assert helpers.map(db_session, lambda s, i: i, [1, 2, 3]) == [1, 2, 3]


@pytest.fixture(scope="module")
def site(db_session: Session) -> dict[str, Any]:
    """A site of five lines, each with a day of random states and counts on its output
    machine, an early shift and a break."""
    rng = random.Random(7)
    s = db_session
    site = insert_asset(s, name=unique_name("par"), level="site", parent=None)
    s.execute(text("UPDATE assets SET timezone = 'Europe/Berlin' WHERE id = :id"), site)
    s.execute(
        text(
            "INSERT INTO shifts (site_id, name, weekday, start_local, duration)"
            " VALUES (:id, 'early', 0, '06:00', interval '8 hours')"
        ),
        site,
    )
    area = insert_asset(s, name="area", level="area", parent=site)
    product = unique_name("P")
    s.execute(text("INSERT INTO products (code, ideal_cycle_s) VALUES (:c, 5.0)"), {"c": product})
    for n in range(5):
        line = insert_asset(s, name=f"line{n}", level="line", parent=area)
        machine = insert_asset(s, name="packer", level="machine", parent=line)
        s.execute(
            text("INSERT INTO machine_settings (asset_id, is_line_output) VALUES (:id, true)"),
            machine,
        )
        t = START
        while t < START + timedelta(days=1):
            length = timedelta(seconds=rng.randint(5, 1_800))
            state = rng.choice(["running", "running", "idle", "faulted", "changeover"])
            s.execute(
                text(
                    "INSERT INTO state_intervals (asset_id, start_time, end_time, state)"
                    " VALUES (:a, :s, :e, :st)"
                ),
                {"a": machine["id"], "s": t, "e": t + length, "st": state},
            )
            t += length
        s.execute(
            text(
                "INSERT INTO production_counts (asset_id, time, total, good, reject, product)"
                " SELECT :a, m, 10, 9, 1, :p FROM generate_series(:s, :e, interval '97 s') m"
            ),
            {"a": machine["id"], "s": START, "e": START + timedelta(days=1), "p": product},
        )
        s.execute(
            text(
                "INSERT INTO planned_downtime (asset_id, category, start_time, end_time)"
                " VALUES (:a, 'break', :s, :e)"
            ),
            {"a": machine["id"], "s": START + timedelta(hours=8, minutes=7),
             "e": START + timedelta(hours=8, minutes=37)},
        )  # fmt: skip
    s.commit()
    return site


def test_a_site_side_by_side_equals_one_line_after_another(
    db_session: Session, helpers: Helpers, site: dict[str, Any]
) -> None:
    args: dict[str, Any] = {
        "asset_id": site["id"],
        "start": START,
        "end": START + timedelta(days=1),
        "bucket": "hour",
        "max_range_days": 366,
        "now": START + timedelta(days=2),
    }
    alone = service.oee(db_session, **args)
    together = service.oee(db_session, **args, helpers=helpers)
    assert len(alone.measured_asset_ids) == 5
    assert together.model_dump() == alone.model_dump()
    assert alone.whole.total and alone.whole.oee is not None
