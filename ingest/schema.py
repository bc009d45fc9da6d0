"""The linepulse database schema, as ordered migrations (applied by ``ingest/migrate.py``).

Each migration is a version, a description and a function that runs its SQL on a
connection inside one transaction; ``timescale`` says whether the TimescaleDB extension
is in use. The same tables exist on both: on TimescaleDB the time tables are hypertables
with compression, retention and continuous aggregates; on plain PostgreSQL they are
range-partitioned by day and the service creates partitions ahead, drops old ones and
maintains the rollup tables (``ingest/maintenance.py``).

1. Core tables (assets, tags, samples, states, counts, ledger, dead letters, gateways).
2. Time series: ``storage_retention`` (days kept per relation: raw 90, 1-minute rollups
   365, 1-hour rollups 1825 by default) and the rollups ``samples_1m``/``samples_1h``
   (bucket, tag_id, min, max, avg, count, last) of the *good* samples only (quality 0,
   value not NULL: uncertain and bad samples never enter a rollup). TimescaleDB:
   compression (segment by tag_id, newest first; chunks older than 2 days), retention
   policies, continuous aggregates with real-time aggregation and refresh policies.
   PostgreSQL: default partitions, rollup tables, ``rollup_pending`` and
   ``maintenance_state``. ``linepulse_note_samples(lo, hi)`` exists on both.
3. The read-only group role ``linepulse_reader`` (see ``READER``).
4. BRIN indexes for pruning the ingest ledger and dead letters.
5. ``api_keys`` (hashed API keys with roles; not readable by ``linepulse_reader``) and
   ``audit_log`` (changes made through the API).
6. OEE settings: shift exceptions, state loss classes, machine settings.
7. ``stop_reasons`` (operators' reasons for stop time, laid over the machines' own) and
   ``production_rejects`` (rejected parts by reason, where the PLC counts them so).
8. ``production_counts_1h``: production counts summed per machine, UTC hour and product,
   kept exact by triggers on ``production_counts``; OEE reads it for long ranges.

Reads must work the same on both: query the tables and the ``samples_1m``/``samples_1h``
rollups with plain SQL (``date_bin``, not ``time_bucket``).

Value encoding in ``samples``: numbers as double precision (integers above 2**53 lose
precision), booleans as 0/1, quality 0 good, 1 uncertain, 2 bad (value NULL when bad).
Text values go to ``samples_text``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ingest.errors import ConfigError

QUALITY_CODES = {"good": 0, "uncertain": 1, "bad": 2}

# Tables with a time column that are hypertables on TimescaleDB / partitioned otherwise.
TIME_TABLES = ("samples", "samples_text")


@dataclass(frozen=True)
class Migration:
    """One schema step: ``apply(conn, timescale)`` runs in the transaction that records it.

    ``after(conn, timescale)``, when set, runs once the migration has committed, on an
    autocommit connection (for statements TimescaleDB refuses inside a transaction block);
    it returns lines for the upgrade report.
    """

    version: int
    description: str
    apply: Callable[[psycopg.Connection[Any], bool], None]
    after: Callable[[psycopg.Connection[Any], bool], list[str]] | None = None


CORE = """
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- The ISA-95 tree: enterprise > site > area > line > machine; path is 'site/area/line/machine'
-- for machines (and its prefix for the levels above).
CREATE TABLE assets (
    id           serial PRIMARY KEY,
    parent_id    integer REFERENCES assets (id) ON DELETE CASCADE,
    level        text NOT NULL
                 CHECK (level IN ('enterprise', 'site', 'area', 'line', 'machine')),
    name         text NOT NULL,
    path         text NOT NULL UNIQUE,
    display_name text,
    timezone     text,                -- sites: IANA zone for shifts and reports
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_parent ON assets (parent_id);

CREATE TABLE tags (
    id         serial PRIMARY KEY,
    asset_id   integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    name       text NOT NULL,
    datatype   text NOT NULL DEFAULT 'variant',
    unit       text,
    agent      text,
    first_seen timestamptz NOT NULL DEFAULT now(),
    UNIQUE (asset_id, name)
);

-- Raw machine state changes as the gateways reported them (kept so intervals can be
-- rebuilt when events arrive late or out of order).
CREATE TABLE state_events (
    asset_id integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    time     timestamptz NOT NULL,
    state    text NOT NULL,
    reason   text,
    code     text,
    agent    text,
    seq      bigint,
    PRIMARY KEY (asset_id, time)
);

-- One row per period a machine spent in one state; the open one has end_time NULL.
-- Never overlapping (the exclusion constraint holds it even against a bug).
CREATE TABLE state_intervals (
    asset_id   integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    start_time timestamptz NOT NULL,
    end_time   timestamptz,
    state      text NOT NULL,
    reason     text,
    code       text,
    PRIMARY KEY (asset_id, start_time),
    CHECK (end_time IS NULL OR end_time > start_time),
    EXCLUDE USING gist (
        asset_id WITH =,
        tstzrange(start_time, coalesce(end_time, 'infinity'::timestamptz)) WITH &&
    )
);

-- Parts made, as deltas from the PLC counters (good + reject = total).
CREATE TABLE production_counts (
    asset_id integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    time     timestamptz NOT NULL,
    total    integer NOT NULL CHECK (total >= 0),
    good     integer NOT NULL CHECK (good >= 0),
    reject   integer NOT NULL CHECK (reject >= 0),
    product  text,
    agent    text,
    seq      bigint,
    CHECK (good + reject = total)
);
CREATE INDEX production_counts_asset_time ON production_counts (asset_id, time);

CREATE TABLE products (
    id            serial PRIMARY KEY,
    code          text NOT NULL UNIQUE,
    name          text,
    ideal_cycle_s double precision CHECK (ideal_cycle_s > 0)   -- the line default
);
-- Ideal cycle time of a product on one machine (overrides the product's default).
CREATE TABLE product_cycle_times (
    product_id    integer NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    asset_id      integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    ideal_cycle_s double precision NOT NULL CHECK (ideal_cycle_s > 0),
    PRIMARY KEY (product_id, asset_id)
);

-- Downtime reason tree: code -> reason -> category, planned or not.
CREATE TABLE downtime_reasons (
    code     text PRIMARY KEY,
    reason   text NOT NULL,
    category text NOT NULL,
    planned  boolean NOT NULL DEFAULT false
);

-- Shift calendars: recurring weekly shifts of a site, in the site's time zone.
CREATE TABLE shifts (
    id          serial PRIMARY KEY,
    site_id     integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    name        text NOT NULL,
    weekday     smallint NOT NULL CHECK (weekday BETWEEN 0 AND 6),   -- 0 = Monday
    start_local time NOT NULL,
    duration    interval NOT NULL CHECK (duration > interval '0' AND duration <= interval '24h')
);

CREATE TABLE planned_downtime (
    id         serial PRIMARY KEY,
    asset_id   integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    category   text NOT NULL,     -- break, planned_maintenance, no_orders, changeover, ...
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    note       text,
    CHECK (end_time > start_time)
);
CREATE INDEX planned_downtime_asset_time ON planned_downtime (asset_id, start_time);

-- Exactly once: a message's (agent, seq) is recorded in the transaction that stores it.
CREATE TABLE ingest_ledger (
    agent       text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, seq)
);

CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea,              -- capped; payload_size is the original size
    payload_size integer NOT NULL,
    reason       text NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);

-- Gateways: the latest status, and the online/offline history.
CREATE TABLE gateways (
    agent      text PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('online', 'offline')),
    since      timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);
CREATE TABLE gateway_status (
    agent  text NOT NULL,
    time   timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('online', 'offline')),
    PRIMARY KEY (agent, time)
);
"""

SAMPLES_PLAIN = """
CREATE TABLE samples (
    time    timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    value   double precision,
    quality smallint NOT NULL DEFAULT 0
) PARTITION BY RANGE (time);
CREATE INDEX samples_tag_time ON samples (tag_id, time DESC);

CREATE TABLE samples_text (
    time    timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    value   text,
    quality smallint NOT NULL DEFAULT 0
) PARTITION BY RANGE (time);
CREATE INDEX samples_text_tag_time ON samples_text (tag_id, time DESC);
"""

SAMPLES_TIMESCALE = """
CREATE TABLE samples (
    time    timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    value   double precision,
    quality smallint NOT NULL DEFAULT 0
);
CREATE INDEX samples_tag_time ON samples (tag_id, time DESC);
SELECT create_hypertable('samples', by_range('time', INTERVAL '1 day'));

CREATE TABLE samples_text (
    time    timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    value   text,
    quality smallint NOT NULL DEFAULT 0
);
CREATE INDEX samples_text_tag_time ON samples_text (tag_id, time DESC);
SELECT create_hypertable('samples_text', by_range('time', INTERVAL '1 day'));
"""


def _initial(conn: psycopg.Connection[Any], timescale: bool) -> None:
    conn.execute(CORE)
    conn.execute(SAMPLES_TIMESCALE if timescale else SAMPLES_PLAIN)


# ---------------------------------------------------------------------------------------
# Migration 2: time-series extras (retention, rollups; compression and policies on Timescale)

# Rollup buckets are aligned to this origin (date_bin); TimescaleDB's time_bucket gives the
# same minute and hour boundaries. Spelled in UTC so the session time zone cannot shift it.
BUCKET_ORIGIN = "2000-01-01 00:00:00+00"
GOOD = QUALITY_CODES["good"]
# On TimescaleDB, chunks older than this are compressed (segment by tag, newest first).
COMPRESS_AFTER_DAYS = 2
# How far back the continuous-aggregate policies re-materialize late data (capped below the
# raw retention so a refresh never covers chunks already dropped).
REFRESH_WINDOW_DAYS = 7


@dataclass(frozen=True)
class Retention:
    """Days kept: raw samples (and text samples), 1-minute and 1-hour rollups."""

    samples_days: int = 90
    rollup_1m_days: int = 365
    rollup_1h_days: int = 5 * 365

    def __post_init__(self) -> None:
        for name, days in self.by_relation().items():
            if not isinstance(days, int) or isinstance(days, bool) or days < 2:
                raise ConfigError(f"retention of {name} must be a whole number of days >= 2")

    def by_relation(self) -> dict[str, int]:
        """The ``storage_retention`` rows: relation -> days."""
        return {
            "samples": self.samples_days,
            "samples_text": self.samples_days,
            "samples_1m": self.rollup_1m_days,
            "samples_1h": self.rollup_1h_days,
        }

    @property
    def refresh_window_days(self) -> int:
        """Days the refresh policies look back: inside every retention, at most a week."""
        return min(
            REFRESH_WINDOW_DAYS,
            self.samples_days - 1,
            self.rollup_1m_days - 1,
            self.rollup_1h_days - 1,
        )


def _rollup_table(name: str) -> str:
    return f"""CREATE TABLE {name} (
    bucket timestamptz NOT NULL,
    tag_id integer NOT NULL,
    min    double precision,
    max    double precision,
    avg    double precision,
    count  bigint NOT NULL,
    last   double precision,
    PRIMARY KEY (tag_id, bucket)
);
CREATE INDEX {name}_bucket ON {name} USING brin (bucket);"""


TIMESERIES_COMMON = """
-- Days of data kept per relation. The maintenance task (plain PostgreSQL) and the TimescaleDB
-- retention policies follow it; `linepulse db upgrade --retention-days N` changes it.
CREATE TABLE storage_retention (
    relation  text PRIMARY KEY,
    keep_days integer NOT NULL CHECK (keep_days >= 2)
);
"""

TIMESERIES_PLAIN = f"""
-- Safety net: a sample for a day whose partition does not exist lands here instead of failing
-- its batch. The maintenance task moves such rows into their day's partition (creating it),
-- and retention deletes the ones older than the retention.
CREATE TABLE samples_default PARTITION OF samples DEFAULT;
CREATE TABLE samples_text_default PARTITION OF samples_text DEFAULT;

-- Rollups of good samples, maintained by the service (ingest/maintenance.py); the same
-- columns as the continuous aggregates on TimescaleDB.
{_rollup_table("samples_1m")}
{_rollup_table("samples_1h")}

-- Time ranges written since the rollups were last refreshed: the writer notes each batch
-- (linepulse_note_samples, in its transaction); the maintenance task consumes them.
CREATE TABLE rollup_pending (
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    CHECK (end_time >= start_time)
);
CREATE FUNCTION linepulse_note_samples(lo timestamptz, hi timestamptz) RETURNS void
    LANGUAGE sql AS $$ INSERT INTO rollup_pending (start_time, end_time) VALUES ($1, $2) $$;

-- When each periodic maintenance task last ran (shared by all ingest workers).
CREATE TABLE maintenance_state (
    task     text PRIMARY KEY,
    last_run timestamptz NOT NULL
);
"""


def _cagg(name: str, bucket: str) -> str:
    return f"""
CREATE MATERIALIZED VIEW {name}
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '{bucket}', time) AS bucket,
       tag_id,
       min(value) AS min,
       max(value) AS max,
       avg(value) AS avg,
       count(value) AS count,
       last(value, time) AS last
FROM samples
WHERE quality = {GOOD} AND value IS NOT NULL
GROUP BY 1, 2
WITH NO DATA;
"""


TIMESERIES_TIMESCALE = (
    "\n".join(
        f"ALTER TABLE {table} SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'tag_id', timescaledb.compress_orderby = 'time DESC');"
        for table in TIME_TABLES
    )
    + _cagg("samples_1m", "1 minute")
    + _cagg("samples_1h", "1 hour")
    + """
-- TimescaleDB tracks changed ranges itself (invalidation log): nothing to note.
CREATE FUNCTION linepulse_note_samples(lo timestamptz, hi timestamptz) RETURNS void
    LANGUAGE sql AS $$ $$;
"""
)

# (continuous aggregate, its bucket = end offset, how often its policy runs)
CAGGS = (("samples_1m", "1 minute", "1 minute"), ("samples_1h", "1 hour", "30 minutes"))


def _timeseries(conn: psycopg.Connection[Any], timescale: bool) -> None:
    conn.execute(TIMESERIES_COMMON)
    retention = Retention()
    if timescale:
        conn.execute(TIMESERIES_TIMESCALE)
        for table in TIME_TABLES:
            # initial_start: a policy that starts at once races a manual refresh or compress.
            conn.execute(
                "SELECT add_compression_policy(%s::regclass,"
                " compress_after => make_interval(days => %s),"
                " schedule_interval => INTERVAL '1 hour',"
                " initial_start => now() + INTERVAL '1 hour')",
                (table, COMPRESS_AFTER_DAYS),
            )
        set_timescale_retention(conn, retention)
    else:
        conn.execute(TIMESERIES_PLAIN)
        # Samples stored before this migration still need their rollups.
        conn.execute(
            "INSERT INTO rollup_pending (start_time, end_time)"
            f" SELECT min(time), max(time) FROM samples WHERE quality = {GOOD}"
            " HAVING count(*) > 0"
        )
    store_retention(conn, retention)


def _timeseries_after(conn: psycopg.Connection[Any], timescale: bool) -> list[str]:
    """On TimescaleDB, materialize the rollups of samples stored before this migration."""
    if not timescale or conn.execute("SELECT 1 FROM samples LIMIT 1").fetchone() is None:
        return []
    for name, _bucket, _every in CAGGS:
        conn.execute(f"CALL refresh_continuous_aggregate('{name}', NULL, NULL)")
    return ["refreshed samples_1m and samples_1h over the samples already stored"]


def store_retention(conn: psycopg.Connection[Any], retention: Retention) -> None:
    """Write ``storage_retention`` (insert or update every row)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO storage_retention (relation, keep_days) VALUES (%s, %s)"
            " ON CONFLICT (relation) DO UPDATE SET keep_days = EXCLUDED.keep_days",
            list(retention.by_relation().items()),
        )


def load_retention(conn: psycopg.Connection[Any]) -> Retention | None:
    """The stored retention, or None before migration 2."""
    if _scalar(conn, "SELECT to_regclass('storage_retention')") is None:
        return None
    rows = dict(conn.execute("SELECT relation, keep_days FROM storage_retention").fetchall())
    return Retention(
        samples_days=rows["samples"],
        rollup_1m_days=rows["samples_1m"],
        rollup_1h_days=rows["samples_1h"],
    )


def set_timescale_retention(conn: psycopg.Connection[Any], retention: Retention) -> None:
    """(Re)create the retention and continuous-aggregate policies for ``retention``."""
    days = retention.by_relation()
    for table in TIME_TABLES:
        _retention_policy(conn, table, days[table])
    for name, bucket, every in CAGGS:
        conn.execute(
            "SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)", (name,)
        )
        conn.execute(
            "SELECT add_continuous_aggregate_policy(%s::regclass,"
            " start_offset => make_interval(days => %s), end_offset => %s::interval,"
            " schedule_interval => %s::interval, initial_start => now() + %s::interval)",
            (name, retention.refresh_window_days, bucket, every, every),
        )
        _retention_policy(conn, name, days[name])


def _retention_policy(conn: psycopg.Connection[Any], relation: str, days: int) -> None:
    conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (relation,))
    conn.execute(
        "SELECT add_retention_policy(%s::regclass, drop_after => make_interval(days => %s),"
        " schedule_interval => INTERVAL '1 hour', initial_start => now() + INTERVAL '1 hour')",
        (relation, days),
    )


# ---------------------------------------------------------------------------------------
# Migration 3: the read-only role for dashboards

READER_ROLE = "linepulse_reader"

# A dashboard login is a member of the group role; as a superuser or a role with CREATEROLE:
#     CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE linepulse_reader;
#     -- or, for an existing user:  GRANT linepulse_reader TO grafana;
# The role is cluster-wide, its privileges are per database (this migration grants them in
# each database it runs in). Tables created later by the migrating role are covered by the
# default privileges; tables another role creates need their own GRANT SELECT.
READER = f"""
-- Roles are cluster-wide: another database on this server may have created it already
-- (even at this very moment, hence the exception handler).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        BEGIN
            CREATE ROLE {READER_ROLE} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {READER_ROLE}', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO {READER_ROLE};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER_ROLE};
-- Tables and views the migrating role creates later are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER_ROLE};
"""


def _reader(conn: psycopg.Connection[Any], timescale: bool) -> None:
    conn.execute(READER)


def _pruning(conn: psycopg.Connection[Any], timescale: bool) -> None:
    # Both tables are written in time order: a BRIN index is tiny and makes the hourly
    # "older than N days" delete cheap on a ledger of hundreds of millions of rows.
    conn.execute(
        "CREATE INDEX IF NOT EXISTS ingest_ledger_received"
        " ON ingest_ledger USING brin (received_at)"
    )


# ---------------------------------------------------------------------------------------
# Migration 5: API keys and the audit log (api/auth, api/audit.py)

API_KEYS = """
-- API keys: 'lp_<prefix>_<secret>'; only the prefix (for lookup) and a salted, slow hash of
-- the whole key are stored, so the database never holds a usable key.
CREATE TABLE api_keys (
    id           serial PRIMARY KEY,
    name         text NOT NULL,
    prefix       text NOT NULL UNIQUE,
    hash         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Every change made through the API: who (the key), what, and the row before and after.
CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    time      timestamptz NOT NULL DEFAULT now(),
    actor_key integer REFERENCES api_keys (id) ON DELETE SET NULL,
    action    text NOT NULL,
    entity    text NOT NULL,
    entity_id text,
    before    jsonb,
    after     jsonb
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, time);
CREATE INDEX audit_log_time ON audit_log USING brin (time);
"""


def _api_keys(conn: psycopg.Connection[Any], timescale: bool) -> None:
    conn.execute(API_KEYS)
    # Key hashes are nobody's business but the API's (the dashboards' reader role included).
    conn.execute(f"REVOKE ALL ON api_keys FROM {READER_ROLE}")


# ---------------------------------------------------------------------------------------
# Migration 6: OEE configuration (api/oee, api/calendar.py)

OEE_SETTINGS = """
-- Exceptions to a site's weekly shift calendar, on one local date: a holiday removes the
-- named shift (shift_name NULL: every shift starting that day); an extra shift adds one.
CREATE TABLE shift_exceptions (
    id          serial PRIMARY KEY,
    site_id     integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    date        date NOT NULL,
    shift_name  text,
    kind        text NOT NULL CHECK (kind IN ('holiday', 'extra')),
    start_local time,
    duration    interval CHECK (duration > interval '0' AND duration <= interval '24h'),
    note        text,
    CHECK (kind = 'holiday' OR (start_local IS NOT NULL AND duration IS NOT NULL))
);
CREATE INDEX shift_exceptions_site_date ON shift_exceptions (site_id, date);

-- What a machine state means for OEE: asset_id NULL is the default for every asset.
CREATE TABLE state_loss_classes (
    id         serial PRIMARY KEY,
    asset_id   integer REFERENCES assets (id) ON DELETE CASCADE,
    state      text NOT NULL,
    loss_class text NOT NULL
               CHECK (loss_class IN ('running', 'unplanned_down', 'planned_down'))
);
CREATE UNIQUE INDEX state_loss_classes_key ON state_loss_classes (coalesce(asset_id, 0), state);

-- Per-machine OEE settings: the micro-stop threshold, and whether this machine's output
-- is its line's output (a line's OEE is that machine's).
CREATE TABLE machine_settings (
    asset_id       integer PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    micro_stop_s   double precision NOT NULL DEFAULT 0 CHECK (micro_stop_s >= 0),
    is_line_output boolean NOT NULL DEFAULT false
);
CREATE INDEX shifts_site ON shifts (site_id);
"""


def _oee_settings(conn: psycopg.Connection[Any], timescale: bool) -> None:
    conn.execute(OEE_SETTINGS)


STOP_REASONS = """
-- An operator's reason for an asset's stop time over [start_time, end_time): it overrides
-- the reason the machine reported there. Kept apart from state_intervals (which ingest
-- rewrites when late events arrive), so an assignment survives any rebuild; splitting a
-- stop is assigning adjacent ranges of it different reasons.
CREATE TABLE stop_reasons (
    id         serial PRIMARY KEY,
    asset_id   integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    code       text NOT NULL REFERENCES downtime_reasons (code) ON UPDATE CASCADE,
    note       text,
    created_by integer REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time > start_time),
    EXCLUDE USING gist (asset_id WITH =, tstzrange(start_time, end_time) WITH &&)
);

-- Rejected parts by reason (a subset of production_counts.reject: where the PLC counts
-- rejects per reason; what no reason counter saw stays unattributed).
CREATE TABLE production_rejects (
    asset_id integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    time     timestamptz NOT NULL,
    reason   text NOT NULL,
    count    integer NOT NULL CHECK (count > 0),
    product  text,
    agent    text,
    seq      bigint
);
CREATE INDEX production_rejects_asset_time ON production_rejects (asset_id, time);
"""


def _stop_reasons(conn: psycopg.Connection[Any], timescale: bool) -> None:
    conn.execute(STOP_REASONS)


# ---------------------------------------------------------------------------------------
# Migration 8: hourly counts rollup for long OEE ranges (api/oee/repository.py)

# One row per machine, UTC hour (date_bin from BUCKET_ORIGIN) and product: the sums; the
# minutes of the hour (UTC) that have counts: the first, the last and all of them (bit m of
# ``minutes``); and the sums of the first minute. A reader learns from them whether an
# hour's counts all lie on one side of an edge that cuts the hour (then it uses the row),
# or all but the first minute's (it splits the row: typically the first count after a
# changeover that ended inside a minute), or must read the raw rows.
# Kept exact by statement-level triggers with transition tables: an insert adds its sums
# (rows upserted in key order, so concurrent batches lock them in the same order and never
# deadlock); an update or delete recomputes the hours it touched from production_counts;
# a truncate empties it. Room is left on each page so that the updates can be HOT.
_COLUMNS_1H = (
    "asset_id, bucket, product, total, good, reject,"
    " first_minute, last_minute, minutes, first_total, first_good, first_reject"
)


def _rollup_of(source: str) -> str:
    """Rows of production_counts_1h summed from ``source`` (rows of production_counts)."""
    return f"""
    SELECT asset_id, bucket, product, sum(t), sum(g), sum(r), min(m), max(m),
           bit_or(1::bigint << m), (array_agg(t ORDER BY m))[1],
           (array_agg(g ORDER BY m))[1], (array_agg(r ORDER BY m))[1]
    FROM (SELECT asset_id, date_bin('1 hour', time, TIMESTAMPTZ '{BUCKET_ORIGIN}') AS bucket,
                 product, extract(minute FROM time AT TIME ZONE 'UTC')::smallint AS m,
                 sum(total) AS t, sum(good) AS g, sum(reject) AS r
          FROM {source} GROUP BY 1, 2, 3, 4) per_minute
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""


def _first(column: str) -> str:
    """The first minute's sum of ``column`` after adding EXCLUDED to row r."""
    return (
        f"first_{column} = CASE"
        f" WHEN EXCLUDED.first_minute < r.first_minute THEN EXCLUDED.first_{column}"
        f" WHEN EXCLUDED.first_minute = r.first_minute"
        f" THEN r.first_{column} + EXCLUDED.first_{column}"
        f" ELSE r.first_{column} END"
    )


COUNTS_1H = f"""
CREATE TABLE production_counts_1h (
    asset_id     integer NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    bucket       timestamptz NOT NULL,
    product      text,
    total        bigint NOT NULL,
    good         bigint NOT NULL,
    reject       bigint NOT NULL,
    first_minute smallint NOT NULL,
    last_minute  smallint NOT NULL,
    minutes      bigint NOT NULL,
    first_total  bigint NOT NULL,
    first_good   bigint NOT NULL,
    first_reject bigint NOT NULL,
    CONSTRAINT production_counts_1h_key UNIQUE NULLS NOT DISTINCT (asset_id, bucket, product)
) WITH (fillfactor = 90);

CREATE FUNCTION linepulse_counts_1h_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO production_counts_1h AS r ({_COLUMNS_1H}) {_rollup_of("new_counts")}
    ON CONFLICT ON CONSTRAINT production_counts_1h_key DO UPDATE SET
        total = r.total + EXCLUDED.total,
        good = r.good + EXCLUDED.good,
        reject = r.reject + EXCLUDED.reject,
        {_first("total")},
        {_first("good")},
        {_first("reject")},
        first_minute = least(r.first_minute, EXCLUDED.first_minute),
        last_minute = greatest(r.last_minute, EXCLUDED.last_minute),
        minutes = r.minutes | EXCLUDED.minutes;
    RETURN NULL;
END $$;

-- Recompute the given (asset, hour) keys from the raw rows.
CREATE FUNCTION linepulse_counts_1h_redo(keys jsonb) RETURNS void LANGUAGE sql AS $$
    DELETE FROM production_counts_1h r
    USING jsonb_array_elements(keys) e
    WHERE r.asset_id = (e ->> 0)::integer AND r.bucket = (e ->> 1)::timestamptz;
    INSERT INTO production_counts_1h ({_COLUMNS_1H}) {
    _rollup_of(
        "(SELECT c.* FROM (SELECT DISTINCT (e ->> 0)::integer AS asset_id,"
        " (e ->> 1)::timestamptz AS bucket FROM jsonb_array_elements(keys) e) k"
        " JOIN production_counts c ON c.asset_id = k.asset_id"
        " AND c.time >= k.bucket AND c.time < k.bucket + INTERVAL '1 hour') c"
    )
};
$$;

CREATE FUNCTION linepulse_counts_1h_redo_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM linepulse_counts_1h_redo(coalesce((
        SELECT jsonb_agg(DISTINCT jsonb_build_array(
            asset_id, date_bin('1 hour', time, TIMESTAMPTZ '{BUCKET_ORIGIN}')))
        FROM old_counts), '[]'));
    RETURN NULL;
END $$;

CREATE FUNCTION linepulse_counts_1h_redo_both() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM linepulse_counts_1h_redo(coalesce((
        SELECT jsonb_agg(DISTINCT jsonb_build_array(
            asset_id, date_bin('1 hour', time, TIMESTAMPTZ '{BUCKET_ORIGIN}')))
        FROM (SELECT asset_id, time FROM old_counts
              UNION ALL SELECT asset_id, time FROM new_counts) changed), '[]'));
    RETURN NULL;
END $$;

CREATE FUNCTION linepulse_counts_1h_empty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE production_counts_1h;
    RETURN NULL;
END $$;

-- Created before the backfill: CREATE TRIGGER locks out concurrent inserts until this
-- migration commits, so every row is either in the backfill or seen by the trigger.
CREATE TRIGGER production_counts_1h_insert AFTER INSERT ON production_counts
    REFERENCING NEW TABLE AS new_counts
    FOR EACH STATEMENT EXECUTE FUNCTION linepulse_counts_1h_add();
CREATE TRIGGER production_counts_1h_delete AFTER DELETE ON production_counts
    REFERENCING OLD TABLE AS old_counts
    FOR EACH STATEMENT EXECUTE FUNCTION linepulse_counts_1h_redo_old();
CREATE TRIGGER production_counts_1h_update AFTER UPDATE ON production_counts
    REFERENCING OLD TABLE AS old_counts NEW TABLE AS new_counts
    FOR EACH STATEMENT EXECUTE FUNCTION linepulse_counts_1h_redo_both();
CREATE TRIGGER production_counts_1h_truncate AFTER TRUNCATE ON production_counts
    FOR EACH STATEMENT EXECUTE FUNCTION linepulse_counts_1h_empty();

-- In key order: the rows of one machine lie together on disk.
INSERT INTO production_counts_1h ({_COLUMNS_1H}) {_rollup_of("production_counts")};
"""


def _counts_1h(conn: psycopg.Connection[Any], timescale: bool) -> None:
    conn.execute(COUNTS_1H)


MIGRATIONS: list[Migration] = [
    Migration(
        1, "core tables: assets, tags, samples, states, counts, ledger, dead letters", _initial
    ),
    Migration(
        2,
        "time series: retention, 1-minute and 1-hour rollups"
        " (TimescaleDB: compression, policies, continuous aggregates)",
        _timeseries,
        _timeseries_after,
    ),
    Migration(3, f"read-only role {READER_ROLE} for dashboards", _reader),
    Migration(4, "BRIN indexes to prune the ingest ledger and dead letters by age", _pruning),
    Migration(5, "api keys (hashed, with roles) and the audit log", _api_keys),
    Migration(
        6,
        "oee settings: shift exceptions, state loss classes, machine settings",
        _oee_settings,
    ),
    Migration(7, "operators' stop reasons and rejects by reason", _stop_reasons),
    Migration(8, "hourly production counts rollup, kept by triggers (backfilled)", _counts_1h),
]
LATEST_VERSION = MIGRATIONS[-1].version


# ---------------------------------------------------------------------------------------
# The migrations ledger (created and written by ingest/migrate.py)

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    timescale   boolean NOT NULL
)
"""


def applied_versions(conn: psycopg.Connection[Any]) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty when the table does not exist)."""
    if _scalar(conn, "SELECT to_regclass('schema_migrations')") is None:
        return []
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def recorded_timescale(conn: psycopg.Connection[Any]) -> bool | None:
    """Was this database set up with TimescaleDB? None when it was never migrated."""
    if _scalar(conn, "SELECT to_regclass('schema_migrations')") is None:
        return None
    row = conn.execute(
        "SELECT timescale FROM schema_migrations ORDER BY version LIMIT 1"
    ).fetchone()
    return None if row is None else bool(row[0])


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]
