"""The whole flow: simulated line → agent → Mosquitto → ingest → PostgreSQL rows that match.

The agent and the ingest run as real processes (``linepulse edge run``, ``linepulse ingest
run``); a test subscriber records what went over the broker, and the database must hold
exactly that: every sample once, every count, every state change as intervals.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from edge_agent import contract as c
from edge_agent.simulator import Simulator
from ingest import migrate
from tests.harness import AgentProcess, Collector, Mosquitto, wait_until


def _machine(topic: str) -> str:
    path = c.parse_topic(topic).path
    assert path is not None
    return path.machine


async def _db_caught_up(url: str, seqs: int, *, timeout: float = 60) -> None:
    """Wait until the ingest ledger holds every data message the subscriber saw."""
    for _ in range(int(timeout / 0.25)):
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()
        if row and row[0] >= seqs:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"the ingest did not store {seqs} messages within {timeout}s")


@pytest.mark.slow
async def test_line_to_database(tmp_path: Path, mosquitto: Mosquitto, pg_url: str) -> None:
    migrate.upgrade(pg_url)
    sim = Simulator(opcua_port=0, modbus_port=0, seed=11, tick=0.2)
    await sim.start()
    collector = Collector(mosquitto.url).start()
    env = {
        **os.environ,
        "LINEPULSE_MQTT_URL": mosquitto.url,
        "LINEPULSE_DATABASE_URL": pg_url,
        "LINEPULSE_HEALTH_PORT": "0",
        "LINEPULSE_MQTT_CLIENT_ID": f"ingest-e2e-{os.getpid()}",
        "SIM_OPCUA_PORT": str(sim.opcua_port),
        "SIM_MODBUS_PORT": str(sim.modbus_port),
    }
    with open(tmp_path / "ingest.log", "ab") as log:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "--log-json", "ingest", "run"],
            env=env,
            stdout=log,
            stderr=log,
        )
    agent = AgentProcess(cwd=tmp_path, env=env).start()
    try:
        await wait_until(collector, lambda m: len(m) > 20, timeout=30, what="first messages")
        sim.model.set_state("filler", 21, duration=2.0)
        sim.model.set_state("labeler", 24, duration=1.0)
        await asyncio.sleep(6)
        sim.model.set_state(None, 11)
        await asyncio.sleep(2)
        assert agent.terminate() == 0
        msgs = await wait_until(
            collector,
            lambda m: any(isinstance(x, c.StatusMessage) and x.status == "offline" for _, x in m),
            timeout=20,
            what="the offline status",
        )
        data = [(t, m) for t, m in msgs if isinstance(m, c.SamplesMessage | c.EventsMessage)]
        await _db_caught_up(pg_url, len({m.seq for _, m in data}))
        await asyncio.sleep(1)  # the status message after the last data message
        with psycopg.connect(pg_url) as conn:
            _check_database(conn, data)
            gw = conn.execute("SELECT status FROM gateways WHERE agent = 'gw-line1'").fetchone()
            assert gw == ("offline",)
            units = dict(conn.execute("SELECT name, unit FROM tags").fetchall())
            assert units["filler.temperature"] == "degC" and units["packer.total"] == "parts"
            assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    finally:
        agent.close()
        collector.stop()
        ingest.send_signal(signal.SIGTERM)
        assert ingest.wait(30) == 0
        await sim.stop()


def _check_database(conn: psycopg.Connection, data: list[tuple[str, object]]) -> None:
    samples = [s for _, m in data if isinstance(m, c.SamplesMessage) for s in m.samples]
    numeric = [s for s in samples if not isinstance(s.value, str)]
    text = [s for s in samples if isinstance(s.value, str)]
    assert conn.execute("SELECT count(*) FROM samples").fetchone() == (len(numeric),)
    assert conn.execute("SELECT count(*) FROM samples_text").fetchone() == (len(text),)
    # Values and quality per tag match exactly what went over the wire.
    rows = Counter(
        (name, ts_ms, value, q)
        for name, ts_ms, value, q in conn.execute(
            "SELECT t.name, (extract(epoch FROM s.time) * 1000)::bigint, s.value, s.quality"
            " FROM samples s JOIN tags t ON t.id = s.tag_id"
        )
    )
    quality = {"good": 0, "uncertain": 1, "bad": 2}
    sent = Counter(
        (s.tag, s.ts, None if s.value is None else float(s.value), quality[s.quality.value])
        for s in numeric
    )
    assert rows == sent
    # Counts: per machine, the parts counted in the database equal the count events sent.
    counts: Counter[str] = Counter()
    states: dict[str, list[c.StateEvent]] = {}
    for topic, m in data:
        if isinstance(m, c.EventsMessage):
            for e in m.events:
                if isinstance(e, c.CountEvent):
                    counts[_machine(topic)] += e.total
                else:
                    states.setdefault(_machine(topic), []).append(e)
    stored = dict(
        conn.execute(
            "SELECT a.name, sum(p.total) FROM production_counts p JOIN assets a"
            " ON a.id = p.asset_id GROUP BY a.name"
        ).fetchall()
    )
    assert stored == dict(counts)
    # States: one interval per change, contiguous, the last one open and "break".
    for machine, events in states.items():
        intervals = conn.execute(
            "SELECT i.start_time, i.end_time, i.state, i.reason FROM state_intervals i"
            " JOIN assets a ON a.id = i.asset_id WHERE a.name = %s ORDER BY i.start_time",
            (machine,),
        ).fetchall()
        assert [(i[2], i[3]) for i in intervals] == [(e.state, e.reason) for e in events]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(intervals))
        assert intervals[-1][1] is None and intervals[-1][2] == "break"
    assert any(e.reason == "jam" for e in states["filler"])
    assert any(e.reason == "emergency_stop" for e in states["labeler"])
