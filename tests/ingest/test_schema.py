"""Migrations against real servers: plain PostgreSQL (shared) and TimescaleDB (private cluster)."""

from __future__ import annotations

import argparse
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ingest import cli, db, migrate, schema
from ingest.errors import ConfigError, DatabaseUnavailable, IngestError, MigrationError
from tests.harness import free_port

CORE_TABLES = {
    "assets",
    "tags",
    "samples",
    "samples_text",
    "state_events",
    "state_intervals",
    "production_counts",
    "production_rejects",
    "stop_reasons",
    "products",
    "product_cycle_times",
    "downtime_reasons",
    "shifts",
    "planned_downtime",
    "ingest_ledger",
    "dead_letters",
    "gateways",
    "gateway_status",
    "schema_migrations",
    "storage_retention",
    "api_keys",  # migration 5 (api)
    "audit_log",
    "shift_exceptions",  # migration 6 (api/oee)
    "state_loss_classes",
    "machine_settings",
    "production_counts_1h",  # migration 8 (api/oee)
}
PLAIN_ONLY = {
    "samples_1m",
    "samples_1h",
    "samples_default",
    "samples_text_default",
    "rollup_pending",
    "maintenance_state",
}


def public_tables(conn: psycopg.Connection[Any]) -> set[str]:
    """Ordinary and partitioned tables in schema public, without the day partitions."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        " AND c.relname !~ '_p[0-9]{8}$'"
    ).fetchall()
    return {name for (name,) in rows}


def catalog_snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every relation, function and migration row of the database: equal means unchanged."""
    relations = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        " ORDER BY 1, 2"
    ).fetchall()
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1"
    ).fetchall()
    ledger = conn.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    return [*relations, *functions, *ledger]


@pytest.fixture(params=["postgres", pytest.param("timescale", marks=pytest.mark.timescale)])
def any_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on plain PostgreSQL, then on TimescaleDB."""
    return str(
        request.getfixturevalue("pg_url" if request.param == "postgres" else "timescale_url")
    )


# --- connections --------------------------------------------------------------------------


def test_connect_to_closed_port_names_host_and_port_not_password() -> None:
    port = free_port()
    url = f"postgresql://ingest:s3cr3t-pw@127.0.0.1:{port}/linepulse"
    with pytest.raises(DatabaseUnavailable) as err:
        db.connect(url, connect_timeout=3)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message
    assert "linepulse" in message and "ingest@" in message
    assert "s3cr3t-pw" not in message


@pytest.mark.parametrize(
    "url", ["", "postgresql://u:pw@host:notaport/db", "host=127.0.0.1 port = = 5432"]
)
def test_connect_rejects_bad_urls_clearly(url: str) -> None:
    with pytest.raises(IngestError) as err:
        db.connect(url, connect_timeout=3)
    assert "pw" not in str(err.value).replace("password", "")


def test_timescale_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.TIMESCALE_ENV, "yes please")
    with pytest.raises(ConfigError, match="LINEPULSE_TIMESCALE"):
        db.timescale_mode()
    monkeypatch.setenv(db.TIMESCALE_ENV, " OFF ")
    assert db.timescale_mode() == "off"


# --- plain PostgreSQL ---------------------------------------------------------------------


def test_detection_on_a_server_without_preload_never_kills_the_connection(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.connect(pg_url, autocommit=True) as conn:
        check = db.check_timescale(conn)
        assert not check.usable and not check.installed
        assert db.detect_timescale(conn, mode="auto") is False
        with pytest.raises(ConfigError, match="LINEPULSE_TIMESCALE=on"):
            db.detect_timescale(conn, mode="on")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    monkeypatch.setenv(db.TIMESCALE_ENV, "on")
    with pytest.raises(ConfigError, match="LINEPULSE_TIMESCALE=on"):
        migrate.upgrade(pg_url)


def test_upgrade_from_empty_creates_everything_and_reports(pg_url: str) -> None:
    before = migrate.status(pg_url)
    assert before["version"] == 0 and before["timescale"] is None
    assert before["pending"] == [m.version for m in schema.MIGRATIONS]

    lines = migrate.upgrade(pg_url)

    assert lines[0].startswith("using plain PostgreSQL")
    for migration in schema.MIGRATIONS:
        assert f"applied {migration.version}: {migration.description}" in lines
    assert lines[-1] == "created 16 daily partitions of samples and samples_text"
    with db.connect(pg_url) as conn:
        assert public_tables(conn) == CORE_TABLES | PLAIN_ONLY
        rows = conn.execute("SELECT version, timescale FROM schema_migrations ORDER BY 1")
        assert rows.fetchall() == [(m.version, False) for m in schema.MIGRATIONS]
    after = migrate.status(pg_url)
    assert after["version"] == schema.LATEST_VERSION and after["pending"] == []
    assert after["timescale"] is False
    assert after["retention_days"] == {
        "samples": 90,
        "samples_text": 90,
        "samples_1m": 365,
        "samples_1h": 1825,
    }


def test_second_upgrade_changes_nothing_and_says_so(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    with db.connect(pg_url) as conn:
        before = catalog_snapshot(conn)
    assert migrate.upgrade(pg_url) == [f"already up to date at version {schema.LATEST_VERSION}"]
    with db.connect(pg_url) as conn:
        assert catalog_snapshot(conn) == before


def test_concurrent_upgrades_wait_for_the_lock_and_apply_once(pg_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate.upgrade(pg_url))
        except BaseException as err:  # reported below
            errors.append(err)

    with db.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATE_LOCK,))
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        # Both are blocked on the lock: nothing may exist yet.
        threads[0].join(1.0)
        assert all(t.is_alive() for t in threads)
        assert holder.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrate.MIGRATE_LOCK,))
        for t in threads:
            t.join(60)
    assert not errors, errors
    applied = [r for r in results if "applied 1: " + schema.MIGRATIONS[0].description in r]
    idle = [r for r in results if f"already up to date at version {schema.LATEST_VERSION}" in r]
    assert len(applied) == 1 and len(idle) == 1
    assert all("waiting for another migration of this database to finish" in r for r in results)
    with db.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert versions == [(m.version,) for m in schema.MIGRATIONS]


def test_retention_changes_only_when_asked(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    lines = migrate.upgrade(pg_url, retention_days=30, rollup_1h_days=400)
    assert "retention of samples changed from 90 to 30 days" in lines
    assert "retention of samples_1h changed from 1825 to 400 days" in lines
    assert not any("samples_1m" in line for line in lines)
    # A run without options keeps what is stored.
    assert migrate.upgrade(pg_url) == [f"already up to date at version {schema.LATEST_VERSION}"]
    assert migrate.status(pg_url)["retention_days"]["samples"] == 30
    with pytest.raises(ConfigError, match="samples_1m"):
        migrate.upgrade(pg_url, rollup_1m_days=1)


def test_failed_migration_is_rolled_back_with_a_clear_error(pg_url: str) -> None:
    with db.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE assets (id int)")  # a stray table in the way of migration 1
    with pytest.raises(MigrationError, match=r"migration 1 .* rolled back: relation \"assets\""):
        migrate.upgrade(pg_url)
    with db.connect(pg_url) as conn:
        assert public_tables(conn) == {"assets", "schema_migrations"}
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


@pytest.fixture
def reader_login(any_url: str) -> Iterator[str]:
    """A URL of the migrated database for a new login role in linepulse_reader (dropped after)."""
    migrate.upgrade(any_url)
    role = f"lp_test_reader_{uuid.uuid4().hex[:8]}"
    with db.connect(any_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}' IN ROLE {schema.READER_ROLE}")
    _user, rest = any_url.split("://", 1)[1].split("@", 1)
    try:
        yield f"postgresql://{role}:pw-{role}@{rest}"
    finally:
        with db.connect(any_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_reader_role_can_select_and_cannot_write(reader_login: str) -> None:
    with db.connect(reader_login, autocommit=True) as conn:
        for table in ("assets", "samples", "samples_1m", "samples_1h", "schema_migrations"):
            conn.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO assets (level, name, path) VALUES ('site', 'x', 'x')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM samples")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE mine (x int)")


def test_detection_agrees_for_superusers_and_ordinary_users(any_url: str) -> None:
    """Only superusers may read shared_preload_libraries; others see the loader's settings."""
    role = f"lp_test_user_{uuid.uuid4().hex[:8]}"
    with db.connect(any_url, autocommit=True) as admin:
        as_superuser = db.check_timescale(admin)
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    try:
        rest = any_url.split("@", 1)[1]
        with db.connect(f"postgresql://{role}:pw-{role}@{rest}", autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT current_setting('shared_preload_libraries')")
            assert db.check_timescale(conn) == as_superuser
    finally:
        with db.connect(any_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")


# --- TimescaleDB --------------------------------------------------------------------------


@pytest.mark.timescale
def test_timescale_upgrade_creates_hypertables_compression_policies_and_caggs(
    timescale_url: str,
) -> None:
    lines = migrate.upgrade(timescale_url)
    assert lines[0] == "created extension timescaledb"
    assert f"applied {schema.LATEST_VERSION}: {schema.MIGRATIONS[-1].description}" in lines
    assert not any("partition" in line for line in lines)
    with db.connect(timescale_url) as conn:
        assert public_tables(conn) >= CORE_TABLES
        assert not (PLAIN_ONLY & public_tables(conn))
        hypertables = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = 'public' ORDER BY 1"
        ).fetchall()
        assert hypertables == [("samples", True), ("samples_text", True)]
        settings = conn.execute(
            "SELECT hypertable_name, attname, segmentby_column_index, orderby_asc"
            " FROM timescaledb_information.compression_settings ORDER BY 1, 2"
        ).fetchall()
        assert settings == [
            ("samples", "tag_id", 1, None),
            ("samples", "time", None, False),
            ("samples_text", "tag_id", 1, None),
            ("samples_text", "time", None, False),
        ]
        jobs = conn.execute(
            "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs"
            " WHERE hypertable_name IS NOT NULL"
        ).fetchall()
        caggs = conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " ORDER BY 1"
        ).fetchall()
        names = {r[0]: r[1] for r in caggs}
        mode = conn.execute("SELECT DISTINCT timescale FROM schema_migrations").fetchall()
    assert names == {"samples_1h": False, "samples_1m": False}
    policies = {(proc, table): config for proc, table, config in jobs}
    assert policies[("policy_compression", "samples")]["compress_after"] == "2 days"
    assert policies[("policy_compression", "samples_text")]["compress_after"] == "2 days"
    assert policies[("policy_retention", "samples")]["drop_after"] == "90 days"
    assert policies[("policy_retention", "samples_text")]["drop_after"] == "90 days"
    assert policies[("policy_retention", "samples_1m")]["drop_after"] == "365 days"
    assert policies[("policy_retention", "samples_1h")]["drop_after"] == "1825 days"
    refresh = policies[("policy_refresh_continuous_aggregate", "samples_1m")]
    assert refresh["start_offset"] == "7 days" and refresh["end_offset"] == "00:01:00"
    assert ("policy_refresh_continuous_aggregate", "samples_1h") in policies
    assert len(jobs) == 8
    assert mode == [(True,)]
    assert migrate.upgrade(timescale_url) == [
        f"already up to date at version {schema.LATEST_VERSION}"
    ]


@pytest.mark.timescale
def test_timescale_retention_change_replaces_the_policies(timescale_url: str) -> None:
    migrate.upgrade(timescale_url)
    lines = migrate.upgrade(timescale_url, retention_days=5, rollup_1m_days=30)
    assert "retention of samples changed from 90 to 5 days" in lines
    with db.connect(timescale_url) as conn:
        jobs = conn.execute(
            "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs"
            " WHERE hypertable_name IS NOT NULL"
        ).fetchall()
    policies = {(proc, table): config for proc, table, config in jobs}
    assert len(jobs) == 8
    assert policies[("policy_retention", "samples")]["drop_after"] == "5 days"
    assert policies[("policy_retention", "samples_1m")]["drop_after"] == "30 days"
    # The refresh window stays inside the raw retention (never re-materializes dropped data).
    refresh = policies[("policy_refresh_continuous_aggregate", "samples_1m")]
    assert refresh["start_offset"] == "4 days"


@pytest.mark.timescale
def test_timescale_off_sets_up_plain_and_later_runs_keep_it(
    timescale_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(db.TIMESCALE_ENV, "off")
    lines = migrate.upgrade(timescale_url)
    assert lines[0] == "using plain PostgreSQL (LINEPULSE_TIMESCALE=off)"
    monkeypatch.setenv(db.TIMESCALE_ENV, "auto")
    assert migrate.upgrade(timescale_url) == [
        f"already up to date at version {schema.LATEST_VERSION}"
    ]
    monkeypatch.setenv(db.TIMESCALE_ENV, "on")
    assert migrate.upgrade(timescale_url)[0] == (
        "LINEPULSE_TIMESCALE=on ignored: this database was set up with plain PostgreSQL"
    )
    info = migrate.status(timescale_url)
    assert info["timescale"] is False and info["timescale_available"] is True
    with db.connect(timescale_url) as conn:
        assert public_tables(conn) >= PLAIN_ONLY
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone() == (0,)


# --- the CLI ------------------------------------------------------------------------------


def test_cli_upgrade_and_status(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(cli.DATABASE_URL_ENV, raising=False)
    assert cli.db_upgrade(argparse.Namespace(database_url=None)) == 2
    assert "LINEPULSE_DATABASE_URL" in capsys.readouterr().err

    monkeypatch.setenv(cli.DATABASE_URL_ENV, pg_url)
    assert cli.db_status(argparse.Namespace(database_url=None)) == 0
    assert "schema version: 0" in capsys.readouterr().out
    assert cli.db_upgrade(argparse.Namespace(database_url=None, retention_days=14)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"applied {schema.LATEST_VERSION}: {schema.MIGRATIONS[-1].description}" in lines
    assert "retention of samples changed from 90 to 14 days" in lines
    assert cli.db_status(argparse.Namespace(database_url=pg_url)) == 0
    out = capsys.readouterr().out
    assert "mode: plain PostgreSQL" in out and "samples 14 days" in out

    closed = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db"
    assert cli.db_upgrade(argparse.Namespace(database_url=closed)) == 1
    err = capsys.readouterr().err
    assert "cannot connect to PostgreSQL at u@127.0.0.1" in err and "hunter2" not in err
