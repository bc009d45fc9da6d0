"""Partitions, retention and rollups: plain PostgreSQL (the service's upkeep) and TimescaleDB
(its policies and continuous aggregates) read the same through one query."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import fmean
from typing import Any

import psycopg
import pytest

from ingest import db, maintenance, migrate, schema
from ingest.maintenance import (
    TIMESCALE_NOTE,
    Maintainer,
    apply_retention,
    ensure_partition_for,
    ensure_partitions,
    merge_ranges,
    note_samples,
    refresh_pending,
    refresh_rollups,
)
from tests.harness import free_port

Conn = psycopg.Connection[Any]
Row = tuple[datetime, int, float | None, int]  # time, tag_id, value, quality

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# The read every dashboard uses, on both kinds of database.
READ_ROLLUP = (
    "SELECT bucket, tag_id, min, max, avg, count, last FROM {rollup}"
    " WHERE bucket >= %s AND bucket < %s ORDER BY tag_id, bucket"
)
# timestamptz, int4, float8 x3, int8, float8
ROLLUP_TYPES = [1184, 23, 701, 701, 701, 20, 701]


def floor(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // step) * step


def samples_at(base: datetime) -> list[Row]:
    """Known samples over two hours after ``base`` (an hour boundary): good, uncertain, bad."""
    spec: list[tuple[float, int, float | None, int]] = [
        (5, 1, 1.0, 0),
        (20, 1, 4.0, 0),
        (50, 1, 2.5, 0),
        (55, 1, None, 2),  # bad: not counted
        (58, 1, 999.0, 1),  # uncertain, and the latest of its minute: not counted, not last
        (70, 1, 10.0, 0),
        (5400, 1, -3.0, 0),
        (5430, 1, 7.25, 0),
        (5500, 1, None, 2),  # the only sample of its minute: no bucket at all
        (1, 2, 100.0, 0),
        (59.9, 2, 7.0, 1),
        (3000, 2, 0.1, 0),
        (3000.5, 2, 0.2, 0),
        (3001, 2, 0.3, 0),
        (3599.999, 2, 50.5, 0),
    ]
    return [(base + timedelta(seconds=s), tag, v, q) for s, tag, v, q in spec]


def expected_rollup(rows: Sequence[Row], step: timedelta) -> list[tuple[Any, ...]]:
    """min, max, avg, count, last per (tag, bucket) of the good samples, computed here."""
    groups: dict[tuple[int, datetime], list[tuple[datetime, float]]] = defaultdict(list)
    for t, tag, value, quality in rows:
        if quality == 0 and value is not None:
            groups[(tag, floor(t, step))].append((t, value))
    out = []
    for (tag, bucket), points in sorted(groups.items()):
        values = [v for _, v in points]
        out.append(
            (bucket, tag, min(values), max(values), fmean(values), len(values), max(points)[1])
        )
    return out


def assert_rollup(actual: Sequence[tuple[Any, ...]], expected: Sequence[tuple[Any, ...]]) -> None:
    assert len(actual) == len(expected), (actual, expected)
    for got, want in zip(actual, expected, strict=True):
        assert got[:4] == want[:4]
        assert got[4] == pytest.approx(want[4], rel=1e-12)  # avg: summation order may differ
        assert got[5:] == want[5:]


def insert(conn: Conn, rows: Sequence[Row]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO samples (time, tag_id, value, quality) VALUES (%s, %s, %s, %s)", rows
        )


def read_rollup(conn: Conn, rollup: str, lo: datetime, hi: datetime) -> list[tuple[Any, ...]]:
    cur = conn.execute(READ_ROLLUP.format(rollup=rollup), (lo, hi))
    assert [c.type_code for c in cur.description or []] == ROLLUP_TYPES
    return cur.fetchall()


@dataclass
class Backend:
    """A migrated database and how its rollups are brought up to date."""

    timescale: bool
    url: str

    def refresh(self, conn: Conn, since: datetime, until: datetime) -> None:
        if self.timescale:
            # CALL refresh_continuous_aggregate refuses a transaction block: autocommit.
            for cagg in ("samples_1m", "samples_1h"):
                conn.execute(f"CALL refresh_continuous_aggregate('{cagg}', NULL, NULL)")
        else:
            assert refresh_rollups(conn, since=since, until=until) > 0


@pytest.fixture(params=["postgres", pytest.param("timescale", marks=pytest.mark.timescale)])
def backend(request: pytest.FixtureRequest) -> Backend:
    timescale = request.param == "timescale"
    url = str(request.getfixturevalue("timescale_url" if timescale else "pg_url"))
    migrate.upgrade(url)
    return Backend(timescale, url)


@pytest.fixture
def plain(pg_url: str) -> Iterator[Conn]:
    """An autocommit connection to a migrated plain-PostgreSQL database."""
    migrate.upgrade(pg_url)
    with db.connect(pg_url, autocommit=True) as conn:
        yield conn


# --- rollups: the same read, the same numbers ---------------------------------------------


def test_rollups_read_the_same_on_both(backend: Backend) -> None:
    base = floor(datetime.now(UTC), HOUR) - 3 * DAY
    rows = samples_at(base)
    window = (base, base + 3 * HOUR)
    with db.connect(backend.url, autocommit=True) as conn:
        insert(conn, rows)
        backend.refresh(conn, base, base + 2 * HOUR)
        minutes = read_rollup(conn, "samples_1m", *window)
        hours = read_rollup(conn, "samples_1h", *window)
        assert_rollup(minutes, expected_rollup(rows, MINUTE))
        assert_rollup(hours, expected_rollup(rows, HOUR))
        # Checked by hand: tag 1's first minute is 1, 4, 2.5 (bad and uncertain left out).
        assert minutes[0] == (base, 1, 1.0, 4.0, 2.5, 3, 2.5)
        assert len(minutes) == 6 and len(hours) == 3

        # A late sample into buckets that exist already updates them.
        late: Row = (base + timedelta(seconds=30), 1, 20.0, 0)
        insert(conn, [late])
        backend.refresh(conn, late[0], late[0])
        assert_rollup(
            read_rollup(conn, "samples_1m", *window), expected_rollup([*rows, late], MINUTE)
        )
        assert_rollup(
            read_rollup(conn, "samples_1h", *window), expected_rollup([*rows, late], HOUR)
        )


@pytest.mark.parametrize(
    "kind", ["postgres", pytest.param("timescale", marks=pytest.mark.timescale)]
)
def test_upgrade_from_version_1_rolls_up_the_samples_already_stored(
    kind: str, request: pytest.FixtureRequest
) -> None:
    timescale = kind == "timescale"
    url = str(request.getfixturevalue("timescale_url" if timescale else "pg_url"))
    assert "applied 1: " + schema.MIGRATIONS[0].description in migrate.upgrade(url, target=1)
    base = floor(datetime.now(UTC), HOUR) - DAY
    rows = samples_at(base)
    window = (base, base + 3 * HOUR)
    with db.connect(url, autocommit=True) as conn:
        if not timescale:  # version 1 had no default partition
            for moment in (base, base + 2 * HOUR):
                ensure_partition_for(conn, moment.date())
        insert(conn, rows)
        lines = migrate.upgrade(url)
        if timescale:
            assert "refreshed samples_1m and samples_1h over the samples already stored" in lines
            # Read what was materialized, not the real-time part computed at query time.
            for cagg in ("samples_1m", "samples_1h"):
                conn.execute(
                    f"ALTER MATERIALIZED VIEW {cagg} SET (timescaledb.materialized_only = true)"
                )
        else:
            assert refresh_pending(conn) == 6 + 3
        assert_rollup(read_rollup(conn, "samples_1m", *window), expected_rollup(rows, MINUTE))
        assert_rollup(read_rollup(conn, "samples_1h", *window), expected_rollup(rows, HOUR))


def test_refresh_rollups_only_writes_what_changed(plain: Conn) -> None:
    base = floor(datetime.now(UTC), HOUR) - 2 * DAY
    insert(plain, samples_at(base))
    first = refresh_rollups(plain, since=base, until=base + 2 * HOUR)
    assert first == 6 + 3  # minute rows + hour rows
    assert refresh_rollups(plain, since=base, until=base + 2 * HOUR) == 0
    with pytest.raises(maintenance.IngestError, match="before"):
        refresh_rollups(plain, since=base, until=base - MINUTE)


def test_merge_ranges() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    ranges = [
        (t + 10 * MINUTE, t + 11 * MINUTE),
        (t, t + MINUTE),
        (t + 2 * MINUTE, t + 3 * MINUTE),
        (t + DAY, t + DAY),
        (t + 12 * MINUTE, t + 11 * MINUTE),  # reversed: still a range
    ]
    assert merge_ranges(ranges) == [
        (t, t + 3 * MINUTE),
        (t + 10 * MINUTE, t + 12 * MINUTE),
        (t + DAY, t + DAY),
    ]
    assert merge_ranges([]) == []


# --- TimescaleDB specifics ----------------------------------------------------------------


@pytest.mark.timescale
def test_timescale_compressed_chunks_still_read_and_take_late_samples(timescale_url: str) -> None:
    migrate.upgrade(timescale_url)
    base = floor(datetime.now(UTC), HOUR) - 4 * DAY
    rows = samples_at(base)
    totals = "SELECT tag_id, count(*), sum(value), max(time) FROM samples GROUP BY 1 ORDER BY 1"
    with db.connect(timescale_url, autocommit=True) as conn:
        insert(conn, rows)
        before = conn.execute(totals).fetchall()
        compressed = conn.execute(
            "SELECT compress_chunk(c) FROM show_chunks('samples') c"
        ).fetchall()
        assert compressed
        flags = conn.execute(
            "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'samples'"
        ).fetchone()
        assert flags == (True,)
        assert conn.execute(totals).fetchall() == before
        late: Row = (base + timedelta(seconds=30), 1, 20.0, 0)
        insert(conn, [late])
        conn.execute("CALL refresh_continuous_aggregate('samples_1m', NULL, NULL)")
        window = (base, base + 3 * HOUR)
        assert_rollup(
            read_rollup(conn, "samples_1m", *window), expected_rollup([*rows, late], MINUTE)
        )


@pytest.mark.timescale
def test_timescale_maintenance_is_a_no_op(timescale_url: str) -> None:
    migrate.upgrade(timescale_url)
    now = datetime.now(UTC)
    with db.connect(timescale_url, autocommit=True) as conn:
        assert ensure_partitions(conn) == [TIMESCALE_NOTE]
        assert ensure_partition_for(conn, now.date()) == [TIMESCALE_NOTE]
        assert apply_retention(conn, retention_days=5) == [TIMESCALE_NOTE]
        assert refresh_rollups(conn, since=now, until=now) == 0
        note_samples(conn, [(now, now)])  # the writer's call works on both kinds
        assert refresh_pending(conn) == 0
    maintainer = Maintainer(timescale_url)
    try:
        assert maintainer.run_once() == [TIMESCALE_NOTE]
    finally:
        maintainer.close()


def test_retention_removes_old_raw_samples_on_both(backend: Backend) -> None:
    now = datetime.now(UTC)
    old: Row = (now - 100 * DAY, 1, 1.0, 0)
    recent: Row = (now - DAY, 1, 2.0, 0)
    with db.connect(backend.url, autocommit=True) as conn:
        if not backend.timescale:
            ensure_partition_for(conn, old[0].date())
        insert(conn, [old, recent])
        if backend.timescale:
            job = conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_retention' AND hypertable_name = 'samples'"
            ).fetchone()
            assert job is not None
            conn.execute("CALL run_job(%s)", job)
        else:
            lines = apply_retention(conn, retention_days=90)
            assert [line.split(" (")[0] for line in lines] == [
                f"dropped partition samples_p{old[0]:%Y%m%d}",
                f"dropped partition samples_text_p{old[0]:%Y%m%d}",
            ]
        assert conn.execute("SELECT time, value FROM samples").fetchall() == [(recent[0], 2.0)]


# --- plain PostgreSQL: partitions ---------------------------------------------------------

# A fixed "now" far from the real one, so the partitions the upgrade made do not interfere.
NOW = datetime(2031, 5, 10, 12, 0, tzinfo=UTC)


def where(conn: Conn, table: str = "samples") -> dict[datetime, str]:
    """time -> the partition holding that row."""
    rows = conn.execute(f"SELECT time, tableoid::regclass::text FROM {table}").fetchall()
    return dict(rows)


def test_partitions_ahead_on_demand_and_from_the_default(plain: Conn) -> None:
    lines = ensure_partitions(plain, days_ahead=3, now=NOW)
    days = [f"{NOW.date() + n * DAY:%Y%m%d}" for n in range(4)]
    assert lines == [f"created partition samples_p{d}" for d in days] + [
        f"created partition samples_text_p{d}" for d in days
    ]
    assert ensure_partitions(plain, days_ahead=3, now=NOW) == []

    today, last_week = NOW - HOUR, NOW - 10 * DAY
    insert(plain, [(today, 1, 1.0, 0), (last_week, 1, 2.0, 0)])
    plain.execute(
        "INSERT INTO samples_text (time, tag_id, value) VALUES (%s, 1, 'late')", (last_week,)
    )
    assert where(plain) == {today: f"samples_p{NOW:%Y%m%d}", last_week: "samples_default"}

    # On demand: the day's partitions appear and take the rows waiting in the defaults.
    lines = ensure_partition_for(plain, last_week.date())
    assert lines == [
        f"created partition samples_p{last_week:%Y%m%d} (moved 1 rows from samples_default)",
        f"created partition samples_text_p{last_week:%Y%m%d}"
        " (moved 1 rows from samples_text_default)",
    ]
    assert where(plain)[last_week] == f"samples_p{last_week:%Y%m%d}"
    assert where(plain, "samples_text") == {last_week: f"samples_text_p{last_week:%Y%m%d}"}
    assert ensure_partition_for(plain, last_week.date()) == []

    # Beyond the horizon: the default catches it, the next round moves it.
    far = NOW + 30 * DAY
    insert(plain, [(far, 2, 3.0, 0)])
    assert where(plain)[far] == "samples_default"
    assert ensure_partitions(plain, days_ahead=3, now=NOW) == [
        f"created partition samples_p{far:%Y%m%d} (moved 1 rows from samples_default)"
    ]
    assert where(plain)[far] == f"samples_p{far:%Y%m%d}"
    assert plain.execute("SELECT count(*) FROM samples").fetchone() == (3,)


def test_retention_drops_partitions_entirely_older_and_expires_rollups(plain: Conn) -> None:
    first = NOW.date() - 12 * DAY
    for n in range(13):
        ensure_partition_for(plain, first + n * DAY)
    insert(plain, [(NOW - n * DAY, 1, float(n), 0) for n in range(13)])
    insert(plain, [(NOW - 40 * DAY, 1, -1.0, 0)])  # no partition: sits in the default
    for rollup, age in (
        ("samples_1m", 11),
        ("samples_1m", 9),
        ("samples_1h", 21),
        ("samples_1h", 19),
    ):
        plain.execute(
            f"INSERT INTO {rollup} (bucket, tag_id, min, max, avg, count, last)"
            " VALUES (%s, 1, 0, 0, 0, 1, 0)",
            (NOW - age * DAY,),
        )
    before = maintenance.partition_days(plain, "samples")

    lines = apply_retention(plain, retention_days=5, rollup_1m_days=10, rollup_1h_days=20, now=NOW)

    cutoff = NOW - 5 * DAY  # 2031-05-05 12:00: the partition of 05-05 still holds newer rows
    gone = sorted(d for d in before if datetime(d.year, d.month, d.day, tzinfo=UTC) + DAY <= cutoff)
    assert date(2031, 5, 4) in gone and date(2031, 5, 5) not in gone
    after = maintenance.partition_days(plain, "samples")
    assert after == before - set(gone)
    assert maintenance.partition_days(plain, "samples_text") == after
    assert [line for line in lines if line.startswith("dropped partition samples_p")] == [
        f"dropped partition samples_p{d:%Y%m%d} (older than 2031-05-05 12:00 UTC)" for d in gone
    ]
    assert "deleted 1 rows older than 2031-05-05 from samples_default" in lines
    assert "deleted 1 samples_1m rows before 2031-04-30" in lines
    assert "deleted 1 samples_1h rows before 2031-04-20" in lines
    kept = [v for (v,) in plain.execute("SELECT value FROM samples ORDER BY value")]
    assert kept == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # 5 days ago at 12:00 is on the cutoff: kept
    assert plain.execute("SELECT count(*) FROM samples_1m").fetchone() == (1,)
    assert plain.execute("SELECT count(*) FROM samples_1h").fetchone() == (1,)


# --- plain PostgreSQL: the periodic task --------------------------------------------------


def test_maintainer_refreshes_noted_ranges_and_runs_retention_when_due(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    base = floor(datetime.now(UTC), HOUR) - DAY
    rows = samples_at(base)
    # The writer: samples and their note in one transaction (not autocommit).
    with db.connect(pg_url) as writer:
        with writer.cursor() as cur:
            cur.executemany("INSERT INTO samples VALUES (%s, %s, %s, %s)", rows)
        note_samples(writer, [(rows[0][0], rows[5][0]), (rows[6][0], rows[8][0])])
        note_samples(writer, [(r[0], r[0]) for r in rows[9:]])
        writer.commit()
    stale = (datetime.now(UTC) - 200 * DAY, 1, 1.0, 0)  # older than the 90-day default
    maintainer = Maintainer(pg_url, retention_every=HOUR)
    try:
        with db.connect(pg_url, autocommit=True) as conn:
            insert(conn, [stale])
            lines = maintainer.run_once()
            assert any(re.fullmatch(r"refreshed \d+ rollup rows", line) for line in lines), lines
            assert any(line.startswith("deleted 1 rows older than") for line in lines)
            window = (base, base + 3 * HOUR)
            assert_rollup(read_rollup(conn, "samples_1m", *window), expected_rollup(rows, MINUTE))
            assert_rollup(read_rollup(conn, "samples_1h", *window), expected_rollup(rows, HOUR))
            assert conn.execute("SELECT count(*) FROM rollup_pending").fetchone() == (0,)

            # Retention is not due again within the hour (and nothing else is to do).
            insert(conn, [stale])
            assert maintainer.run_once() == []
            assert conn.execute("SELECT count(*) FROM samples_default").fetchone() == (1,)
            lines = maintainer.run_once(now=datetime.now(UTC) + 2 * HOUR)
            assert any(
                line.startswith("deleted 1 rows older than") and line.endswith("samples_default")
                for line in lines
            ), lines
            assert conn.execute("SELECT count(*) FROM samples_default").fetchone() == (0,)

            # Another worker holding the lock: this one skips the round.
            conn.execute("SELECT pg_advisory_lock(%s)", (maintenance.MAINTAINER_LOCK,))
            assert maintainer.run_once() == ["skipped: another worker is running maintenance"]
            conn.execute("SELECT pg_advisory_unlock(%s)", (maintenance.MAINTAINER_LOCK,))
    finally:
        maintainer.close()


def test_maintainer_on_an_unmigrated_or_unreachable_database_raises_ingest_errors(
    pg_url: str,
) -> None:
    maintainer = Maintainer(pg_url)
    with pytest.raises(maintenance.IngestError, match="linepulse db upgrade"):
        maintainer.run_once()
    maintainer.close()
    gone = Maintainer(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    with pytest.raises(maintenance.DatabaseUnavailable, match=r"127\.0\.0\.1"):
        gone.run_once()


def test_ledger_and_dead_letters_are_pruned_by_age(pg_url: str) -> None:
    """Old ledger rows and dead letters go; recent ones (the replay window) stay."""
    from ingest.maintenance import Maintainer, prune_bookkeeping

    migrate.upgrade(pg_url)
    now = datetime.now(UTC)
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO ingest_ledger (agent, seq, received_at) VALUES"
            " ('gw', 1, %s), ('gw', 2, %s)",
            (now - timedelta(days=200), now - timedelta(days=1)),
        )
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload_size, reason) VALUES"
            " (%s, 't', 0, 'old'), (%s, 't', 0, 'new')",
            (now - timedelta(days=40), now),
        )
        conn.commit()
        lines = prune_bookkeeping(conn, now=now)
        conn.commit()
        assert lines == [
            "deleted 1 ingest_ledger rows older than 180 days",
            "deleted 1 dead_letters rows older than 30 days",
        ]
        assert conn.execute("SELECT seq FROM ingest_ledger").fetchall() == [(2,)]
        assert conn.execute("SELECT reason FROM dead_letters").fetchall() == [("new",)]
    # The maintainer does it too, on its retention schedule.
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO ingest_ledger (agent, seq, received_at) VALUES ('gw', 3, %s)",
            (now - timedelta(days=365),),
        )
        conn.commit()
    m = Maintainer(pg_url)
    try:
        assert any("ingest_ledger" in line for line in m.run_once(now=now))
    finally:
        m.close()
