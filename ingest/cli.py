"""``linepulse db upgrade`` and ``linepulse db status`` (the parser lives in edge_agent.cli).

Each takes the parsed arguments (``database_url`` may be None: then LINEPULSE_DATABASE_URL;
``upgrade`` also reads ``retention_days``, ``rollup_1m_days`` and ``rollup_1h_days`` when the
parser defines them), prints its lines and returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys

from ingest import migrate
from ingest.errors import IngestError

DATABASE_URL_ENV = "LINEPULSE_DATABASE_URL"


def _database_url(args: argparse.Namespace) -> str | None:
    url = getattr(args, "database_url", None) or os.environ.get(DATABASE_URL_ENV)
    if not url:
        _error(f"no database URL: pass --database-url or set {DATABASE_URL_ENV}")
        return None
    return str(url)


def _error(message: str) -> None:
    print(f"linepulse db: error: {message}", file=sys.stderr, flush=True)


def db_upgrade(args: argparse.Namespace) -> int:
    """Create or upgrade the schema, printing what was done; 0 on success."""
    url = _database_url(args)
    if url is None:
        return 2
    try:
        migrate.upgrade(
            url,
            retention_days=getattr(args, "retention_days", None),
            rollup_1m_days=getattr(args, "rollup_1m_days", None),
            rollup_1h_days=getattr(args, "rollup_1h_days", None),
            log=lambda line: print(line, flush=True),
        )
    except IngestError as err:
        _error(str(err))
        return 1
    return 0


def db_status(args: argparse.Namespace) -> int:
    """Print the schema version, pending migrations, mode and retention; 0 unless it fails."""
    url = _database_url(args)
    if url is None:
        return 2
    try:
        info = migrate.status(url)
    except IngestError as err:
        _error(str(err))
        return 1
    for line in migrate.format_status(info):
        print(line)
    return 0
