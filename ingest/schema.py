"""The linepulse database schema, as ordered migrations.

Each migration is a version, a description and a function that runs its SQL on a
connection inside one transaction; ``timescale`` says whether the TimescaleDB extension
is in use. The same tables exist on both: on TimescaleDB the time tables are hypertables
with compression, retention and continuous aggregates; on plain PostgreSQL they are
range-partitioned by day and the service creates partitions ahead, drops old ones and
maintains the rollup tables (``ingest/maintenance.py``).

Reads must work the same on both: query the tables and the ``samples_1m``/``samples_1h``
rollups with plain SQL (``date_bin``, not ``time_bucket``).

Value encoding in ``samples``: numbers as double precision (integers above 2**53 lose
precision), booleans as 0/1, quality 0 good, 1 uncertain, 2 bad (value NULL when bad).
Text values go to ``samples_text``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

QUALITY_CODES = {"good": 0, "uncertain": 1, "bad": 2}

# Tables with a time column that are hypertables on TimescaleDB / partitioned otherwise.
TIME_TABLES = ("samples", "samples_text")


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[psycopg.Connection, bool], None]


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


def _initial(conn: psycopg.Connection, timescale: bool) -> None:
    conn.execute(CORE)
    conn.execute(SAMPLES_TIMESCALE if timescale else SAMPLES_PLAIN)


MIGRATIONS: list[Migration] = [
    Migration(
        1, "core tables: assets, tags, samples, states, counts, ledger, dead letters", _initial
    ),
]
