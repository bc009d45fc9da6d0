"""Machine state events -> state intervals, correct under duplicates, late and out-of-order events.

``state_events`` holds every distinct event as the gateways reported it; ``state_intervals``
is derived from it: each event starts an interval that ends at the next event of the same
asset, the last one is open (``end_time`` NULL), and consecutive events with the same
(state, reason, code) merge into one interval. ``derive_intervals`` is the pure reference
of that rule; ``apply_state_events`` keeps the table equal to it, incrementally.

How one batch is applied (all inside the caller's transaction, a handful of statements per
batch whatever its size):

1. A transaction-level advisory lock per asset, in ascending asset order, so two workers
   never interleave on one asset and never deadlock each other.
2. The events are inserted with ON CONFLICT DO NOTHING. The same (asset, time) again is a
   duplicate and changes nothing; a *different* state at a stored (asset, time) is a
   conflict: the first stored wins (earlier batch, or earlier row of the same batch) and
   it is counted (``IntervalStats.conflicts``) and logged.
3. For each asset, with ``m`` its earliest newly inserted event: the interval holding ``m``
   (the last one starting at or before it) is the anchor. Every event in [anchor, m) has
   the anchor's state, so the intervals are recomputed from the anchor (LAG/LEAD over the
   anchor plus the events at or after ``m``) up to the first interval boundary the new
   events cannot move (the first start after the stored event that follows the latest new
   one), and compared with the stored ones: rows that vanished are deleted, ends that moved
   are updated, new rows are inserted. In the normal case (events in order at the end) that
   closes the open interval and opens a new one, or writes nothing when the state did not
   change; a late event rewrites only its neighbourhood, splitting or not as the neighbours
   require. An event before the first known one anchors at itself.

Requires READ COMMITTED (PostgreSQL's default): each statement after the lock must see
what a concurrent worker committed for the same asset before it released the lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from ingest.errors import IngestError

log = structlog.get_logger(__name__)

# First key of the two-int advisory lock ("LPSI": linepulse state intervals), so these
# locks never collide with other users of advisory locks keyed by a bare asset id.
LOCK_NAMESPACE = 0x4C505349

IntervalKey = tuple[int, datetime]

_BEGINNING = datetime.min.replace(tzinfo=UTC)
_END = datetime.max.replace(tzinfo=UTC)


class IntervalError(IngestError):
    """The state intervals cannot be maintained as asked (says what to fix)."""


@dataclass(frozen=True, slots=True)
class StateRow:
    """One machine state event, as stored in ``state_events``."""

    asset_id: int
    time: datetime
    state: str
    reason: str | None
    code: str | None
    agent: str | None = None
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"state event time {self.time!r} must be timezone-aware (UTC)")
        if not self.state:
            raise ValueError(f"state event of asset {self.asset_id} at {self.time}: empty state")


@dataclass(frozen=True, slots=True)
class Interval:
    """A period one asset spent in one state; ``end_time`` None means still open."""

    asset_id: int
    start_time: datetime
    end_time: datetime | None
    state: str
    reason: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class IntervalStats:
    """What one call did, for metrics and logs."""

    events_inserted: int = 0
    duplicates: int = 0  # same (asset, time) as a stored event, same state: ignored
    conflicts: int = 0  # same (asset, time), different state: the first stored was kept
    assets_rebuilt: int = 0  # assets that got an event earlier than their latest stored one
    intervals_written: int = 0  # rows inserted, updated or deleted in state_intervals


def derive_intervals(events: Iterable[StateRow]) -> list[Interval]:
    """The reference: intervals of all assets, ordered by (asset, start).

    Of several events at one (asset, time) the first in ``events`` counts, as in the table.
    """
    first: dict[IntervalKey, StateRow] = {}
    for ev in events:
        first.setdefault((ev.asset_id, ev.time), ev)
    out: list[Interval] = []
    for key in sorted(first):
        ev = first[key]
        last = out[-1] if out else None
        if last is not None and last.asset_id == ev.asset_id:
            if (last.state, last.reason, last.code) == (ev.state, ev.reason, ev.code):
                continue  # a re-announced state extends the current interval
            out[-1] = _closed(last, ev.time)
        out.append(Interval(ev.asset_id, ev.time, None, ev.state, ev.reason, ev.code))
    return out


def _closed(interval: Interval, end: datetime) -> Interval:
    return Interval(
        interval.asset_id, interval.start_time, end, interval.state, interval.reason, interval.code
    )


# unnest() yields the array in order, so the locks are taken in ascending asset order.
_LOCK = """
SELECT current_setting('transaction_isolation'), count(pg_advisory_xact_lock(%s, a))
FROM unnest(%s::int[]) AS a
"""

# The main query reads state_events as it was before the insert (data-modifying CTEs are
# invisible to it), which gives each asset's latest event before this batch.
_INSERT_EVENTS = """
WITH input AS (
    SELECT * FROM unnest(%s::int[], %s::timestamptz[], %s::text[], %s::text[], %s::text[],
                         %s::text[], %s::bigint[])
        WITH ORDINALITY AS t(asset_id, time, state, reason, code, agent, seq, ord)
), ins AS (
    INSERT INTO state_events (asset_id, time, state, reason, code, agent, seq)
    SELECT asset_id, time, state, reason, code, agent, seq FROM input ORDER BY ord
    ON CONFLICT (asset_id, time) DO NOTHING
    RETURNING asset_id, time
)
SELECT asset_id, min(time), max(time), count(*),
       (SELECT max(e.time) FROM state_events e WHERE e.asset_id = ins.asset_id)
FROM ins GROUP BY asset_id ORDER BY asset_id
"""

_CONFLICTS = """
SELECT i.asset_id, i.time, (e.state, e.reason, e.code)::text, (i.state, i.reason, i.code)::text
FROM unnest(%s::int[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])
     AS i(asset_id, time, state, reason, code)
JOIN state_events e USING (asset_id, time)
WHERE (e.state, e.reason, e.code) IS DISTINCT FROM (i.state, i.reason, i.code)
"""

# Old rows (new = false) and recomputed rows (new = true) of each asset in [since, upto):
# since is the start of the interval holding the earliest new event m (or m itself when it
# precedes them all); upto is the first interval start after the next stored event following
# the latest new one. Events from there on keep their predecessors, so the intervals from
# upto on are unchanged (NULL: recompute to the end). LATERAL ... OFFSET 0 (no pull-up)
# keeps every read an index range scan on the primary keys; flattened, the planner cannot
# see how narrow the ranges are and hash-joins whole tables.
_RECOMPUTE = """
WITH n AS (
    SELECT * FROM unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS t(asset_id, m, last)
), anchor AS (
    SELECT n.asset_id, n.m, coalesce(i.start_time, n.m) AS since, x.upto,
           i.start_time, i.state, i.reason, i.code
    FROM n
    LEFT JOIN LATERAL (
        SELECT start_time, state, reason, code FROM state_intervals si
        WHERE si.asset_id = n.asset_id AND si.start_time <= n.m
        ORDER BY si.start_time DESC LIMIT 1
    ) i ON true
    LEFT JOIN LATERAL (
        SELECT si.start_time AS upto FROM state_intervals si
        WHERE si.asset_id = n.asset_id AND si.start_time > (
            SELECT e.time FROM state_events e
            WHERE e.asset_id = n.asset_id AND e.time > n.last ORDER BY e.time LIMIT 1)
        ORDER BY si.start_time LIMIT 1
    ) x ON true
), seq AS (
    SELECT asset_id, start_time AS time, state, reason, code, upto
    FROM anchor WHERE start_time IS NOT NULL
    UNION ALL
    SELECT a.asset_id, e.time, e.state, e.reason, e.code, a.upto
    FROM anchor a CROSS JOIN LATERAL (
        SELECT time, state, reason, code FROM state_events e
        WHERE e.asset_id = a.asset_id AND e.time >= a.m
          AND e.time < coalesce(a.upto, 'infinity')
        OFFSET 0
    ) e
), marked AS (
    SELECT *, (state, reason, code) IS DISTINCT FROM
              (lag(state) OVER w, lag(reason) OVER w, lag(code) OVER w) AS starts
    FROM seq WINDOW w AS (PARTITION BY asset_id ORDER BY time)
)
SELECT true, asset_id, time,
       coalesce(lead(time) OVER (PARTITION BY asset_id ORDER BY time), upto),
       state, reason, code
FROM marked WHERE starts
UNION ALL
SELECT false, a.asset_id, si.start_time, si.end_time, si.state, si.reason, si.code
FROM anchor a CROSS JOIN LATERAL (
    SELECT * FROM state_intervals si
    WHERE si.asset_id = a.asset_id AND si.start_time >= a.since
      AND si.start_time < coalesce(a.upto, 'infinity')
    OFFSET 0
) si
"""

_DELETE = """
DELETE FROM state_intervals si
USING unnest(%s::int[], %s::timestamptz[]) AS d(asset_id, start_time)
WHERE si.asset_id = d.asset_id AND si.start_time = d.start_time
"""

_UPDATE_END = """
UPDATE state_intervals si SET end_time = u.end_time
FROM unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS u(asset_id, start_time, end_time)
WHERE si.asset_id = u.asset_id AND si.start_time = u.start_time
"""

_INSERT_INTERVALS = """
INSERT INTO state_intervals (asset_id, start_time, end_time, state, reason, code)
SELECT * FROM unnest(%s::int[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[],
                     %s::text[])
"""


def apply_state_events(cur: psycopg.Cursor[Any], rows: Sequence[StateRow]) -> IntervalStats:
    """Store state events and bring the intervals of their assets up to date.

    Runs in the caller's transaction (READ COMMITTED); the locks it takes last until commit.
    """
    if not rows:
        return IntervalStats()
    with _tuple_cursor(cur) as tcur:
        return _apply(tcur, rows)


def _apply(cur: psycopg.Cursor[Any], rows: Sequence[StateRow]) -> IntervalStats:
    _lock_assets(cur, {r.asset_id for r in rows})
    cur.execute(_INSERT_EVENTS, _columns(rows, 7))
    # Per asset: earliest and latest new time, how many were new, latest stored before.
    per_asset = cur.fetchall()
    inserted = sum(count for *_, count, _ in per_asset)
    conflicts = _count_conflicts(cur, rows) if inserted < len(rows) else 0
    late = sum(1 for _, first, _, _, before in per_asset if before is not None and first < before)
    written = _recompute(
        cur,
        asset_ids=[a for a, *_ in per_asset],
        first=[first for _, first, *_ in per_asset],
        last=[last for _, _, last, *_ in per_asset],
    )
    return IntervalStats(
        events_inserted=inserted,
        duplicates=len(rows) - inserted - conflicts,
        conflicts=conflicts,
        assets_rebuilt=late,
        intervals_written=written,
    )


def rebuild_intervals(cur: psycopg.Cursor[Any], asset_ids: Iterable[int]) -> IntervalStats:
    """Recompute the intervals of some assets from all their stored events (repair, backfill)."""
    assets = sorted(set(asset_ids))
    if not assets:
        return IntervalStats()
    with _tuple_cursor(cur) as tcur:
        _lock_assets(tcur, assets)
        tcur.execute("DELETE FROM state_intervals WHERE asset_id = ANY(%s::int[])", (assets,))
        deleted = tcur.rowcount
        # With no interval left every asset anchors at its first event: all derived again.
        written = _recompute(
            tcur, asset_ids=assets, first=[_BEGINNING] * len(assets), last=[_END] * len(assets)
        )
    return IntervalStats(assets_rebuilt=len(assets), intervals_written=deleted + written)


def _tuple_cursor(cur: psycopg.Cursor[Any]) -> psycopg.Cursor[Any]:
    """A cursor of the same connection with plain tuple rows, whatever the caller's factory."""
    return cur.connection.cursor(row_factory=tuple_row)


def _lock_assets(cur: psycopg.Cursor[Any], asset_ids: Iterable[int]) -> None:
    """Lock the assets until commit, in ascending order so workers cannot deadlock."""
    cur.execute(_LOCK, (LOCK_NAMESPACE, sorted(set(asset_ids))))
    row = cur.fetchone()
    level = row[0] if row else "unknown"
    in_transaction = cur.connection.info.transaction_status == TransactionStatus.INTRANS
    if not in_transaction or level != "read committed":
        # Outside a transaction the locks end with the statement; above READ COMMITTED the
        # snapshot predates the lock and misses what the other worker just committed.
        raise IntervalError(
            "state events must be applied inside a READ COMMITTED transaction "
            f"(in transaction: {in_transaction}, isolation: {level})"
        )


def _columns(rows: Sequence[StateRow], width: int) -> list[list[Any]]:
    """Column arrays for unnest(): the first ``width`` fields of StateRow."""
    fields = ("asset_id", "time", "state", "reason", "code", "agent", "seq")[:width]
    return [[getattr(r, f) for r in rows] for f in fields]


def _count_conflicts(cur: psycopg.Cursor[Any], rows: Sequence[StateRow]) -> int:
    cur.execute(_CONFLICTS, _columns(rows, 5))
    found = cur.fetchall()
    for asset_id, time, kept, dropped in found[:10]:  # a storm of them needs no more lines
        log.warning(
            "state_event_conflict",
            asset_id=asset_id,
            time=time.isoformat(),
            kept=kept,
            dropped=dropped,
            total=len(found),
        )
    return len(found)


def _recompute(
    cur: psycopg.Cursor[Any], *, asset_ids: list[int], first: list[datetime], last: list[datetime]
) -> int:
    """Bring the intervals around the new events (first..last per asset) in line with events."""
    if not asset_ids:
        return 0
    cur.execute(_RECOMPUTE, (asset_ids, first, last))
    new: dict[IntervalKey, Interval] = {}
    old: dict[IntervalKey, Interval] = {}
    for is_new, *fields in cur.fetchall():
        interval = Interval(*fields)
        (new if is_new else old)[(interval.asset_id, interval.start_time)] = interval
    return _write_diff(cur, old=old, new=new)


def _write_diff(
    cur: psycopg.Cursor[Any], *, old: dict[IntervalKey, Interval], new: dict[IntervalKey, Interval]
) -> int:
    """Delete, then shrink, then insert: no intermediate state overlaps (see below)."""
    gone = [k for k in old if k not in new]
    moved = [new[k] for k in old if k in new and new[k] != old[k]]
    added = [new[k] for k in new if k not in old]
    # An interval that keeps its start keeps its state (the event at its start is the same)
    # and its end can only move earlier, since added events only add boundaries before a
    # removed one. So after the deletes and the updates nothing overlaps an added row.
    if gone:
        cur.execute(_DELETE, ([a for a, _ in gone], [t for _, t in gone]))
    if moved:
        cur.execute(_UPDATE_END, _interval_columns(moved, 3))
    if added:
        cur.execute(_INSERT_INTERVALS, _interval_columns(added, 6))
    return len(gone) + len(moved) + len(added)


def _interval_columns(rows: Sequence[Interval], width: int) -> list[list[Any]]:
    fields = ("asset_id", "start_time", "end_time", "state", "reason", "code")[:width]
    return [[getattr(r, f) for r in rows] for f in fields]
