"""The SQLAlchemy 2 engine (psycopg 3) and the per-request session dependency."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from pydantic import AfterValidator, AwareDatetime
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from api.config import ApiSettings

# PostgreSQL's integer: ids above it are not ids (and would make psycopg raise).
INT4_MAX = 2**31 - 1
# Instants the database and Python both hold, far from datetime's limits (a year-9999 time
# west of UTC is year 10000 in UTC and overflows).
FIRST_YEAR, LAST_YEAR = 1970, 9000


def in_years(value: datetime) -> datetime:
    """``value`` unchanged, or a ValueError when its year is outside FIRST_YEAR..LAST_YEAR."""
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must lie between the years {FIRST_YEAR} and {LAST_YEAR}")
    return value


# A timestamp with an offset in a year the database can hold (the offset is kept).
Instant = Annotated[AwareDatetime, AfterValidator(in_years)]
_SCHEME = re.compile(r"^(postgres|postgresql)(\+psycopg2?|\+psycopg)?://")


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) as SQLAlchemy's ``postgresql+psycopg://``."""
    return _SCHEME.sub("postgresql+psycopg://", url.strip(), count=1)


def make_engine(settings: ApiSettings, *, pool_size: int | None = None) -> Engine:
    """An engine with a bounded pool and a statement timeout (no query runs away).
    ``pool_size``: a fixed pool of that many connections instead of the settings' pool."""
    timeout_ms = int(settings.statement_timeout_s * 1000)
    return create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=pool_size or settings.pool_size,
        max_overflow=settings.max_overflow if pool_size is None else 0,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 10,
            "options": f"-c statement_timeout={timeout_ms} -c TimeZone=UTC",
            "application_name": "linepulse-api",
        },
    )


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; services commit what they change, the rest is rolled back."""
    engine: Engine = request.app.state.engine
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
