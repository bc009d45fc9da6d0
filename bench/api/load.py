"""Create, fill or reuse the benchmark database: the plant's configuration, then binary COPY.

The database is the bench's own (never one of the tests'): created at the latest schema by
``ingest.migrate.upgrade``, filled with :mod:`bench.api.plant`'s rows, and described by a
comment on the database (the spec and the load figures) so that a later run with
``--reuse`` and the same spec skips the load. Machines are generated in worker processes
while the main process copies the previous ones: one COPY of states and one of counts per
machine, each in its own transaction (so production_counts' statement triggers, if any,
see one machine at a time, as they would see ingest batches).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.api import plant
from ingest import migrate

GENERATOR_VERSION = 1  # bump when the generated rows change: a reused database is rebuilt
FORBIDDEN_PREFIXES = ("lp_api", "lp_test", "postgres", "template")
COPY_STATES = (
    "COPY state_intervals (asset_id, start_time, end_time, state, reason, code)"
    " FROM STDIN (FORMAT BINARY)"
)
COPY_COUNTS = (
    "COPY production_counts (asset_id, time, total, good, reject, product)"
    " FROM STDIN (FORMAT BINARY)"
)
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_TRAILER = b"\xff\xff"
_STATE_HEAD = struct.Struct(">hiiiqiq").pack  # 6 fields; asset_id, start, end
_COUNT_ROW = struct.Struct(">hiiiqiiiiii").pack  # 6 fields up to reject; product follows
_NULL = struct.pack(">i", -1)
_US = 1_000_000


@dataclass
class LoadReport:
    """What the database holds and how long it took to fill."""

    spec: dict[str, int]
    generator: int
    reused: bool = False
    config_s: float = 0.0
    copy_s: float = 0.0
    vacuum_s: float = 0.0
    upgrade_s: float = 0.0
    rows: dict[str, int] | None = None
    size_mb: float = 0.0


def database_name(url: str) -> str:
    """The bench database's name, refusing the tests' and the server's own databases."""
    name = str(conninfo_to_dict(url).get("dbname") or "")
    if not name or name.startswith(FORBIDDEN_PREFIXES):
        raise SystemExit(
            f"--database-url must name a database of the bench's own (not {name!r}:"
            f" not postgres, a template, or the tests' lp_api_*/lp_test_*)"
        )
    return name


def _admin(url: str) -> str:
    return make_conninfo(url, dbname="postgres")


def _exists(url: str) -> bool:
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database_name(url),)
        ).fetchone()
    return row is not None


def stored_report(url: str) -> LoadReport | None:
    """The load report a previous run left on the database, or None."""
    if not _exists(url):
        return None
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = current_database()"
        ).fetchone()
    try:
        return LoadReport(**json.loads(row[0])) if row and row[0] else None
    except (TypeError, ValueError):
        return None


def drop(url: str) -> None:
    """Drop the bench database (if it exists)."""
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')


def prepare(url: str, spec: plant.Spec, *, reuse: bool, jobs: int, log: Any = print) -> LoadReport:
    """A database holding ``spec``'s plant at the latest schema: reused, upgraded or built."""
    found = stored_report(url) if reuse else None
    if found is not None and found.spec == asdict(spec) and found.generator == GENERATOR_VERSION:
        log(f"reusing {database_name(url)} ({found.rows})")
        t0 = time.perf_counter()
        lines = migrate.upgrade(url)  # a newer schema: its migrations run on the loaded data
        found.upgrade_s = time.perf_counter() - t0
        for line in lines:
            log(f"  {line}")
        if any(line.startswith("applied") for line in lines):
            t0 = time.perf_counter()
            _vacuum(url)  # what autovacuum would do before long: statistics, visibility
            log(f"  VACUUM ANALYZE after the upgrade: {time.perf_counter() - t0:.1f} s")
            _store(url, found)
        found.reused = True
        found.rows, found.size_mb = _sizes(url)
        return found
    drop(url)
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database_name(url)}"')
    migrate.upgrade(url)
    report = LoadReport(spec=asdict(spec), generator=GENERATOR_VERSION)
    t0 = time.perf_counter()
    jobs_list = configure(url, spec)
    report.config_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _without_keys(url, log):
        copy_machines(url, jobs_list, workers=jobs, log=log)
    report.copy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _vacuum(url)
    report.vacuum_s = time.perf_counter() - t0
    report.rows, report.size_mb = _sizes(url)
    _store(url, report)
    return report


def _vacuum(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _store(url: str, report: LoadReport) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        body = json.dumps(asdict(report)).replace("'", "''")
        conn.execute(f"COMMENT ON DATABASE \"{database_name(url)}\" IS '{body}'")


SIZE_TABLES = (
    "assets",
    "state_intervals",
    "production_counts",
    "planned_downtime",
    "shift_exceptions",
    "product_cycle_times",
)


def _sizes(url: str) -> tuple[dict[str, int], float]:
    with psycopg.connect(url) as conn:
        tables = [*SIZE_TABLES]
        if conn.execute("SELECT to_regclass('production_counts_1h')").fetchone() != (None,):
            tables.append("production_counts_1h")
        rows = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}  # type: ignore[index]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return rows, round(int(size[0]) / 2**20, 1) if size else 0.0


# ---------------------------------------------------------------------------------------
# The plant's configuration: assets, calendar, reasons, products, planned downtime


def configure(url: str, spec: plant.Spec) -> list[plant.MachineJob]:
    """Insert everything but states and counts; returns one job per machine."""
    shifts = plant.shift_spans(spec)
    windows = plant.scheduled(spec)
    catalogue = plant.products(spec)
    with psycopg.connect(url) as conn:
        site = _asset(conn, None, "bench-plant", "site", "", timezone=plant.TZ_NAME)
        _calendar(conn, site, spec)
        conn.cursor().executemany(
            "INSERT INTO downtime_reasons (code, reason, category, planned)"
            " VALUES (%s, %s, %s, %s)",
            plant.REASONS,
        )
        product_ids = {
            p.code: _scalar(
                conn,
                "INSERT INTO products (code, name, ideal_cycle_s) VALUES (%s, %s, %s) RETURNING id",
                (p.code, f"product {p.code}", p.cycle_s),
            )
            for p in catalogue
        }
        defaults = {p.code: p.cycle_s for p in catalogue}
        jobs: list[plant.MachineJob] = []
        areas: dict[int, dict[str, Any]] = {}
        for li in range(spec.lines):
            area = _area(conn, site, li, areas)
            line = _asset(conn, area["id"], f"line-{li + 1:02d}", "line", area["path"])
            plan = plant.line_plan(spec, li, shifts, windows)
            _planned_downtime(conn, line["id"], plan)
            first = li * plant.PER_LINE
            count = min(plant.PER_LINE, spec.machines - first)
            for k in range(count):
                machine = _asset(conn, line["id"], f"m{k + 1}", "machine", line["path"])
                cycles = _cycles(spec, first + k, plan, defaults)
                conn.cursor().executemany(
                    "INSERT INTO product_cycle_times (product_id, asset_id, ideal_cycle_s)"
                    " VALUES (%s, %s, %s)",
                    [(product_ids[c], machine["id"], s) for c, s in cycles.items()],
                )
                conn.execute(
                    "INSERT INTO machine_settings (asset_id, micro_stop_s, is_line_output)"
                    " VALUES (%s, %s, %s)",
                    (machine["id"], plant.MICRO_STOP_S, k == count - 1),
                )
                jobs.append(plant.MachineJob(machine["id"], spec, first + k, plan, windows, cycles))
    return jobs


def _area(
    conn: psycopg.Connection[Any],
    site: dict[str, Any],
    line_index: int,
    areas: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """The area of a line (made with its first line): LINES_PER_AREA lines each."""
    number = line_index // plant.LINES_PER_AREA
    if number not in areas:
        areas[number] = _asset(conn, site["id"], f"area-{number + 1}", "area", site["path"])
    return areas[number]


def _cycles(
    spec: plant.Spec, number: int, plan: plant.LinePlan, defaults: dict[str, float]
) -> dict[str, float]:
    """The machine's own ideal cycle time of each product its line makes."""
    import random

    rng = random.Random(f"{spec.seed}:cycles:{number}")
    return {code: round(defaults[code] * rng.uniform(0.85, 1.15), 3) for code in plan.products}


def _scalar(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _asset(
    conn: psycopg.Connection[Any],
    parent: int | None,
    name: str,
    level: str,
    parent_path: str,
    *,
    timezone: str | None = None,
) -> dict[str, Any]:
    path = f"{parent_path}/{name}" if parent_path else name
    asset_id = _scalar(
        conn,
        "INSERT INTO assets (parent_id, level, name, path, timezone)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (parent, level, name, path, timezone),
    )
    return {"id": asset_id, "path": path}


def _calendar(conn: psycopg.Connection[Any], site: dict[str, Any], spec: plant.Spec) -> None:
    conn.cursor().executemany(
        "INSERT INTO shifts (site_id, name, weekday, start_local, duration)"
        " VALUES (%s, %s, %s, %s, %s)",
        [(site["id"], s.name, s.weekday, s.start_local, s.duration) for s in plant.SHIFTS],
    )
    conn.cursor().executemany(
        "INSERT INTO shift_exceptions (site_id, date, kind, note)"
        " VALUES (%s, %s, 'holiday', 'public holiday')",
        [(site["id"], h.date) for h in plant.holidays(spec)],
    )


def _planned_downtime(conn: psycopg.Connection[Any], line_id: int, plan: plant.LinePlan) -> None:
    from datetime import UTC, datetime

    def at(t: int) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    rows = [(line_id, "break", at(a), at(b)) for a, b in plan.breaks]
    rows += [(line_id, "planned_maintenance", at(a), at(b)) for a, b in plan.maintenance]
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY planned_downtime (asset_id, category, start_time, end_time) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


# ---------------------------------------------------------------------------------------
# States and counts: generated in worker processes, copied here


@dataclass(frozen=True)
class MachineRows:
    """One machine's rows as binary COPY payloads."""

    asset_id: int
    states: bytes
    counts: bytes
    n_states: int
    n_counts: int


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _pg_us(t: int) -> int:
    return (t - plant._PG_EPOCH) * _US


def generate(job: plant.MachineJob) -> MachineRows:
    """Both payloads of one machine (runs in a worker process)."""
    states = plant.timeline(job)
    parts = [_HEADER]
    for a, b, state, reason, code in states:
        parts.append(_STATE_HEAD(6, 4, job.asset_id, 8, _pg_us(a), 8, _pg_us(b)))
        parts += (_text(state), _text(reason), _text(code))
    parts.append(_TRAILER)
    products = {code: _text(code) for code in job.cycles}
    rows = [_HEADER]
    for at, total, good, reject, product in plant.counts(job, states):
        rows.append(_COUNT_ROW(6, 4, job.asset_id, 8, at, 4, total, 4, good, 4, reject))
        rows.append(products[product])
    rows.append(_TRAILER)
    return MachineRows(
        job.asset_id, b"".join(parts), b"".join(rows), len(states), len(rows) // 2 - 1
    )


def _generated(jobs: list[plant.MachineJob], workers: int) -> Iterator[MachineRows]:
    """Machines in order, at most 2 × workers generated ahead of the copying."""
    if workers <= 1:
        yield from map(generate, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: list[Future[MachineRows]] = []
        for job in jobs:
            pending.append(pool.submit(generate, job))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


BULK_TABLES = ("state_intervals", "production_counts")


def _constraints(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str]]:
    """(table, name, definition) of the keys and indexes of the bulk-loaded tables."""
    rows = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('p', 'u', 'x', 'f')"
        " ORDER BY contype DESC",
        (list(BULK_TABLES),),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indrelid::regclass::text, indexrelid::regclass::text,"
        " pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = ANY(%s::regclass[])"
        " AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conindid <> 0)",
        (list(BULK_TABLES),),
    ).fetchall()
    return [(t, n, d) for t, n, d in rows] + [(t, n, "INDEX " + d) for t, n, d in indexes]


@contextmanager
def _without_keys(url: str, log: Any) -> Iterator[None]:
    """Drop the keys and indexes of the bulk tables for the load, then rebuild them as they
    were (the definitions are read from the catalogue: the schema stays exactly as migrated)."""
    with psycopg.connect(url, autocommit=True) as conn:
        saved = _constraints(conn)
        for table, name, definition in saved:
            if definition.startswith("INDEX "):
                conn.execute(f"DROP INDEX {name}")
            else:
                conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    yield
    t0 = time.perf_counter()
    # One thread per table: the GiST build of the states' exclusion constraint is the long
    # pole, the counts' btree runs beside it on the other core.
    with ThreadPoolExecutor(len(BULK_TABLES)) as pool:
        futures = [
            pool.submit(_rebuild, url, table, [(n, d) for t, n, d in reversed(saved) if t == table])
            for table in BULK_TABLES
        ]
        for future in futures:
            future.result()
    log(f"  keys and indexes rebuilt in {time.perf_counter() - t0:.1f} s")


def _rebuild(url: str, table: str, saved: list[tuple[str, str]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        for name, definition in saved:
            if definition.startswith("INDEX "):
                conn.execute(definition.removeprefix("INDEX "))
            else:
                conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")


def copy_machines(
    url: str, machines: list[plant.MachineJob], *, workers: int, log: Any = print
) -> None:
    """Generate and COPY every machine's states and counts."""
    states = counts = 0
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        for i, rows in enumerate(_generated(machines, workers)):
            with conn.cursor() as cur:
                with cur.copy(COPY_STATES) as copy:
                    copy.write(rows.states)
                with cur.copy(COPY_COUNTS) as copy:
                    copy.write(rows.counts)
            conn.commit()
            states, counts = states + rows.n_states, counts + rows.n_counts
            if (i + 1) % 10 == 0 or i + 1 == len(machines):
                rate = counts / (time.perf_counter() - t0)
                log(
                    f"  {i + 1}/{len(machines)} machines: {states:,} states, {counts:,} counts"
                    f" ({rate:,.0f} counts/s)"
                )
