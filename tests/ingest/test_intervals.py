"""State events -> intervals against a real PostgreSQL: duplicates, late and out-of-order events."""

from __future__ import annotations

import itertools
import random
import threading
import time as _time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from ingest import schema
from ingest.intervals import (
    Interval,
    IntervalError,
    IntervalStats,
    StateRow,
    apply_state_events,
    derive_intervals,
    rebuild_intervals,
)

BASE = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)
ASSETS = (1, 2, 3)


def ev(
    asset: int, t: float, state: str, reason: str | None = None, code: str | None = None
) -> StateRow:
    """An event ``t`` seconds after BASE."""
    return StateRow(asset, BASE + timedelta(seconds=t), state, reason, code, agent="gw1")


def iv(
    asset: int, start: float, end: float | None, state: str, reason: str | None = None
) -> Interval:
    """An expected interval in seconds after BASE."""
    end_time = None if end is None else BASE + timedelta(seconds=end)
    return Interval(asset, BASE + timedelta(seconds=start), end_time, state, reason, None)


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection]:
    """A connection to a fresh database with the schema and three machines (ids 1, 2, 3)."""
    with psycopg.connect(pg_url) as conn:
        with conn.transaction():
            for migration in schema.MIGRATIONS:
                migration.apply(conn, False)
            for asset in ASSETS:
                conn.execute(
                    "INSERT INTO assets (id, level, name, path) VALUES (%s, 'machine', %s, %s)",
                    (asset, f"m{asset}", f"site/area/line/m{asset}"),
                )
        yield conn


def apply(conn: psycopg.Connection, batch: Sequence[StateRow]) -> IntervalStats:
    """One ingest batch: its own transaction, as the writer does it."""
    with conn.transaction(), conn.cursor() as cur:
        return apply_state_events(cur, batch)


def stored(conn: psycopg.Connection) -> list[Interval]:
    rows = conn.execute(
        "SELECT asset_id, start_time, end_time, state, reason, code FROM state_intervals"
        " ORDER BY asset_id, start_time"
    ).fetchall()
    conn.commit()
    return [Interval(*r) for r in rows]


def stored_events(conn: psycopg.Connection) -> list[StateRow]:
    rows = conn.execute(
        "SELECT asset_id, time, state, reason, code, agent, seq FROM state_events"
        " ORDER BY asset_id, time"
    ).fetchall()
    conn.commit()
    return [StateRow(*r) for r in rows]


def assert_well_formed(intervals: Sequence[Interval]) -> None:
    """Per asset: ordered, contiguous (each end == next start), exactly one open, the last."""
    by_asset: dict[int, list[Interval]] = {}
    for interval in intervals:
        by_asset.setdefault(interval.asset_id, []).append(interval)
    for asset, rows in by_asset.items():
        assert [r.end_time for r in rows[:-1]] == [r.start_time for r in rows[1:]], asset
        assert rows[-1].end_time is None, asset
        assert all(r.end_time is not None and r.end_time > r.start_time for r in rows[:-1])
        same = [
            (a.state, a.reason, a.code) == (b.state, b.reason, b.code)
            for a, b in itertools.pairwise(rows)
        ]
        assert not any(same), f"asset {asset}: neighbours with the same state were not merged"


@dataclass(frozen=True)
class Case:
    name: str
    batches: list[list[StateRow]]
    expected: list[Interval]


CASES = [
    Case(
        "in order, one batch",
        [[ev(1, 0, "run"), ev(1, 10, "stop", "jam"), ev(1, 20, "run")]],
        [iv(1, 0, 10, "run"), iv(1, 10, 20, "stop", "jam"), iv(1, 20, None, "run")],
    ),
    Case(
        "in order, one event per batch",
        [[ev(1, 0, "run")], [ev(1, 10, "stop")], [ev(1, 20, "idle")]],
        [iv(1, 0, 10, "run"), iv(1, 10, 20, "stop"), iv(1, 20, None, "idle")],
    ),
    Case(
        "duplicates redelivered, in a later batch and in the same batch",
        [
            [ev(1, 0, "run"), ev(1, 10, "stop"), ev(1, 10, "stop")],
            [ev(1, 10, "stop"), ev(1, 0, "run")],
        ],
        [iv(1, 0, 10, "run"), iv(1, 10, None, "stop")],
    ),
    Case(
        "same state re-announced merges; a new reason does not",
        [
            [ev(1, 0, "run")],
            [ev(1, 5, "run")],
            [ev(1, 10, "stop"), ev(1, 12, "stop")],
            [ev(1, 15, "stop", "jam")],
        ],
        [iv(1, 0, 10, "run"), iv(1, 10, 15, "stop"), iv(1, 15, None, "stop", "jam")],
    ),
    Case(
        "late event splits the interval it falls into",
        [[ev(1, 0, "run"), ev(1, 20, "stop")], [ev(1, 10, "stop", "jam")]],
        [iv(1, 0, 10, "run"), iv(1, 10, 20, "stop", "jam"), iv(1, 20, None, "stop")],
    ),
    Case(
        "late event splits the open interval",
        [[ev(1, 0, "run"), ev(1, 20, "stop")], [ev(1, 30, "idle"), ev(1, 25, "run")]],
        [iv(1, 0, 20, "run"), iv(1, 20, 25, "stop"), iv(1, 25, 30, "run"), iv(1, 30, None, "idle")],
    ),
    Case(
        "late event equal to its neighbours: no split",
        [[ev(1, 0, "run"), ev(1, 20, "stop"), ev(1, 30, "run")], [ev(1, 25, "stop")]],
        [iv(1, 0, 20, "run"), iv(1, 20, 30, "stop"), iv(1, 30, None, "run")],
    ),
    Case(
        "late event equal to the next interval: that interval starts earlier",
        [[ev(1, 0, "run"), ev(1, 20, "stop"), ev(1, 30, "run")], [ev(1, 10, "stop")]],
        [iv(1, 0, 10, "run"), iv(1, 10, 30, "stop"), iv(1, 30, None, "run")],
    ),
    Case(
        "late events fill a gap with the state that joins both sides",
        [
            [ev(1, 0, "run"), ev(1, 20, "stop"), ev(1, 40, "run")],
            [ev(1, 30, "stop"), ev(1, 35, "run")],
        ],
        [iv(1, 0, 20, "run"), iv(1, 20, 35, "stop"), iv(1, 35, None, "run")],
    ),
    Case(
        "shuffled within one batch",
        [[ev(1, 20, "run"), ev(1, 0, "run"), ev(1, 30, "stop"), ev(1, 10, "stop")]],
        [iv(1, 0, 10, "run"), iv(1, 10, 20, "stop"), iv(1, 20, 30, "run"), iv(1, 30, None, "stop")],
    ),
    Case(
        "shuffled across batches",
        [[ev(1, 30, "stop")], [ev(1, 10, "stop")], [ev(1, 20, "run")], [ev(1, 0, "run")]],
        [iv(1, 0, 10, "run"), iv(1, 10, 20, "stop"), iv(1, 20, 30, "run"), iv(1, 30, None, "stop")],
    ),
    Case(
        "event before the first known, different state",
        [[ev(1, 10, "run"), ev(1, 20, "stop")], [ev(1, 0, "idle")]],
        [iv(1, 0, 10, "idle"), iv(1, 10, 20, "run"), iv(1, 20, None, "stop")],
    ),
    Case(
        "event before the first known, same state",
        [[ev(1, 10, "run"), ev(1, 20, "stop")], [ev(1, 0, "run")]],
        [iv(1, 0, 20, "run"), iv(1, 20, None, "stop")],
    ),
    Case(
        "event before the only (open) interval",
        [[ev(1, 10, "run")], [ev(1, 0, "stop")]],
        [iv(1, 0, 10, "stop"), iv(1, 10, None, "run")],
    ),
    Case(
        "two assets interleaved, in order and late",
        [
            [ev(1, 0, "run"), ev(2, 0, "stop"), ev(1, 10, "stop"), ev(2, 5, "run")],
            [ev(2, 20, "stop"), ev(1, 5, "idle"), ev(3, 7, "run")],
            [ev(1, 30, "run"), ev(2, 3, "stop")],
        ],
        [
            iv(1, 0, 5, "run"),
            iv(1, 5, 10, "idle"),
            iv(1, 10, 30, "stop"),
            iv(1, 30, None, "run"),
            iv(2, 0, 5, "stop"),
            iv(2, 5, 20, "run"),
            iv(2, 20, None, "stop"),
            iv(3, 7, None, "run"),
        ],
    ),
    Case(
        "conflicting states at one timestamp: the first stored wins",
        [
            [ev(1, 0, "run"), ev(1, 10, "stop"), ev(1, 10, "run")],
            [ev(1, 0, "stop"), ev(1, 20, "idle")],
        ],
        [iv(1, 0, 10, "run"), iv(1, 10, 20, "stop"), iv(1, 20, None, "idle")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cases(db: psycopg.Connection, case: Case) -> None:
    for batch in case.batches:
        apply(db, batch)
    delivered = [e for batch in case.batches for e in batch]
    assert derive_intervals(delivered) == case.expected
    assert stored(db) == case.expected
    assert_well_formed(stored(db))


def test_stats_count_duplicates_and_conflicts(db: psycopg.Connection) -> None:
    first = apply(db, [ev(1, 0, "run"), ev(1, 10, "stop"), ev(1, 10, "stop"), ev(1, 10, "idle")])
    assert first == IntervalStats(
        events_inserted=2, duplicates=1, conflicts=1, assets_rebuilt=0, intervals_written=2
    )
    again = apply(db, [ev(1, 0, "run"), ev(1, 10, "idle", "jam")])
    assert again == IntervalStats(duplicates=1, conflicts=1)
    assert [e.state for e in stored_events(db)] == ["run", "stop"]


def test_in_order_costs_one_close_and_one_open(db: psycopg.Connection) -> None:
    apply(db, [ev(1, 0, "run"), ev(2, 0, "run")])
    # Closing the open interval is an update, opening the next an insert: 2 rows per asset.
    assert apply(db, [ev(1, 10, "stop"), ev(2, 10, "stop")]).intervals_written == 4
    # A re-announced state writes nothing at all.
    assert apply(db, [ev(1, 20, "stop"), ev(2, 20, "stop")]) == IntervalStats(events_inserted=2)
    assert stored(db) == [
        iv(1, 0, 10, "run"),
        iv(1, 10, None, "stop"),
        iv(2, 0, 10, "run"),
        iv(2, 10, None, "stop"),
    ]


def test_event_in_the_far_past_after_many_intervals(db: psycopg.Connection) -> None:
    states = ("run", "stop")
    history = [ev(1, 100 + 10 * k, states[k % 2]) for k in range(300)]
    for k in range(0, len(history), 50):
        apply(db, history[k : k + 50])
    stats = apply(db, [ev(1, 105, "setup", code="S1")])
    # Rebuilt from the interval holding t=105 on, but only the split rows are written.
    assert stats == IntervalStats(events_inserted=1, assets_rebuilt=1, intervals_written=2)
    got = stored(db)
    assert got[:3] == [
        iv(1, 100, 105, "run"),
        Interval(
            1, BASE + timedelta(seconds=105), BASE + timedelta(seconds=110), "setup", None, "S1"
        ),
        iv(1, 110, 120, "stop"),
    ]
    assert len(got) == 301
    assert got == derive_intervals([*history, ev(1, 105, "setup", code="S1")])
    assert_well_formed(got)


def test_rebuild_repairs_intervals_from_events(db: psycopg.Connection) -> None:
    events = [ev(1, 0, "run"), ev(1, 10, "stop"), ev(2, 5, "idle"), ev(2, 6, "run")]
    apply(db, events)
    db.execute("DELETE FROM state_intervals WHERE asset_id = 1 AND start_time > %s", (BASE,))
    db.execute("UPDATE state_intervals SET end_time = NULL WHERE asset_id = 1")
    db.commit()
    with db.transaction(), db.cursor() as cur:
        stats = rebuild_intervals(cur, [2, 1, 1])
    assert stats.assets_rebuilt == 2
    assert stored(db) == derive_intervals(events)


def test_caller_row_factory_does_not_matter(db: psycopg.Connection) -> None:
    with db.transaction(), db.cursor(row_factory=dict_row) as cur:
        apply_state_events(cur, [ev(1, 0, "run"), ev(1, 10, "stop")])
    assert stored(db) == [iv(1, 0, 10, "run"), iv(1, 10, None, "stop")]


def test_refuses_autocommit_and_snapshot_isolation(db: psycopg.Connection, pg_url: str) -> None:
    with (
        psycopg.connect(pg_url, autocommit=True) as conn,
        conn.cursor() as cur,
        pytest.raises(IntervalError, match="in transaction: False"),
    ):
        apply_state_events(cur, [ev(1, 0, "run")])
    db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with pytest.raises(IntervalError, match="isolation: repeatable read"):
        apply(db, [ev(1, 0, "run")])
    db.isolation_level = None
    assert stored_events(db) == []


def test_state_row_rejects_naive_time_and_empty_state() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        StateRow(1, datetime(2024, 1, 1), "run", None, None)
    with pytest.raises(ValueError, match="empty state"):
        StateRow(1, BASE, "", None, None)


# -- property: any delivery of any event set ends equal to the reference ----------------------

event_st = st.builds(
    ev,
    st.sampled_from(ASSETS),
    st.integers(0, 60),
    st.sampled_from(["run", "stop", "idle"]),
    st.sampled_from([None, "jam"]),
    st.sampled_from([None, "E7"]),
)


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[StateRow]]:
    """Events (with conflicts), some redelivered, shuffled, split into batches."""
    events = draw(st.lists(event_st, min_size=1, max_size=40))
    redelivered = draw(st.lists(st.sampled_from(events), max_size=15))
    order = draw(st.permutations(events + redelivered))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=8)))
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=deliveries())
def test_any_delivery_matches_reference(
    db: psycopg.Connection, batches: list[list[StateRow]]
) -> None:
    db.execute("TRUNCATE state_events, state_intervals")
    db.commit()
    delivered = [e for batch in batches for e in batch]
    stats = [apply(db, batch) for batch in batches]
    got = stored(db)
    assert got == derive_intervals(delivered)
    assert_well_formed(got)
    assert {i.asset_id for i in got if i.end_time is None} == {e.asset_id for e in delivered}
    first: dict[tuple[int, datetime], StateRow] = {}
    for e in delivered:
        first.setdefault((e.asset_id, e.time), e)
    assert stored_events(db) == [first[k] for k in sorted(first)]
    assert sum(s.events_inserted for s in stats) == len(first)
    assert sum(s.duplicates + s.conflicts for s in stats) == len(delivered) - len(first)


# -- concurrency ------------------------------------------------------------------------------


def _wait_for_advisory_wait(conn: psycopg.Connection, pid: int, *, timeout: float = 10.0) -> None:
    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        row = conn.execute(
            "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        conn.commit()
        if row and row[0] == "advisory":
            return
        _time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on the asset lock")


def test_same_asset_waits_other_asset_does_not(db: psycopg.Connection, pg_url: str) -> None:
    with psycopg.connect(pg_url) as b, psycopg.connect(pg_url) as c:
        done = threading.Event()

        def worker() -> None:
            apply(b, [ev(1, 0, "stop")])
            done.set()

        thread = threading.Thread(target=worker)
        with db.transaction(), db.cursor() as cur:
            apply_state_events(cur, [ev(1, 10, "run")])
            # Another asset is not held up by the open transaction on asset 1 ...
            apply(c, [ev(2, 0, "run")])
            # ... the same asset is, until it commits.
            thread.start()
            _wait_for_advisory_wait(c, b.info.backend_pid)
            assert not done.is_set()
        thread.join(timeout=10)
        assert done.is_set()
    assert stored(db) == [iv(1, 0, 10, "stop"), iv(1, 10, None, "run"), iv(2, 0, None, "run")]


def test_parallel_workers_on_shared_assets(db: psycopg.Connection, pg_url: str) -> None:
    """Two workers, interleaved multi-asset batches of the same assets: no deadlock, no error."""
    rng = random.Random(7)
    events = [
        ev(a, t, rng.choice(["run", "stop", "idle"])) for a in ASSETS for t in range(0, 700, 5)
    ]
    shared = rng.sample(events, 60)  # delivered by both workers (a redelivery after a crash)
    work = [events[0::2] + shared, events[1::2] + shared]
    for part in work:
        rng.shuffle(part)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(part: list[StateRow]) -> None:
        try:
            with psycopg.connect(pg_url) as conn:
                start.wait()
                for k in range(0, len(part), 8):
                    apply(conn, part[k : k + 8])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(part,)) for part in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    got = stored(db)
    assert got == derive_intervals(events)
    assert_well_formed(got)
