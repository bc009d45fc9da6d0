"""Schema migrations: ``linepulse db upgrade`` and ``linepulse db status``.

``upgrade`` applies the pending migrations of ``ingest.schema.MIGRATIONS`` in order, each in
its own transaction together with its row in ``schema_migrations``, under an advisory lock
so that two services starting at once never both migrate (the second waits, then finds
nothing to do). The first run decides the mode — TimescaleDB when it can be used (see
``ingest.db.detect_timescale``; ``LINEPULSE_TIMESCALE=off|auto|on``), plain PostgreSQL
otherwise — and records it; later runs keep the recorded mode whatever the setting says.

Retention (days of raw samples, 1-minute and 1-hour rollups) is stored in the database
(``storage_retention``). ``upgrade`` changes it only when asked; ``None`` keeps what is
stored (the defaults of ``schema.Retention`` on a new database).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from ingest import schema
from ingest.db import (
    TIMESCALE_ENV,
    check_timescale,
    connect,
    describe_url,
    timescale_mode,
)
from ingest.errors import ConfigError, DatabaseUnavailable, MigrationError
from ingest.maintenance import ensure_partitions

MIGRATE_LOCK = 0x6C70_0001  # advisory lock key (per database)
Conn = psycopg.Connection[Any]
Log = Callable[[str], None]


class _Report:
    """The human lines of an upgrade, passed on to ``log`` as they happen."""

    def __init__(self, log: Log | None) -> None:
        self.lines: list[str] = []
        self._log = log

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self._log is not None:
            self._log(line)


def upgrade(
    url: str,
    *,
    retention_days: int | None = None,
    rollup_1m_days: int | None = None,
    rollup_1h_days: int | None = None,
    log: Log | None = None,
    lock_wait: float = 300.0,
    target: int | None = None,
) -> list[str]:
    """Create or upgrade the schema; returns what it did, line by line.

    ``retention_days`` (raw samples), ``rollup_1m_days``, ``rollup_1h_days``: None keeps the
    stored value (90, 365 and 1825 days on a new database). ``target``: stop at that version
    (tests of upgrades from an older schema); the latest by default.
    """
    requested = _requested_retention(retention_days, rollup_1m_days, rollup_1h_days)
    goal = schema.LATEST_VERSION if target is None else target
    if goal not in {m.version for m in schema.MIGRATIONS}:
        raise ConfigError(f"there is no schema version {target}")
    report = _Report(log)
    with connect(url, autocommit=True) as conn:
        try:
            _lock(conn, wait=lock_wait, report=report)
            try:
                _upgrade_locked(conn, requested, goal=goal, report=report)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
        except psycopg.OperationalError as err:
            raise DatabaseUnavailable(
                f"lost the connection to {describe_url(url)} while migrating: {err}"
            ) from None
    return report.lines


def _upgrade_locked(conn: Conn, requested: dict[str, int], *, goal: int, report: _Report) -> None:
    conn.execute(schema.MIGRATIONS_TABLE)
    applied = set(schema.applied_versions(conn))
    if applied and max(applied) > schema.LATEST_VERSION:
        raise MigrationError(
            f"the database is at schema version {max(applied)}, newer than this linepulse"
            f" knows ({schema.LATEST_VERSION}): upgrade linepulse"
        )
    timescale = _choose_mode(conn, report)
    pending = [m for m in schema.MIGRATIONS if m.version not in applied and m.version <= goal]
    for migration in pending:
        _apply(conn, migration, timescale=timescale, report=report)
    if not pending:
        report(f"already up to date at version {max(applied, default=0)}")
    _sync_retention(conn, requested, timescale=timescale, report=report)
    if not timescale:
        created = ensure_partitions(conn)
        if created:
            report(f"created {len(created)} daily partitions of samples and samples_text")


def _lock(conn: Conn, *, wait: float, report: _Report) -> None:
    """Take the migration lock, waiting up to ``wait`` seconds for another upgrade."""
    deadline = time.monotonic() + wait
    said = False
    while not _try_lock(conn):
        if time.monotonic() > deadline:
            raise MigrationError(
                f"another migration has held the lock for over {wait:.0f} s; try again later"
            )
        if not said:
            report("waiting for another migration of this database to finish")
            said = True
        time.sleep(0.1)


def _try_lock(conn: Conn) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK,)).fetchone()
    return bool(row and row[0])


def _choose_mode(conn: Conn, report: _Report) -> bool:
    """TimescaleDB or not: the recorded mode, else decided now (creating the extension)."""
    mode = timescale_mode()
    recorded = schema.recorded_timescale(conn)
    if recorded is not None:
        if (mode == "off" and recorded) or (mode == "on" and not recorded):
            kind = "TimescaleDB" if recorded else "plain PostgreSQL"
            report(f"{TIMESCALE_ENV}={mode} ignored: this database was set up with {kind}")
        if recorded and not check_timescale(conn).installed:
            raise MigrationError(
                "this database was set up with TimescaleDB but the timescaledb extension is"
                " missing; restore it (CREATE EXTENSION timescaledb) before upgrading"
            )
        return recorded
    if mode == "off":
        report(f"using plain PostgreSQL ({TIMESCALE_ENV}=off)")
        return False
    check = check_timescale(conn)
    if not check.usable:
        if mode == "on":
            raise ConfigError(f"{TIMESCALE_ENV}=on but {check.reason}")
        report(f"using plain PostgreSQL: {check.reason}")
        return False
    if not check.installed:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as err:
            raise MigrationError(f"CREATE EXTENSION timescaledb failed: {err}") from None
        report("created extension timescaledb")
    return True


def _apply(conn: Conn, migration: schema.Migration, *, timescale: bool, report: _Report) -> None:
    try:
        with conn.transaction():
            migration.apply(conn, timescale)
            conn.execute(
                "INSERT INTO schema_migrations (version, description, timescale)"
                " VALUES (%s, %s, %s)",
                (migration.version, migration.description, timescale),
            )
    except psycopg.OperationalError:
        raise
    except psycopg.Error as err:
        raise MigrationError(_explain(migration, err)) from None
    report(f"applied {migration.version}: {migration.description}")
    if migration.after is not None:
        try:
            for line in migration.after(conn, timescale):
                report(line)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as err:
            raise MigrationError(
                f"migration {migration.version} was applied but its follow-up failed: {err}"
                " (run the upgrade again to retry)"
            ) from None


def _explain(migration: schema.Migration, err: psycopg.Error) -> str:
    message = (err.diag.message_primary or str(err)).strip()
    text = (
        f"migration {migration.version} ({migration.description}) failed and was rolled back:"
        f" {message}"
    )
    if "btree_gist" in str(err):
        text += (
            ". btree_gist is one of PostgreSQL's contrib extensions: it ships with the server"
            " package on Debian and Ubuntu (postgresql-NN) and in postgresql-contrib elsewhere;"
            " install it on the database server, or have a superuser run"
            " CREATE EXTENSION btree_gist in this database"
        )
    elif isinstance(err, psycopg.errors.InsufficientPrivilege) and "role" in message:
        text += (
            f". Have a superuser run CREATE ROLE {schema.READER_ROLE} NOLOGIN once on this"
            " server (or grant CREATEROLE to the migrating user), then upgrade again"
        )
    return text


def _requested_retention(samples: int | None, r1m: int | None, r1h: int | None) -> dict[str, int]:
    """The retention values asked for, validated (relation -> days)."""
    asked = {"samples": samples, "samples_1m": r1m, "samples_1h": r1h}
    for name, days in asked.items():
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 2):
            raise ConfigError(
                f"retention of {name} must be a whole number of days >= 2, not {days!r}"
            )
    return {name: days for name, days in asked.items() if days is not None}


def _sync_retention(
    conn: Conn, requested: dict[str, int], *, timescale: bool, report: _Report
) -> None:
    """Store (and on TimescaleDB re-create the policies for) a changed retention."""
    stored = schema.load_retention(conn)
    if not requested or stored is None:
        return
    wanted = schema.Retention(
        samples_days=requested.get("samples", stored.samples_days),
        rollup_1m_days=requested.get("samples_1m", stored.rollup_1m_days),
        rollup_1h_days=requested.get("samples_1h", stored.rollup_1h_days),
    )
    if wanted == stored:
        return
    with conn.transaction():
        schema.store_retention(conn, wanted)
        if timescale:
            schema.set_timescale_retention(conn, wanted)
    before, after = stored.by_relation(), wanted.by_relation()
    for relation, days in after.items():
        if before[relation] != days:
            report(f"retention of {relation} changed from {before[relation]} to {days} days")


def status(url: str) -> dict[str, Any]:
    """Schema version, pending migrations, mode and retention of a database."""
    with connect(url, autocommit=True) as conn:
        versions = schema.applied_versions(conn)
        applied = []
        if versions:
            applied = [
                {"version": v, "description": d, "applied_at": at.isoformat()}
                for v, d, at in conn.execute(
                    "SELECT version, description, applied_at FROM schema_migrations ORDER BY 1"
                )
            ]
        check = check_timescale(conn)
        retention = schema.load_retention(conn)
        return {
            "database": describe_url(url),
            "version": max(versions, default=0),
            "latest": schema.LATEST_VERSION,
            "pending": [m.version for m in schema.MIGRATIONS if m.version not in versions],
            "timescale": schema.recorded_timescale(conn),
            "timescale_available": check.usable,
            "timescale_reason": check.reason,
            "retention_days": retention.by_relation() if retention else None,
            "applied": applied,
        }


def format_status(info: dict[str, Any]) -> list[str]:
    """``status`` as lines for a terminal."""
    if info["timescale"] is None:
        would = "TimescaleDB" if info["timescale_available"] else "plain PostgreSQL"
        mode = f"not set up yet (would use {would}: {info['timescale_reason']})"
    else:
        mode = "TimescaleDB" if info["timescale"] else "plain PostgreSQL"
    pending = ", ".join(str(v) for v in info["pending"]) or "none"
    lines = [
        f"database: {info['database']}",
        f"mode: {mode}",
        f"schema version: {info['version']} (latest {info['latest']}); pending: {pending}",
    ]
    if info["retention_days"]:
        kept = ", ".join(f"{k} {v} days" for k, v in info["retention_days"].items())
        lines.append(f"retention: {kept}")
    lines += [f"  {a['version']}: {a['description']} ({a['applied_at']})" for a in info["applied"]]
    return lines
