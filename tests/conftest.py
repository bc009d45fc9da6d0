"""Shared fixtures: private servers on free loopback ports, and the shared PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    SHARED_PG,
    Mosquitto,
    PgCluster,
    free_port,
    pg_database,
    shared_pg_reachable,
    timescale_installed,
)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto broker the test may stop and restart (same port, persistent)."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def port() -> int:
    """A free loopback TCP port."""
    return free_port()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The shared PostgreSQL; where there is none (a fresh machine), a private cluster."""
    if shared_pg_reachable(SHARED_PG):
        yield SHARED_PG
        return
    cluster = PgCluster().start()
    try:
        yield cluster.admin_url
    finally:
        cluster.close()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database (dropped afterwards)."""
    url, drop = pg_database(pg_admin_url)
    try:
        yield url
    finally:
        drop()


@pytest.fixture(scope="session")
def timescale_cluster() -> Iterator[PgCluster]:
    """A private cluster that preloads TimescaleDB; the test skips where it is not installed."""
    if not timescale_installed():
        pytest.skip("TimescaleDB is not installed (../shared/timescaledb/install.sh)")
    cluster = PgCluster(timescale=True).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def timescale_url(timescale_cluster: PgCluster) -> Iterator[str]:
    """A fresh database on the TimescaleDB cluster."""
    url, drop = pg_database(timescale_cluster.admin_url)
    try:
        yield url
    finally:
        drop()
