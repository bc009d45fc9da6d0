"""A local MQTT broker for embedded runs: ``mosquitto`` from PATH, else in-process amqtt.

Used by ``linepulse demo`` when ``LINEPULSE_MQTT_URL`` does not point at a real broker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("edge_agent.localbroker")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_port(port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"the local broker did not listen on port {port}") from None
            await asyncio.sleep(0.05)


class LocalBroker:
    """Starts and stops a loopback broker with its data under ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or _free_port()
        self.kind = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._amqtt: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> LocalBroker:
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None
        )
        if exe:
            await self._start_mosquitto(exe)
        else:
            await self._start_amqtt()
        log.info("local broker started", kind=self.kind, url=self.url)
        return self

    async def _start_mosquitto(self, exe: str) -> None:
        d = self.data_dir / "mosquitto"
        d.mkdir(parents=True, exist_ok=True)
        conf = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {d}/",
            "max_queued_messages 100000",
            "log_dest file " + str(d / "mosquitto.log"),
        ]
        if os.geteuid() == 0:
            conf.append("user root")
        (d / "mosquitto.conf").write_text("\n".join(conf) + "\n")
        self._proc = subprocess.Popen(
            [exe, "-c", str(d / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.kind = "mosquitto"
        await _wait_port(self.port)

    async def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as err:
            raise RuntimeError(
                "no MQTT broker: install mosquitto (apt-get install mosquitto), "
                "install linepulse[embedded] for the in-process broker, "
                "or set LINEPULSE_MQTT_URL"
            ) from err
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True},
            "topic-check": {"enabled": False},
        }
        self._amqtt = Broker(config)
        await self._amqtt.start()
        self.kind = "amqtt (in-process, MQTT 3.1.1)"
        await _wait_port(self.port)

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._amqtt is not None:
            await self._amqtt.shutdown()
            self._amqtt = None
