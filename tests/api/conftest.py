"""API fixtures: a migrated database per module, the app, a client and a key per role.

The database is shared by the tests of one module (migrating takes a moment): tests make
their own assets with unique names rather than assume an empty tree. For a database of
your own, use ``pg_url`` and ``ingest.migrate.upgrade``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import keys
from api.config import ApiSettings
from api.db import make_engine
from ingest import migrate
from tests.harness import pg_database

ROLES = ("viewer", "operator", "admin")


@pytest.fixture(scope="module")
def api_database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database at the latest schema, for one test module."""
    url, drop = pg_database(pg_admin_url, prefix="lp_api")
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop()


@pytest.fixture(scope="module")
def api_settings(api_database_url: str) -> ApiSettings:
    """Settings pointing at the module's database (small pool: 2 cores)."""
    return ApiSettings(database_url=api_database_url, pool_size=2, max_overflow=2)


@pytest.fixture(scope="module")
def api_app(api_settings: ApiSettings) -> Iterator[FastAPI]:
    """The application."""
    app = create_app(api_settings)
    yield app
    app.state.oee_helpers.close()
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def api_client(api_app: FastAPI) -> Iterator[TestClient]:
    """A client that returns 500s as responses (as a real client would see them)."""
    with TestClient(api_app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def db_session(api_settings: ApiSettings) -> Iterator[Session]:
    """A session on the module's database, for arranging and checking rows."""
    engine = make_engine(api_settings)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture(scope="module")
def api_keys(db_session: Session) -> dict[str, keys.NewKey]:
    """One live key per role."""
    return {role: keys.create_key(db_session, name=f"test-{role}", role=role) for role in ROLES}


@pytest.fixture(scope="module")
def role_headers(api_keys: dict[str, keys.NewKey]) -> dict[str, dict[str, str]]:
    """Request headers per role: ``role_headers["admin"]``."""
    return {role: {"Authorization": f"Bearer {k.secret}"} for role, k in api_keys.items()}
