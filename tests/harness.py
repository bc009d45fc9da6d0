"""Throwaway servers for tests: each on a free loopback port, owned and stopped by the test.

Never touches the shared services on the standard ports.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, *, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on the port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class Mosquitto:
    """A private Mosquitto broker with persistence, which a test may stop and restart."""

    def __init__(self, *, port: int | None = None, workdir: Path | None = None) -> None:
        exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
        )
        if exe is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.exe = exe
        self.port = port or free_port()
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="lp-mosq-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        conf = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            "message_size_limit 0",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            conf.append("user root")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        if self.proc and self.proc.poll() is None:
            return self
        log = open(self.dir / "mosquitto.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Collector:
    """A QoS 1 test subscriber with a persistent session: keeps every decoded message.

    Survives a broker restart without missing what was published meanwhile (the broker
    queues for its session).
    """

    def __init__(self, url: str, *, topic: str = "linepulse/v1/#", client_id: str = "") -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        from edge_agent import contract

        self._contract = contract
        host, _, port = url.split("://", 1)[1].partition(":")
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv5,
        )
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._props = props
        self._addr = (host, int(port))
        self._topic = topic
        self.lock = threading.Lock()
        self.messages: list[tuple[str, object]] = []
        self.errors: list[str] = []
        self.redelivered = 0
        self._seen: set[bytes] = set()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)

    def _on_connect(self, client: object, _u: object, _f: object, rc: object, _p: object) -> None:
        self.client.subscribe(self._topic, qos=1)

    def _on_message(self, _c: object, _u: object, msg: object) -> None:
        topic = msg.topic  # type: ignore[attr-defined]
        payload = bytes(msg.payload)  # type: ignore[attr-defined]
        # Mosquitto re-delivers what it was sending when it stopped (DUP set) after a
        # restart; a real consumer dedups those by (agent, seq), so does this one.
        with self.lock:
            if msg.dup and payload in self._seen:  # type: ignore[attr-defined]
                self.redelivered += 1
                return
            self._seen.add(payload)
        try:
            decoded = self._contract.decode(msg.payload)  # type: ignore[attr-defined]
        except self._contract.ContractError as err:
            with self.lock:
                self.errors.append(f"{topic}: {err}")
            return
        with self.lock:
            self.messages.append((topic, decoded))

    def start(self) -> Collector:
        self.client.connect(*self._addr, clean_start=False, properties=self._props)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[tuple[str, object]]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate: object, *, timeout: float = 20.0, what: str = "") -> None:
        """Poll until ``predicate(snapshot)`` is true, or fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


SHARED_PG = os.environ.get("LINEPULSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_bin() -> Path:
    """PostgreSQL server binaries: $LINEPULSE_PG_BIN, else 15 (TimescaleDB's), else the newest."""
    if os.environ.get("LINEPULSE_PG_BIN"):
        return Path(os.environ["LINEPULSE_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    preferred = Path("/usr/lib/postgresql/15/bin")
    if (preferred / "initdb").exists() or not found:
        return preferred
    return found[-1].parent


PG_BIN = _pg_bin()


def shared_pg_reachable(url: str = SHARED_PG) -> bool:
    """The shared PostgreSQL answers and lets us in (trust auth) within a few seconds."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def pg_database(
    admin_url: str = SHARED_PG, *, prefix: str = "lp_test"
) -> tuple[str, Callable[[], None]]:
    """A fresh database on a server the test does not own; returns (url, drop)."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def timescale_installed() -> bool:
    """The TimescaleDB files are installed for the PostgreSQL 15 binaries here."""
    return (Path("/usr/share/postgresql/15/extension") / "timescaledb.control").exists()


class PgCluster:
    """A private PostgreSQL 15 cluster on a free port, which a test may stop and start.

    Runs as the ``postgres`` user when the test runs as root (PostgreSQL refuses root).
    ``timescale=True`` preloads TimescaleDB (see ../shared/timescaledb/README.md).
    """

    def __init__(self, *, timescale: bool = False, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lp-pg-"))
        self.data = self.dir / "data"
        self.timescale = timescale
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            PG_BIN / "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def _run(self, *cmd: object) -> None:
        args = [str(c) for c in cmd]
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PgCluster:
        opts = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.dir} -c fsync=off -c max_connections=100"
        )
        if self.timescale:
            opts += " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
        self._run(
            PG_BIN / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.dir / "log",
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            opts,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "edge_agent" / "examples" / "gateway.yaml"


class AgentProcess:
    """``linepulse edge run`` as a child process, in its own working directory."""

    def __init__(self, *, cwd: Path, env: dict[str, str], config: Path = EXAMPLE_CONFIG) -> None:
        self.cwd, self.env, self.config = cwd, env, config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cwd / "agent.log"

    def start(self) -> AgentProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent.cli",
                    "--log-json",
                    "edge",
                    "run",
                    "--config",
                    str(self.config),
                ],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        return self

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def wait_until(
    collector: Collector,
    check: Callable[[list[tuple[str, object]]], bool],
    *,
    timeout: float,
    what: str,
) -> list[tuple[str, object]]:
    """Poll the collector from the event loop (the simulator keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = collector.snapshot()
        if check(msgs):
            return msgs
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
