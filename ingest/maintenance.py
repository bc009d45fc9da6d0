"""Storage upkeep on plain PostgreSQL: partitions, retention and rollups.

TimescaleDB does all of this itself (chunks, retention and continuous-aggregate policies);
there every function here is a no-op that says "timescale handles it".

Partitions: ``samples`` and ``samples_text`` are range-partitioned by UTC day, one table
per day named ``<table>_pYYYYMMDD``. ``ensure_partitions`` creates today .. today +
``days_ahead``; ``ensure_partition_for`` creates one day on demand. A DEFAULT partition
(``<table>_default``) catches a sample whose day has no partition, so an insert never
fails; ``ensure_partitions`` then moves such rows into their day's partition (creating it)
and ``apply_retention`` deletes the ones older than the retention. A writer therefore
never *needs* to create partitions: a late sample from last week lands in the default
partition and moves to its own within a maintenance period.

Rollups: ``samples_1m`` and ``samples_1h`` hold, per tag and bucket, min, max, avg, count
and last (the value of the latest sample) of the *good* samples (quality 0, value not
NULL); uncertain and bad ones do not count, as in the continuous aggregates. The writer
notes the time ranges it wrote (``note_samples``, in the same transaction; a no-op on
TimescaleDB); ``refresh_pending`` recomputes the buckets those ranges touch: 1-minute
buckets from ``samples``, 1-hour buckets from ``samples_1m`` (so an hour costs 60 rows per
tag, not an hour of raw samples; its avg is the count-weighted mean of the minutes, equal to
the raw mean up to rounding). Refreshes only insert and update: a bucket whose samples were
deleted (retention) keeps its rollup until the rollup's own retention removes it.

Concurrency: every function may run from several workers at once. Partition DDL and rollup
refreshes take transaction-level advisory locks; ``Maintainer`` takes a session-level one
and skips the round when another worker holds it. DDL waits at most ``LOCK_TIMEOUT`` for
its table locks, so a long ingest transaction delays maintenance, never the other way round.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
import structlog
from psycopg import sql

from edge_agent.logs import FailureGate
from ingest import schema
from ingest.db import connect, describe_url
from ingest.errors import DatabaseUnavailable, IngestError

TIMESCALE_NOTE = "timescale handles it"
LOCK_TIMEOUT = "5s"
# Advisory lock keys (per database): 'lp' + a number.
PARTITION_LOCK = 0x6C70_0002
ROLLUP_LOCK = 0x6C70_0003
MAINTAINER_LOCK = 0x6C70_0004
# Bookkeeping kept by the service on both modes (see prune_bookkeeping).
LEDGER_KEEP_DAYS = 180
DEAD_LETTER_KEEP_DAYS = 30
# Noted ranges closer than this are refreshed together.
MERGE_GAP = timedelta(minutes=5)
# refresh_pending recomputes at most this much time per statement.
REFRESH_SLICE = timedelta(hours=6)

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

log = structlog.get_logger("ingest.maintenance")

Conn = psycopg.Connection[Any]


def is_timescale(conn: Conn) -> bool:
    """The mode recorded by the migrations; raises when the database was never migrated."""
    recorded = schema.recorded_timescale(conn)
    if recorded is None:
        raise IngestError("the database has no linepulse schema yet: run `linepulse db upgrade`")
    return recorded


# ---------------------------------------------------------------------------------------
# Partitions


def partition_name(table: str, day: date) -> str:
    """``samples_p20250131``: the partition of ``table`` holding that UTC day."""
    return f"{table}_p{day:%Y%m%d}"


def ensure_partitions(
    conn: Conn,
    *,
    days_ahead: int = 7,
    now: datetime | None = None,
    retention_days: int | None = None,
) -> list[str]:
    """Create the daily partitions for today .. today + ``days_ahead``, and for the days of
    rows waiting in a default partition (except days entirely older than ``retention_days``:
    retention deletes those rows); returns a line per partition created."""
    now = _utc(now)
    today = now.date()
    days = {today + timedelta(days=n) for n in range(days_ahead + 1)}
    cutoff = None if retention_days is None else now - timedelta(days=retention_days)
    return _ensure_days(conn, days, from_default=True, not_before=cutoff)


def ensure_partition_for(conn: Conn, day: date) -> list[str]:
    """Create the partitions of one UTC day if missing (moving its rows out of the default)."""
    return _ensure_days(conn, {day}, from_default=False)


def _ensure_days(
    conn: Conn, days: set[date], *, from_default: bool, not_before: datetime | None = None
) -> list[str]:
    if is_timescale(conn):
        return [TIMESCALE_NOTE]
    lines: list[str] = []
    with conn.transaction():
        _ddl_guard(conn)
        for table in schema.TIME_TABLES:
            waiting = _days_in_default(conn, table) if from_default else set()
            if not_before is not None:
                waiting = {d for d in waiting if _day_bounds(d)[1] > not_before}
            wanted = days | waiting
            for day in sorted(wanted - partition_days(conn, table)):
                moved = _create_partition(conn, table, day)
                extra = f" (moved {moved} rows from {table}_default)" if moved else ""
                lines.append(f"created partition {partition_name(table, day)}{extra}")
    return lines


def partition_days(conn: Conn, table: str) -> set[date]:
    """The days that have their own partition of ``table``."""
    pattern = re.compile(rf"^{re.escape(table)}_p(\d{{8}})$")
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    matches = (pattern.match(name) for (name,) in rows)
    return {datetime.strptime(m.group(1), "%Y%m%d").date() for m in matches if m}


def _days_in_default(conn: Conn, table: str) -> set[date]:
    default = f"{table}_default"
    if not _exists(conn, default):  # a database at schema version 1
        return set()
    query = sql.SQL("SELECT DISTINCT (time AT TIME ZONE 'UTC')::date FROM {}").format(
        sql.Identifier(default)
    )
    return {day for (day,) in conn.execute(query)}


def _create_partition(conn: Conn, table: str, day: date) -> int:
    """Create, fill from the default partition, attach; returns the rows moved."""
    lo, hi = _day_bounds(day)
    ids = {
        "part": sql.Identifier(partition_name(table, day)),
        "table": sql.Identifier(table),
        "default": sql.Identifier(f"{table}_default"),
        "lo": sql.Literal(lo.isoformat()),
        "hi": sql.Literal(hi.isoformat()),
    }
    # CREATE + ATTACH instead of CREATE ... PARTITION OF: attaching needs only a SHARE UPDATE
    # EXCLUSIVE lock on the parent, so ingest keeps writing meanwhile.
    conn.execute(
        sql.SQL(
            "CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ).format(**ids)
    )
    moved = 0
    if _exists(conn, f"{table}_default"):
        # Rows for this day already in the default partition must move first, or ATTACH
        # fails; the lock keeps new ones from arriving between the move and the attach.
        conn.execute(sql.SQL("LOCK TABLE {default} IN EXCLUSIVE MODE").format(**ids))
        moved = conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {default} WHERE time >= {lo} AND time < {hi}"
                " RETURNING *) INSERT INTO {part} SELECT * FROM moved"
            ).format(**ids)
        ).rowcount
    conn.execute(
        sql.SQL(
            "ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM ({lo}) TO ({hi})"
        ).format(**ids)
    )
    return max(moved, 0)


def _ddl_guard(conn: Conn) -> None:
    """Serialize partition DDL between workers; give up rather than stall ingest on locks."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))


# ---------------------------------------------------------------------------------------
# Retention


def apply_retention(
    conn: Conn,
    *,
    retention_days: int,
    now: datetime | None = None,
    rollup_1m_days: int | None = None,
    rollup_1h_days: int | None = None,
) -> list[str]:
    """Drop the day partitions entirely older than ``retention_days`` (and such rows in the
    default partitions); with the rollup arguments, delete rollup buckets older than those."""
    if is_timescale(conn):
        return [TIMESCALE_NOTE]
    if retention_days < 1:
        raise IngestError(f"retention_days must be at least 1, not {retention_days}")
    now = _utc(now)
    cutoff = now - timedelta(days=retention_days)
    lines: list[str] = []
    for table in schema.TIME_TABLES:
        lines += _drop_partitions_before(conn, table, cutoff)
    with conn.transaction():
        for table in schema.TIME_TABLES:
            default = sql.Identifier(f"{table}_default")
            deleted = conn.execute(
                sql.SQL("DELETE FROM {} WHERE time < %s").format(default), (cutoff,)
            ).rowcount
            if deleted > 0:
                lines.append(
                    f"deleted {deleted} rows older than {cutoff:%Y-%m-%d} from {table}_default"
                )
        for rollup, days in (("samples_1m", rollup_1m_days), ("samples_1h", rollup_1h_days)):
            if days is not None:
                lines += _expire_rollup(conn, rollup, now - timedelta(days=days))
        # Noted ranges older than the raw data are nothing to refresh any more.
        conn.execute("DELETE FROM rollup_pending WHERE end_time < %s", (cutoff,))
    return lines


def prune_bookkeeping(
    conn: Conn,
    *,
    now: datetime | None = None,
    ledger_days: int = LEDGER_KEEP_DAYS,
    dead_letter_days: int = DEAD_LETTER_KEEP_DAYS,
) -> list[str]:
    """Delete ledger rows and dead letters older than their keep time (both modes).

    The ledger must outlive any backlog an agent may still replay: a gateway whose outbox
    holds messages older than ``ledger_days`` would have them stored a second time.
    """
    now = _utc(now)
    lines = []
    with conn.transaction():
        for table, days in (("ingest_ledger", ledger_days), ("dead_letters", dead_letter_days)):
            cutoff = now - timedelta(days=days)
            deleted = conn.execute(
                sql.SQL("DELETE FROM {} WHERE received_at < %s").format(sql.Identifier(table)),
                (cutoff,),
            ).rowcount
            if deleted > 0:
                lines.append(f"deleted {deleted} {table} rows older than {days} days")
    return lines


def _drop_partitions_before(conn: Conn, table: str, cutoff: datetime) -> list[str]:
    lines = []
    for day in sorted(partition_days(conn, table)):
        if _day_bounds(day)[1] > cutoff:
            break
        # One transaction per partition: each DROP briefly locks the parent.
        with conn.transaction():
            _ddl_guard(conn)
            name = partition_name(table, day)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        lines.append(f"dropped partition {name} (older than {cutoff:%Y-%m-%d %H:%M} UTC)")
    return lines


def _expire_rollup(conn: Conn, rollup: str, cutoff: datetime) -> list[str]:
    deleted = conn.execute(
        sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(rollup)), (cutoff,)
    ).rowcount
    return [f"deleted {deleted} {rollup} rows before {cutoff:%Y-%m-%d}"] if deleted > 0 else []


# ---------------------------------------------------------------------------------------
# Rollups

_GOOD_ROWS = f"quality = {schema.GOOD} AND value IS NOT NULL"
_CHANGED = (
    " ON CONFLICT (tag_id, bucket) DO UPDATE SET min = EXCLUDED.min, max = EXCLUDED.max,"
    " avg = EXCLUDED.avg, count = EXCLUDED.count, last = EXCLUDED.last"
    " WHERE (r.min, r.max, r.avg, r.count, r.last)"
    " IS DISTINCT FROM (EXCLUDED.min, EXCLUDED.max, EXCLUDED.avg, EXCLUDED.count, EXCLUDED.last)"
)
UPSERT_1M = (
    "INSERT INTO samples_1m AS r (bucket, tag_id, min, max, avg, count, last)"
    f" SELECT date_bin('1 minute', time, '{schema.BUCKET_ORIGIN}'), tag_id,"
    " min(value), max(value), avg(value), count(value),"
    " (array_agg(value ORDER BY time DESC))[1]"
    f" FROM samples WHERE time >= %(lo)s AND time < %(hi)s AND {_GOOD_ROWS}"
    " GROUP BY 1, 2" + _CHANGED
)
# Hours from minutes; the avg weighted by count is the mean of the samples.
UPSERT_1H = (
    "INSERT INTO samples_1h AS r (bucket, tag_id, min, max, avg, count, last)"
    f" SELECT date_bin('1 hour', bucket, '{schema.BUCKET_ORIGIN}'), tag_id,"
    " min(min), max(max), sum(avg * count) / sum(count), sum(count)::bigint,"
    " (array_agg(last ORDER BY bucket DESC))[1]"
    " FROM samples_1m WHERE bucket >= %(lo)s AND bucket < %(hi)s"
    " GROUP BY 1, 2" + _CHANGED
)


def refresh_rollups(conn: Conn, *, since: datetime, until: datetime) -> int:
    """Recompute every 1-minute and 1-hour bucket holding a moment in [since, until];
    returns the rollup rows inserted or changed (0 on TimescaleDB)."""
    if is_timescale(conn):
        return 0
    since, until = _utc(since), _utc(until)
    if until < since:
        raise IngestError(f"refresh_rollups: until {until} is before since {since}")
    minutes = {"lo": _floor(since, _MINUTE), "hi": _floor(until, _MINUTE) + _MINUTE}
    hours = {"lo": _floor(since, _HOUR), "hi": _floor(until, _HOUR) + _HOUR}
    with conn.transaction():
        # Two refreshes upserting the same keys in different orders could deadlock.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        changed = conn.execute(UPSERT_1M, minutes).rowcount
        changed += conn.execute(UPSERT_1H, hours).rowcount
    return changed


def note_samples(conn: Conn, ranges: Iterable[tuple[datetime, datetime]]) -> None:
    """Record (start, end) time ranges just written to ``samples`` so the rollups follow;
    call it in the writer's transaction, e.g. one range per message. Free on TimescaleDB."""
    merged = merge_ranges(ranges)
    if merged:
        conn.execute(
            "SELECT linepulse_note_samples(lo, hi)"
            " FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS r (lo, hi)",
            ([lo for lo, _ in merged], [hi for _, hi in merged]),
        )


def merge_ranges(
    ranges: Iterable[tuple[datetime, datetime]], *, gap: timedelta = MERGE_GAP
) -> list[tuple[datetime, datetime]]:
    """Sort (start, end) ranges and join those less than ``gap`` apart."""
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted((min(a, b), max(a, b)) for a, b in ranges):
        if merged and lo - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def refresh_pending(conn: Conn) -> int:
    """Refresh the rollups over every range noted so far (and forget those ranges)."""
    if is_timescale(conn):
        return 0
    changed = 0
    with conn.transaction():
        # Only the notes committed by now are taken (and deleted); a writer committing later
        # leaves its notes for the next round, so no range is lost, and a failed refresh
        # rolls the deletion back.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        rows = conn.execute("DELETE FROM rollup_pending RETURNING start_time, end_time")
        for lo, hi in merge_ranges(rows.fetchall()):
            # A long range (a gateway replaying a day) in slices: bounded work per statement.
            while lo <= hi:
                end = min(hi, _floor(lo, _HOUR) + REFRESH_SLICE - _MINUTE)
                changed += refresh_rollups(conn, since=lo, until=end)
                lo = _floor(end, _MINUTE) + _MINUTE
    return changed


# ---------------------------------------------------------------------------------------
# The periodic task


class Maintainer:
    """Storage upkeep the ingest service runs every minute or so, in every worker.

    Each round: partitions ahead (and out of the default partitions), rollups over the
    ranges the writers noted, and, every ``retention_every``, retention as stored in
    ``storage_retention``. One worker at a time does it (a session advisory lock); the
    others skip the round. Owns its own connection, reconnecting after failures.
    """

    def __init__(
        self,
        url: str,
        *,
        days_ahead: int = 7,
        retention_every: timedelta = _HOUR,
    ) -> None:
        self._url = url
        self._days_ahead = days_ahead
        self._retention_every = retention_every
        self._last_prune: datetime | None = None
        self._conn: Conn | None = None
        self._timescale: bool | None = None
        self._gate = FailureGate(log, what="storage maintenance")

    def run_once(self, *, now: datetime | None = None) -> list[str]:
        """One round; returns what it did. Raises IngestError when the database fails."""
        try:
            conn = self._connection()
            if self._timescale is None:
                self._timescale = is_timescale(conn)
            if not _scalar(conn, "SELECT pg_try_advisory_lock(%s)", MAINTAINER_LOCK):
                return ["skipped: another worker is running maintenance"]
            try:
                now = _utc(now)
                lines = [TIMESCALE_NOTE] if self._timescale else self._round(conn, now)
                if self._last_prune is None or now - self._last_prune >= self._retention_every:
                    lines += prune_bookkeeping(conn, now=now)
                    self._last_prune = now
                return lines
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MAINTAINER_LOCK,))
        except psycopg.OperationalError as err:
            self._drop_connection()
            raise DatabaseUnavailable(
                f"storage maintenance lost {describe_url(self._url)}: {err}"
            ) from None
        except psycopg.Error as err:
            raise IngestError(f"storage maintenance failed: {err}") from None

    def _round(self, conn: Conn, now: datetime) -> list[str]:
        retention = schema.load_retention(conn) or schema.Retention()
        lines = ensure_partitions(
            conn, days_ahead=self._days_ahead, now=now, retention_days=retention.samples_days
        )
        changed = refresh_pending(conn)
        if changed:
            lines.append(f"refreshed {changed} rollup rows")
        last = _scalar(conn, "SELECT last_run FROM maintenance_state WHERE task = 'retention'")
        if last is None or now - last >= self._retention_every:
            lines += apply_retention(
                conn,
                retention_days=retention.samples_days,
                rollup_1m_days=retention.rollup_1m_days,
                rollup_1h_days=retention.rollup_1h_days,
                now=now,
            )
            conn.execute(
                "INSERT INTO maintenance_state (task, last_run) VALUES ('retention', %s)"
                " ON CONFLICT (task) DO UPDATE SET last_run = EXCLUDED.last_run",
                (now,),
            )
        return lines

    def run(self, stop: threading.Event, *, interval: float = 60.0) -> None:
        """Run rounds every ``interval`` seconds until ``stop`` is set; never raises."""
        while not stop.is_set():
            try:
                for line in self.run_once():
                    log.info("maintenance", action=line)
                self._gate.ok()
            except IngestError as err:
                self._gate.failed(err)
            stop.wait(interval)
        self.close()

    def close(self) -> None:
        self._drop_connection()

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, autocommit=True)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


# ---------------------------------------------------------------------------------------
# Small helpers


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        raise IngestError(f"naive datetime {moment} given where UTC time is needed")
    return moment.astimezone(UTC)


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    lo = datetime.combine(day, time.min, UTC)
    return lo, lo + _DAY


def _exists(conn: Conn, relation: str) -> bool:
    return _scalar(conn, "SELECT to_regclass(%s)", relation) is not None


def _scalar(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]
