"""``linepulse demo``: the platform on embedded defaults, with no set-up.

Starts the simulated packaging line (OPC UA + Modbus), a local broker (``mosquitto`` from
PATH, else in-process amqtt) unless ``LINEPULSE_MQTT_URL`` names one, and an edge agent
with the example gateway config; then prints what flows over MQTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
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
            f"  flow   {c.get('messages', 0)} messages, {c.get('samples', 0)} samples,"
            f" {c.get('state', 0)} state changes, {c.get('count', 0)} count deltas"
        )


async def run_demo(*, data_dir: Path, duration: float | None = None) -> int:
    """Run simulator + broker + agent until Ctrl-C / SIGTERM or ``duration`` seconds."""
    from edge_agent.agent import Agent
    from edge_agent.localbroker import LocalBroker
    from edge_agent.simulator import Simulator

    data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    url = os.environ.get("LINEPULSE_MQTT_URL")
    if not url:
        broker = await LocalBroker(data_dir).start()
        url = broker.url
    sim = Simulator(opcua_port=0, modbus_port=0, seed=1)
    await sim.start()
    env = {
        **os.environ,
        "LINEPULSE_MQTT_URL": url,
        "SIM_OPCUA_PORT": str(sim.opcua_port),
        "SIM_MODBUS_PORT": str(sim.modbus_port),
    }
    cfg = load_config(EXAMPLE, env=env)
    cfg = cfg.model_copy(
        update={"agent": cfg.agent.model_copy(update={"data_dir": data_dir / "gateway"})}
    )
    print(
        f"linepulse demo: simulator opc.tcp://127.0.0.1:{sim.opcua_port}, "
        f"modbus 127.0.0.1:{sim.modbus_port}; broker {url}; Ctrl-C to stop",
        flush=True,
    )
    printer = FlowPrinter(url, cfg.broker.topic_prefix)
    printer.start()
    agent = Agent(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(agent.run())
    started = time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)
            print(printer.summary(), flush=True)
            if duration is not None and time.monotonic() - started >= duration:
                break
    finally:
        agent.stop()
        await task
        printer.stop()
        await sim.stop()
        if broker:
            await broker.stop()
    return 0
