"""``linepulse api run`` and ``linepulse api keys create|list|revoke`` (parser in edge_agent.cli).

Each takes the parsed arguments and returns the exit code. ``database_url`` on the
arguments, when present and set, overrides LINEPULSE_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.auth import keys
from api.config import ENV_PREFIX, ApiSettings
from api.db import make_engine


def _error(message: str) -> None:
    print(f"linepulse api: error: {message}", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> ApiSettings | None:
    overrides = {
        name: getattr(args, name)
        for name in ("database_url", "api_host", "api_port")
        if getattr(args, name, None) is not None
    }
    try:
        return ApiSettings(**overrides)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in err.errors()
        )
        _error(problems)
        return None


def _session(args: argparse.Namespace) -> Session | None:
    settings = _settings(args)
    return None if settings is None else Session(make_engine(settings))


def keys_create(args: argparse.Namespace) -> int:
    """Create a key and print it once (it cannot be shown again)."""
    session = _session(args)
    if session is None:
        return 2
    try:
        with session:
            new = keys.create_key(session, name=args.name, role=args.role)
    except ValueError as err:
        _error(str(err))
        return 2
    except SQLAlchemyError as err:
        _error(f"database: {str(err).splitlines()[0]} (is the schema upgraded?)")
        return 1
    print(f"created key {new.key.id} '{new.key.name}' ({new.key.role}); store it now:")
    print(new.secret, flush=True)
    return 0


def keys_list(args: argparse.Namespace) -> int:
    """Print the keys (never their secrets)."""
    session = _session(args)
    if session is None:
        return 2
    try:
        with session:
            rows = keys.list_keys(session)
    except SQLAlchemyError as err:
        _error(f"database: {str(err).splitlines()[0]}")
        return 1
    print(f"{'id':>4}  {'prefix':12}  {'role':8}  {'status':8}  {'last used':25}  name")
    for k in rows:
        state = "revoked" if k.revoked_at else "active"
        used = k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never"
        print(f"{k.id:>4}  {k.prefix:12}  {k.role:8}  {state:8}  {used:25}  {k.name}")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key by id, prefix or name (``args.key``)."""
    session = _session(args)
    if session is None:
        return 2
    try:
        with session:
            key = keys.revoke_key(session, str(args.key))
    except ValueError as err:
        _error(str(err))
        return 2
    except SQLAlchemyError as err:
        _error(f"database: {str(err).splitlines()[0]}")
        return 1
    if key is None:
        _error(f"no key with id, prefix or name {args.key!r}")
        return 1
    print(f"revoked key {key.id} '{key.name}' ({key.prefix})", flush=True)
    return 0


def serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    from api.app import create_app
    from edge_agent.logs import setup_logging

    settings = _settings(args)
    if settings is None:
        return 2
    setup_logging(json=settings.environment == "production")
    workers = getattr(args, "workers", None) or 1
    if workers == 1:
        target: Any = create_app(settings)
    else:
        # Each worker process builds its own app (pool, helpers) from the environment.
        os.environ[f"{ENV_PREFIX}DATABASE_URL"] = settings.database_url
        target = "api.cli:worker_app"
    uvicorn.run(
        target,
        factory=workers > 1,
        host=settings.api_host,
        port=settings.api_port,
        proxy_headers=True,
        log_level="warning",
        workers=workers if workers > 1 else None,
    )
    return 0


def worker_app() -> FastAPI:
    """The app of one worker process of ``linepulse api run --workers N``."""
    from api.app import create_app
    from edge_agent.logs import setup_logging

    settings = ApiSettings()
    setup_logging(json=settings.environment == "production")
    return create_app(settings)


def demo_config(args: argparse.Namespace) -> int:
    """Configure OEE (shifts, products, reasons, line output) of the simulated line."""
    from api.demo import DemoSetupError, configure

    session = _session(args)
    if session is None:
        return 2
    try:
        with session:
            done = configure(session, line_path=args.line, timezone=args.timezone)
    except DemoSetupError as err:
        _error(str(err))
        return 3
    except SQLAlchemyError as err:
        _error(f"database: {str(err).splitlines()[0]}")
        return 1
    print("; ".join(done) or "already configured", flush=True)
    return 0
