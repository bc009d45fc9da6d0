"""The agent in-process: health and metrics endpoints, outbox flush on stop, batching."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

from edge_agent import contract as c
from edge_agent.agent import Agent
from edge_agent.config_file import load_config
from edge_agent.simulator import Simulator
from tests.harness import Mosquitto

EXAMPLE = Path(__file__).resolve().parents[2] / "edge_agent" / "examples" / "gateway.yaml"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_health_metrics_and_flush_on_stop(tmp_path: Path, mosquitto: Mosquitto) -> None:
    sim = Simulator(opcua_port=0, modbus_port=0, seed=5, tick=0.2)
    await sim.start()
    env = {
        "LINEPULSE_MQTT_URL": mosquitto.url,
        "SIM_OPCUA_PORT": str(sim.opcua_port),
        "SIM_MODBUS_PORT": str(sim.modbus_port),
    }
    cfg = load_config(EXAMPLE, env=env)
    cfg = cfg.model_copy(
        update={
            "agent": cfg.agent.model_copy(update={"data_dir": tmp_path / "gw", "health_port": 0})
        }
    )
    agent = Agent(cfg)
    task = asyncio.create_task(agent.run())
    try:
        base = None
        for _ in range(100):
            await asyncio.sleep(0.1)
            if agent.health_port:
                base = f"http://127.0.0.1:{agent.health_port}"
                status, body = await asyncio.to_thread(get, base + "/health")
                if status == 200:
                    break
        assert base is not None
        health = json.loads(body)
        assert health["status"] == "ok" and health["broker_connected"] is True
        assert health["devices"] == {"plc-upstream": True, "plc-downstream": True}
        status, metrics = await asyncio.to_thread(get, base + "/metrics")
        assert status == 200
        text = metrics.decode()
        for name in (
            "linepulse_edge_device_reads_total",
            "linepulse_edge_outbox_messages",
            "linepulse_edge_publish_latency_seconds_bucket",
            "linepulse_edge_scan_seconds_bucket",
        ):
            assert name in text, name
        assert (await asyncio.to_thread(get, base + "/nope"))[0] == 404

        # A device that goes away makes the agent report itself degraded (503).
        await sim.stop()
        for _ in range(100):
            await asyncio.sleep(0.1)
            status, body = await asyncio.to_thread(get, base + "/health")
            if status == 503:
                break
        assert status == 503 and json.loads(body)["status"] == "degraded"
        # The broker goes away too: what is read stays in the outbox on stop.
        mosquitto.stop()
        agent._on_samples([c.Sample("filler.speed", 1_760_000_000_000, 123.0)])
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    from edge_agent.outbox import Outbox

    with Outbox(tmp_path / "gw" / "outbox.sqlite", agent_id="gw-line1", max_bytes=10**9) as box:
        pending = box.pending(limit=10_000)
    found = [m for m in pending if b'"v":123.0' in m.payload]
    assert found, "the last reading was not flushed to the outbox on stop"
