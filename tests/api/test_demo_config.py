"""``linepulse api demo-config``: the simulated line's OEE settings, filled in once."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.demo import DemoSetupError, configure
from tests.api.helpers import insert_asset


def test_configures_the_line_once_and_keeps_what_an_admin_set(db_session: Session) -> None:
    site = insert_asset(db_session, name="demo-site", level="site", parent=None)
    area = insert_asset(db_session, name="packaging", level="area", parent=site)
    line = insert_asset(db_session, name="line1", level="line", parent=area)
    with pytest.raises(DemoSetupError, match="no assets yet for filler"):
        configure(db_session, line_path=line["path"])
    db_session.rollback()
    site = insert_asset(db_session, name="demo-site", level="site", parent=None)
    area = insert_asset(db_session, name="packaging", level="area", parent=site)
    line = insert_asset(db_session, name="line1", level="line", parent=area)
    ids = {
        m: insert_asset(db_session, name=m, level="machine", parent=line)["id"]
        for m in ("filler", "capper", "labeler", "packer")
    }
    db_session.execute(
        text("INSERT INTO machine_settings (asset_id, micro_stop_s) VALUES (:a, 30)"),
        {"a": ids["capper"]},
    )
    done = configure(db_session, line_path=line["path"], timezone="Europe/Berlin")
    assert any("three 8-hour shifts" in d for d in done)
    assert configure(db_session, line_path=line["path"]) == [], "a second run changes nothing"
    tz, shifts = db_session.execute(
        text("SELECT timezone, (SELECT count(*) FROM shifts WHERE site_id = :s)"
             " FROM assets WHERE id = :s"),
        {"s": site["id"]},
    ).one()  # fmt: skip
    assert (tz, shifts) == ("Europe/Berlin", 21)
    settings: dict[int, float] = dict(
        db_session.execute(
            text("SELECT asset_id, micro_stop_s FROM machine_settings WHERE asset_id = ANY(:a)"),
            {"a": list(ids.values())},
        ).all()
    )
    assert settings[ids["capper"]] == 30, "the admin's own threshold is kept"
    outputs = db_session.execute(
        text("SELECT asset_id FROM machine_settings WHERE is_line_output AND asset_id = ANY(:a)"),
        {"a": list(ids.values())},
    ).scalars()
    assert list(outputs) == [ids["packer"]]
    cycle = db_session.execute(
        text("SELECT c.ideal_cycle_s FROM product_cycle_times c JOIN products p"
             " ON p.id = c.product_id WHERE p.code = 'SKU-1042' AND c.asset_id = :a"),
        {"a": ids["filler"]},
    ).scalar_one()  # fmt: skip
    assert cycle == pytest.approx(0.5)  # 120 a minute
