"""All SQL of the OEE endpoint: the asset, its calendar, states, counts and settings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.oee.calc import LossClass
from api.oee.counts import CountRows, HourRows
from api.oee.segments import RUNNING, STOPPED, UNMAPPED, Spans, StateRows, spans_of

Row = dict[str, Any]
# date_bin origin spelled in UTC so the session time zone cannot shift it.
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


def _rows(session: Session, sql: str, params: dict[str, Any]) -> list[Row]:
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def asset_with_site(session: Session, asset_id: int) -> Row | None:
    """The asset with its site's id and time zone (the root of its path)."""
    rows = _rows(
        session,
        "SELECT a.id, a.name, a.level, a.path, s.id AS site_id, s.timezone"
        " FROM assets a LEFT JOIN assets s"
        " ON s.path = split_part(a.path, '/', 1) AND s.level = 'site'"
        " WHERE a.id = :id",
        {"id": asset_id},
    )
    return rows[0] if rows else None


def line_outputs(session: Session, line_id: int) -> list[Row]:
    """Machines of a line flagged ``is_line_output``."""
    return _rows(
        session,
        "SELECT a.id, a.path FROM assets a JOIN machine_settings m ON m.asset_id = a.id"
        " WHERE a.parent_id = :id AND a.level = 'machine' AND m.is_line_output ORDER BY a.path",
        {"id": line_id},
    )


def lines_under(session: Session, path: str) -> list[Row]:
    """The lines below an asset path (a site or an area)."""
    return _rows(
        session,
        "SELECT id, path FROM assets WHERE level = 'line'"
        " AND left(path, length(:path) + 1) = :path || '/' ORDER BY path",
        {"path": path},
    )


def shifts(session: Session, site_id: int) -> list[Row]:
    """The weekly shifts of a site."""
    return _rows(
        session,
        "SELECT name, weekday, start_local, duration FROM shifts WHERE site_id = :id"
        " ORDER BY weekday, start_local",
        {"id": site_id},
    )


def shift_exceptions(session: Session, site_id: int, *, first: Any, last: Any) -> list[Row]:
    """Holidays and extra shifts of a site between two local dates (inclusive)."""
    return _rows(
        session,
        "SELECT date, kind, shift_name, start_local, duration FROM shift_exceptions"
        " WHERE site_id = :id AND date BETWEEN :first AND :last ORDER BY date",
        {"id": site_id, "first": first, "last": last},
    )


def ideal_cycles(session: Session, asset_id: int, products: list[str]) -> dict[str, float]:
    """Ideal cycle time per product code: the machine's own, else the product's."""
    if not products:
        return {}
    rows = _rows(
        session,
        "SELECT p.code, coalesce(c.ideal_cycle_s, p.ideal_cycle_s) AS ideal_cycle_s"
        " FROM products p LEFT JOIN product_cycle_times c"
        " ON c.product_id = p.id AND c.asset_id = :id WHERE p.code = ANY(:codes)",
        {"id": asset_id, "codes": products},
    )
    return {r["code"]: float(r["ideal_cycle_s"]) for r in rows if r["ideal_cycle_s"] is not None}


def loss_classes(session: Session, asset_id: int) -> dict[str, str]:
    """State -> loss class: the defaults (asset NULL), overridden by the asset's own."""
    rows = _rows(
        session,
        "SELECT state, loss_class FROM state_loss_classes"
        " WHERE asset_id IS NULL OR asset_id = :id ORDER BY asset_id NULLS FIRST",
        {"id": asset_id},
    )
    return {r["state"]: r["loss_class"] for r in rows}


def micro_stop_s(session: Session, asset_id: int) -> float:
    """The machine's micro-stop threshold (0 when it has no settings)."""
    rows = _rows(
        session, "SELECT micro_stop_s FROM machine_settings WHERE asset_id = :id", {"id": asset_id}
    )
    return float(rows[0]["micro_stop_s"]) if rows else 0.0


# ---------------------------------------------------------------------------------------
# The rows behind api/oee/segments.py and api/oee/counts.py.
#
# Times are integer microseconds since the epoch here, as in api.oee.timeline. Bulk rows
# come as one bytea of fixed-size big-endian records per group, which numpy reads without
# a Python object per row; timestamptz_send gives a time as PostgreSQL holds it (int64 µs
# since 2000-01-01: exact, and cheap to make where extract(epoch ...) goes through
# numeric). Operators' reasons (_EXCLUDED) still cut stops in SQL, with multiranges; there
# extract's µs are exact too. These statements run on psycopg directly, never prepared,
# so that neither SQLAlchemy's compiled cache nor psycopg's prepared-statement
# bookkeeping keeps them.

_MICROS = "(extract(epoch FROM {0}) * 1000000)::bigint"
_MINUTE = "date_bin('1 minute', {0}, " + _ORIGIN + ")"


def tune(session: Session) -> None:
    """Settings for the OEE queries, for the rest of this transaction: no JIT (row
    estimates of the operator-reason statement run far too high, and compiling would cost
    hundreds of milliseconds for queries that take a few), and room to hash groups in
    memory."""
    session.execute(
        text("SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)")
    )


def _fetch(session: Session, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run by psycopg on the session's connection (in its transaction),
    never prepared."""
    conn = session.connection().connection.driver_connection
    assert conn is not None  # a checked-out connection has its driver's
    with conn.cursor() as cursor:
        cursor.execute(sql, params, prepare=False)
        return list(cursor.fetchall())


# The state intervals overlapping [start, end) in µs; the range test matches the table's
# exclusion constraint, so its GiST index serves it. An open interval ends at open_end.
# The constraint also means no two intervals of an asset overlap: api.oee.calc's clipping
# of an interval at the next one's start (and its overlapping_states note) never applies.
_STATES = f"""
    SELECT {_MICROS.format("i.start_time")} AS s,
           coalesce({_MICROS.format("i.end_time")}, %(open_end)s) AS e, i.state, i.code
    FROM state_intervals i
    WHERE i.asset_id = %(id)s::integer
      AND tstzrange(i.start_time, coalesce(i.end_time, 'infinity'::timestamptz))
          && tstzrange(%(start)s, %(end)s)
"""


# Operators' reasons (stop_reasons) of the asset overlapping the range, in µs, with whether
# their reason is planned.
_ASSIGNED = f"""
    SELECT {_MICROS.format("sr.start_time")} AS s, {_MICROS.format("sr.end_time")} AS e,
           coalesce(r.planned, false) AS planned
    FROM stop_reasons sr LEFT JOIN downtime_reasons r ON r.code = sr.code
    WHERE sr.asset_id = %(id)s::integer
      AND tstzrange(sr.start_time, sr.end_time) && tstzrange(%(start)s, %(end)s)
"""
# Out of planned production: planned states whole; the other stops where their effective
# reason is planned (an operator's reason where one covers the stop, else the machine's);
# planned downtime of the asset or any asset above it. Operators' reasons apply to stops
# only (never to running time), as in api.downtime.overlay.
_EXCLUDED = f"""
WITH iv AS MATERIALIZED (
    SELECT s, e, state, code IN (SELECT code FROM downtime_reasons WHERE planned) AS planned
    FROM ({_STATES}) i WHERE e > s
), sr AS MATERIALIZED ({_ASSIGNED}),
stops AS MATERIALIZED (
    SELECT * FROM iv
    WHERE state <> ALL(%(running)s::text[]) AND state <> ALL(%(planned_states)s::text[])
)
SELECT s, e FROM iv WHERE state = ANY(%(planned_states)s::text[])
UNION ALL
SELECT lower(r), upper(r) FROM (
    SELECT unnest(int8multirange(int8range(st.s, st.e)) - coalesce(
        (SELECT range_agg(int8range(sr.s, sr.e)) FROM sr WHERE sr.s < st.e AND sr.e > st.s),
        '{{}}'::int8multirange)) AS r
    FROM stops st WHERE st.planned
) machine_planned
UNION ALL
SELECT greatest(st.s, sr.s), least(st.e, sr.e)
FROM stops st JOIN sr ON sr.planned AND sr.s < st.e AND sr.e > st.s
UNION ALL
SELECT {_MICROS.format("p.start_time")}, {_MICROS.format("p.end_time")}
FROM planned_downtime p JOIN assets a ON a.id = p.asset_id
WHERE (a.path = %(path)s OR left(%(path)s, length(a.path) + 1) = a.path || '/')
  AND p.start_time < %(end)s AND p.end_time > %(start)s
"""


# Planned downtime of the asset or any asset above it, as one bytea of start/end records;
# and whether an operator's reason overlaps the range (then _EXCLUDED decides planned stops).
_DOWNTIME = """
SELECT EXISTS (SELECT FROM stop_reasons sr WHERE sr.asset_id = %(id)s::integer
               AND tstzrange(sr.start_time, sr.end_time) && tstzrange(%(start)s, %(end)s)),
       (SELECT string_agg(timestamptz_send(p.start_time) || timestamptz_send(p.end_time), '')
        FROM planned_downtime p JOIN assets a ON a.id = p.asset_id
        WHERE (a.path = %(path)s OR left(%(path)s, length(a.path) + 1) = a.path || '/')
          AND p.start_time < %(end)s AND p.end_time > %(start)s)
"""
_SPAN_RECORD = np.dtype([("start", ">i8"), ("end", ">i8")])


def excluded_spans(
    session: Session,
    *,
    asset_id: int,
    path: str,
    start: datetime,
    end: datetime,
    open_end: int,
    states: MachineStates,
) -> Spans:
    """Time out of planned production (µs spans, unsorted): planned downtime of the asset or
    any asset above it, and its planned stops (a planned_down state, or a stop whose
    effective reason is planned: an operator's where one covers it, else the machine's)."""
    params = {"id": asset_id, "path": path, "start": start, "end": end}
    assigned, downtime = _fetch(session, _DOWNTIME, params)[0]
    if not assigned:
        spans = np.frombuffer(downtime or b"", dtype=_SPAN_RECORD)
        return Spans(
            np.concatenate((states.planned_stops.start, _unix_us(spans["start"]))),
            np.concatenate((states.planned_stops.end, _unix_us(spans["end"]))),
        )
    params.update(
        open_end=open_end,
        planned_states=sorted(states.planned_states),
        running=sorted(states.running),
    )
    return spans_of((int(a), int(b)) for a, b in _fetch(session, _EXCLUDED, params))


# A machine's state intervals overlapping the range, one bytea of start/end records per
# state and planned reason or not (a hash aggregate: no sort): timestamptz_send gives int64
# µs since 2000-01-01, exact and cheap to make where extract(epoch ...) goes through
# numeric, and numpy reads it without a Python object per row (a year of one machine is
# some 20,000 intervals).
_STATE_ROWS = """
SELECT i.state, coalesce(i.code IN (SELECT code FROM downtime_reasons WHERE planned), false),
       string_agg(timestamptz_send(i.start_time)
                  || coalesce(timestamptz_send(i.end_time), int8send(%(open_end)s::bigint)), '')
FROM state_intervals i
WHERE i.asset_id = %(id)s::integer
  AND tstzrange(i.start_time, coalesce(i.end_time, 'infinity'::timestamptz))
      && tstzrange(%(start)s, %(end)s)
GROUP BY 1, 2
"""
# timestamptz_send counts from 2000-01-01; the rest of the OEE code from 1970-01-01.
_PG_EPOCH_US = 946_684_800_000_000
_MAX_US = np.iinfo(np.int64).max


class MachineStates(NamedTuple):
    """A machine's states in the window, and its planned stops as the machine gives them."""

    rows: StateRows
    planned_stops: Spans  # a planned_down state, or a stop of a planned reason
    running: frozenset[str]
    planned_states: frozenset[str]


def state_rows(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    open_end: int,
    classes: Mapping[str, LossClass],
) -> MachineStates:
    """The asset's state intervals overlapping [start, end), in µs (an open one ends at
    ``open_end``), with their kind by ``classes``: RUNNING, STOPPED (another state it
    knows) or UNMAPPED."""
    running = frozenset(s for s, c in classes.items() if c is LossClass.RUNNING)
    planned_states = frozenset(s for s, c in classes.items() if c is LossClass.PLANNED_DOWN)
    params = {"id": asset_id, "start": start, "end": end, "open_end": open_end - _PG_EPOCH_US}
    starts, ends, kinds, planned = [], [], [], []
    for state, planned_code, data in _fetch(session, _STATE_ROWS, params):
        spans = np.frombuffer(data, dtype=_SPAN_RECORD)
        s, e = _unix_us(spans["start"]), _unix_us(spans["end"])
        starts.append(s)
        ends.append(e)
        kind = RUNNING if state in running else STOPPED if state in classes else UNMAPPED
        kinds.append(np.full(len(s), kind, dtype=np.uint8))
        planned.append(state in planned_states or (planned_code and state not in running))
    rows = StateRows(
        *(_cat(x, t) for x, t in ((starts, np.int64), (ends, np.int64), (kinds, np.uint8)))
    )
    stop = np.repeat(np.array(planned, dtype=np.bool_), [len(k) for k in kinds])
    stop &= rows.end > rows.start
    return MachineStates(rows, Spans(rows.start[stop], rows.end[stop]), running, planned_states)


def _cat(parts: list[npt.NDArray[Any]], dtype: type[Any]) -> npt.NDArray[Any]:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _unix_us(pg_us: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """µs since 2000 to µs since 1970, saturating (timestamptz 'infinity' is int64's max)."""
    us = pg_us.astype(np.int64)
    return np.where(us > _MAX_US - _PG_EPOCH_US, _MAX_US, us + _PG_EPOCH_US)


# Counts for api.oee.counts, one bytea of fixed-size records per product (a hash
# aggregate: no sort), read by numpy. Sums of the raw rows are cast back to bigint.
_HOURS = """
SELECT r.product, string_agg(
    timestamptz_send(r.bucket) || int8send(r.total) || int8send(r.good) || int8send(r.reject)
    || int8send(r.minutes) || int8send(r.first_total) || int8send(r.first_good)
    || int8send(r.first_reject) || int2send(r.first_minute) || int2send(r.last_minute), '')
FROM production_counts_1h r
WHERE r.asset_id = %(id)s::integer AND r.bucket >= %(h0)s AND r.bucket < %(h1)s
GROUP BY r.product
"""
_HOUR_RECORD = np.dtype(
    [("time", ">i8"), ("total", ">i8"), ("good", ">i8"), ("reject", ">i8"),
     ("minutes", ">i8"), ("first_total", ">i8"), ("first_good", ">i8"),
     ("first_reject", ">i8"), ("first_minute", ">i2"), ("last_minute", ">i2")]
)  # fmt: skip
_MINUTES = f"""
SELECT product, string_agg(
    timestamptz_send(minute) || int8send(total) || int8send(good) || int8send(reject), '')
FROM (
    SELECT {_MINUTE.format("c.time")} AS minute, c.product, sum(c.total)::bigint AS total,
           sum(c.good)::bigint AS good, sum(c.reject)::bigint AS reject
    FROM (
        SELECT c.time, c.product, c.total, c.good, c.reject FROM production_counts c
        WHERE c.asset_id = %(id)s::integer
          AND ((c.time >= %(start)s AND c.time < %(h0)s)
               OR (c.time >= %(h1)s AND c.time < %(end)s))
        UNION ALL
        SELECT c.time, c.product, c.total, c.good, c.reject
        FROM unnest(%(hours)s::timestamptz[], %(products)s::text[]) x(hour, product)
        JOIN production_counts c ON c.asset_id = %(id)s::integer
         AND c.time >= x.hour AND c.time < x.hour + INTERVAL '1 hour'
         AND c.product IS NOT DISTINCT FROM x.product
    ) c GROUP BY 1, 2
) m GROUP BY product
"""
_MINUTE_RECORD = np.dtype([("time", ">i8"), ("total", ">i8"), ("good", ">i8"), ("reject", ">i8")])


def _records(
    rows: list[tuple[Any, ...]], dtype: np.dtype[Any]
) -> tuple[list[str | None], npt.NDArray[np.int64], npt.NDArray[Any]]:
    """The products, the product index of each record, and the records of all of them."""
    products = [r[0] for r in rows]
    parts = [np.frombuffer(r[1] or b"", dtype=dtype) for r in rows]
    index = np.repeat(np.arange(len(parts), dtype=np.int64), [len(x) for x in parts])
    records = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return products, index, records


def _int(column: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    return column.astype(np.int64)


def hour_rows(
    session: Session, *, asset_id: int, whole_hours: tuple[datetime, datetime]
) -> HourRows:
    """The asset's rows of production_counts_1h in ``whole_hours`` (whole UTC hours)."""
    h0, h1 = whole_hours
    rows = _fetch(session, _HOURS, {"id": asset_id, "h0": h0, "h1": h1})
    products, index, r = _records(rows, _HOUR_RECORD)
    counts = CountRows(
        products, index, _unix_us(r["time"]), *(_int(r[k]) for k in ("total", "good", "reject"))
    )
    extra = ("first_minute", "last_minute", "minutes", "first_total", "first_good", "first_reject")
    return HourRows(counts, *(_int(r[k]) for k in extra))


def minute_rows(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    whole_hours: tuple[datetime, datetime],
    hours: list[tuple[datetime, str | None]],
) -> CountRows:
    """The asset's counts summed per minute and product: in [start, end) outside
    ``whole_hours``, and in each of ``hours`` (an hour's start and its product)."""
    params = {
        "id": asset_id,
        "start": start,
        "end": end,
        "h0": whole_hours[0],
        "h1": whole_hours[1],
        "hours": [h for h, _ in hours],
        "products": [x for _, x in hours],
    }
    products, index, r = _records(_fetch(session, _MINUTES, params), _MINUTE_RECORD)
    return CountRows(products, index, _unix_us(r["time"]), _int(r["total"]), _int(r["good"]),
                     _int(r["reject"]))  # fmt: skip
