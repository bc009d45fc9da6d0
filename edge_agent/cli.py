"""``linepulse``: one command, a subcommand per role.

linepulse edge run --config gateway.yaml     run a gateway agent
linepulse edge check --config gateway.yaml   validate a config without connecting
linepulse simulate --opcua-port 4840 --modbus-port 5020
linepulse demo                               simulated line + agent + local broker
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.logs import setup_logging


def _edge_run(args: argparse.Namespace) -> int:
    from edge_agent.agent import Agent
    from edge_agent.config_file import load_config

    cfg = load_config(args.config)

    async def main() -> None:
        agent = Agent(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())
    return 0


def _edge_check(args: argparse.Namespace) -> int:
    from edge_agent.config_file import load_config

    cfg = load_config(args.config)
    tags = sum(len(d.tags) for d in cfg.devices)
    print(
        f"{args.config}: OK — agent {cfg.agent.id}, {len(cfg.devices)} devices, {tags} tags,"
        f" {len(cfg.machines)} machines, broker {cfg.broker.url}"
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from edge_agent.simulator import main

    return main(args)


def _demo(args: argparse.Namespace) -> int:
    from edge_agent.demo import run_demo

    return asyncio.run(run_demo(data_dir=args.data_dir, duration=args.duration))


def _workers(text: str) -> int:
    """A worker count for argparse: 1..64."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"must be 1..64, not {n}")
    return n


def _server(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    """Run a server-side command, imported only when it is used (a gateway lacks its deps)."""

    def call(args: argparse.Namespace) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            print(f"{err}", file=sys.stderr)
            return _missing(args.role, "server")
        return int(getattr(mod, func)(args))

    return call


def _add_server_roles(roles: Any) -> None:
    db = roles.add_parser("db", help="the database schema (PostgreSQL / TimescaleDB)")
    db_cmds = db.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = db_cmds.add_parser("upgrade", help="create or upgrade the schema; says what it did")
    status = db_cmds.add_parser("status", help="schema version, pending migrations, mode")
    for p in (up, status):
        p.add_argument(
            "--database-url",
            default=None,
            help="postgresql://user@host:port/db (default: $LINEPULSE_DATABASE_URL)",
        )
    up.add_argument(
        "--retention-days",
        type=int,
        default=None,
        help="keep raw samples this many days (default 90; kept when not given)",
    )
    up.add_argument("--rollup-1m-days", type=int, default=None, help="keep 1-minute rollups")
    up.add_argument("--rollup-1h-days", type=int, default=None, help="keep 1-hour rollups")
    up.set_defaults(func=_server("ingest.cli", "db_upgrade"))
    status.set_defaults(func=_server("ingest.cli", "db_status"))

    ingest = roles.add_parser("ingest", help="the ingest service")
    ingest_cmds = ingest.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = ingest_cmds.add_parser("run", help="subscribe and write to the database")
    run.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="YAML settings file (LINEPULSE_* environment variables override it)",
    )
    run.add_argument(
        "--workers", type=int, default=None, help="worker processes on the shared subscription"
    )
    run.set_defaults(func=_server("ingest.service", "main"))

    api = roles.add_parser("api", help="the HTTP API (assets, OEE, ...) and its keys")
    api_cmds = api.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = api_cmds.add_parser("run", help="serve the API with uvicorn")
    serve.add_argument("--host", dest="api_host", default=None, help="default 127.0.0.1")
    serve.add_argument("--port", dest="api_port", type=int, default=None, help="default 8000")
    serve.add_argument("--workers", type=_workers, default=1, help="worker processes (default 1)")
    serve.set_defaults(func=_server("api.cli", "serve"))
    keys = api_cmds.add_parser("keys", help="API keys: create, list, revoke")
    key_cmds = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_cmds.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    create.set_defaults(func=_server("api.cli", "keys_create"))
    listing = key_cmds.add_parser("list", help="list keys (never the secrets)")
    listing.set_defaults(func=_server("api.cli", "keys_list"))
    revoke = key_cmds.add_parser("revoke", help="revoke a key by id, prefix or name")
    revoke.add_argument("key", help="id, prefix or name")
    revoke.set_defaults(func=_server("api.cli", "keys_revoke"))
    demo_cfg = api_cmds.add_parser(
        "demo-config", help="configure OEE of the simulated line (shifts, products, reasons)"
    )
    demo_cfg.add_argument("--line", default="plant1/packaging/line1", help="the line's path")
    demo_cfg.add_argument("--timezone", default="UTC", help="the site's IANA time zone")
    demo_cfg.set_defaults(func=_server("api.cli", "demo_config"))
    for p in (serve, create, listing, revoke, demo_cfg):
        p.add_argument(
            "--database-url",
            default=None,
            help="postgresql://user@host:port/db (default: $LINEPULSE_DATABASE_URL)",
        )


def _missing(command: str, extra: str) -> int:
    print(
        f"linepulse {command} needs the {extra} extra: pip install 'linepulse[{extra}]'",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linepulse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        default=None,
        help="JSON logs (default: JSON unless stderr is a terminal)",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")

    edge = roles.add_parser("edge", help="the gateway agent")
    edge_cmds = edge.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = edge_cmds.add_parser("run", help="read devices and publish to the broker")
    run.add_argument("--config", "-c", type=Path, required=True, help="gateway YAML file")
    run.set_defaults(func=_edge_run)
    check = edge_cmds.add_parser("check", help="validate a gateway config without connecting")
    check.add_argument("--config", "-c", type=Path, required=True, help="gateway YAML file")
    check.set_defaults(func=_edge_check)

    sim = roles.add_parser("simulate", help="a simulated packaging line over OPC UA and Modbus")
    try:
        from edge_agent.simulator import add_arguments
    except ImportError:  # a server-only install has no asyncua/pymodbus
        sim.set_defaults(func=lambda _a: _missing("simulate", "edge"))
    else:
        add_arguments(sim)
        sim.set_defaults(func=_simulate)

    demo = roles.add_parser(
        "demo", help="simulated line + agent + local broker, printing what flows"
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path("./data/demo"),
        help="where the outbox and the local broker keep their files",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    demo.set_defaults(func=_demo)
    _add_server_roles(roles)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``linepulse`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(json=args.log_json, level=args.log_level)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"config error:\n{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
