"""Throwaway servers for tests: each on a free loopback port, owned and stopped by the test.

Never touches the shared services on the standard ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
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
