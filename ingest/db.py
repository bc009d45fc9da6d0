"""Connections to PostgreSQL, and whether TimescaleDB can be used there.

``connect`` translates connection failures into ``DatabaseUnavailable`` naming the host,
port, database and user — never the password. ``detect_timescale`` decides from the
catalog and the server settings *before* anything tries ``CREATE EXTENSION timescaledb``:
on a server that does not preload the library that statement is FATAL and drops the
connection, even though the extension files are installed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ingest.errors import ConfigError, DatabaseUnavailable

TIMESCALE_ENV = "LINEPULSE_TIMESCALE"
TimescaleMode = Literal["auto", "off", "on"]
_MODES: tuple[TimescaleMode, ...] = ("auto", "off", "on")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


def describe_url(url: str) -> str:
    """``user@host:port/dbname`` of a database URL or conninfo string, without the password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redact(url)
    host = params.get("host") or params.get("hostaddr") or "localhost (socket)"
    port = params.get("port") or "5432"
    user = params.get("user") or os.environ.get("PGUSER") or "(default user)"
    dbname = params.get("dbname") or "(default database)"
    return f"{user}@{host}:{port}/{dbname}"


def redact(text: str) -> str:
    """``text`` with any password of a ``scheme://user:password@`` URL replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def connect(url: str, **kw: Any) -> psycopg.Connection[Any]:
    """Open a connection; failures raise ``DatabaseUnavailable`` naming where, not the password."""
    if not url or not url.strip():
        raise ConfigError("no database URL given (set LINEPULSE_DATABASE_URL)")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as err:
        raise ConfigError(
            f"the database URL is not valid ({_first_line(redact(str(err)))}); expected "
            "postgresql://user@host:port/dbname"
        ) from None
    kw.setdefault("connect_timeout", 10)
    try:
        return psycopg.connect(url, **kw)
    except psycopg.OperationalError as err:
        reason = _first_line(str(err))
        password = str(params.get("password") or "")
        if password:
            reason = reason.replace(password, "***")
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {describe_url(url)}: {redact(reason)}"
        ) from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def timescale_mode(value: str | None = None) -> TimescaleMode:
    """The ``LINEPULSE_TIMESCALE`` setting: ``auto`` (default), ``off``, or ``on`` (required)."""
    raw = (os.environ.get(TIMESCALE_ENV, "auto") if value is None else value).strip().lower()
    for mode in _MODES:
        if raw == mode:
            return mode
    raise ConfigError(f"{TIMESCALE_ENV}={raw!r} is not one of auto, off, on")


@dataclass(frozen=True)
class TimescaleCheck:
    """Whether TimescaleDB can be used on a database, and why (for reports)."""

    usable: bool
    installed: bool  # the extension already exists in this database
    reason: str


def check_timescale(conn: psycopg.Connection[Any]) -> TimescaleCheck:
    """Inspect the catalog and settings; never runs CREATE EXTENSION."""
    if _scalar(conn, "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')"):
        return TimescaleCheck(True, True, "the timescaledb extension exists in this database")
    available = _scalar(
        conn, "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')"
    )
    if not available:
        return TimescaleCheck(False, False, "the timescaledb extension is not installed")
    if not _preloaded(conn):
        return TimescaleCheck(
            False,
            False,
            "timescaledb is installed but the server does not preload it "
            "(add it to shared_preload_libraries and restart PostgreSQL)",
        )
    return TimescaleCheck(True, False, "timescaledb is installed and preloaded")


def detect_timescale(conn: psycopg.Connection[Any], *, mode: TimescaleMode | None = None) -> bool:
    """Should this database use TimescaleDB? ``mode`` defaults to ``LINEPULSE_TIMESCALE``."""
    mode = mode or timescale_mode()
    if mode == "off":
        return False
    check = check_timescale(conn)
    if mode == "on" and not check.usable:
        raise ConfigError(f"{TIMESCALE_ENV}=on but {check.reason}")
    return check.usable


def _preloaded(conn: psycopg.Connection[Any]) -> bool:
    """Is the timescaledb loader in shared_preload_libraries?"""
    try:
        with conn.transaction():
            setting = _scalar(conn, "SELECT current_setting('shared_preload_libraries')")
    except psycopg.errors.InsufficientPrivilege:
        # Only superusers and pg_read_all_settings may read it; the loader's own settings
        # are visible to everyone, and exist only when the loader is loaded.
        return bool(
            _scalar(
                conn,
                "SELECT EXISTS (SELECT FROM pg_settings"
                " WHERE name = 'timescaledb.max_background_workers')",
            )
        )
    names = (part.strip().strip('"').rsplit("/", 1)[-1] for part in str(setting).split(","))
    return "timescaledb" in names


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]
