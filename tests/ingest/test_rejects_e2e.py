"""Rejects by reason from the PLC to the database: simulated line → agent (a real process,
killed once) → Mosquitto → ingest (a real process, killed once) → production_rejects.

The database must hold exactly what the PLCs' reason counters moved: every reason part once,
through a 16-bit rollover, an agent restart from its checkpoint, and ingest redeliveries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import signal
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from edge_agent import contract as c
from edge_agent.simulator import DEFAULT_LINE, Code, LineModel, Simulator
from ingest import migrate
from tests.harness import AgentProcess, Collector, Mosquitto, wait_until
from tests.ingest.test_service import _probe, _service_env, _start_service

REASON_MACHINES = {s.name: s for s in DEFAULT_LINE if s.reject_reasons}
# Fast and error-prone machines that never fault on their own: many rejects in seconds.
LINE = tuple(
    dataclasses.replace(s, rate=600.0 + 30 * i, reject_ratio=0.25, mtbf=1e9)
    for i, s in enumerate(DEFAULT_LINE)
)


def _unique(msgs: list[tuple[str, object]]) -> dict[int, tuple[str, c.EventsMessage]]:
    """Events messages by seq: what the agent re-sent after its kill counts once."""
    return {m.seq: (t, m) for t, m in msgs if isinstance(m, c.EventsMessage)}


def _readings(msgs: list[tuple[str, object]], tag: str) -> list[int]:
    """The good values of a counter tag in source-time order, each message counted once."""
    unique = {m.seq: m for _, m in msgs if isinstance(m, c.SamplesMessage)}
    samples = sorted(
        (s.ts, s.value)
        for m in unique.values()
        for s in m.samples
        if s.tag == tag and s.quality is c.Quality.GOOD
    )
    values = [v for _, v in samples]
    assert len(values) >= 2 and all(isinstance(v, int) for v in values), tag
    return values  # type: ignore[return-value]


def _moved(values: list[int], bits: int) -> int:
    """How far a counter moved over its readings (it only counts up, and may wrap)."""
    return sum((b - a) % 2**bits for a, b in itertools.pairwise(values))


async def _ledger(url: str, seqs: int, *, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.25)):
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM ingest_ledger WHERE agent = 'gw-line1'")
            if (got := row.fetchone()) and got[0] >= seqs:
                return
        await asyncio.sleep(0.25)
    raise AssertionError(f"the ingest did not store {seqs} messages within {timeout}s")


@pytest.mark.slow
async def test_rejects_by_reason_from_the_plc_to_the_database(
    tmp_path: Path, mosquitto: Mosquitto, pg_url: str
) -> None:
    migrate.upgrade(pg_url)
    model = LineModel(
        seed=21,
        tick=0.2,
        start=time.time(),
        machines=LINE,
        counters={"labeler.reject.label_missing": 65_530},  # wraps during the run
    )
    model.set_state("labeler", Code.IDLE)  # counts nothing until the agent reads it
    sim = Simulator(opcua_port=0, modbus_port=0, model=model)
    await sim.start()
    collector = Collector(mosquitto.url).start()
    env = _service_env(pg_url, mosquitto, "ingest-rejects-e2e")
    env.update(SIM_OPCUA_PORT=str(sim.opcua_port), SIM_MODBUS_PORT=str(sim.modbus_port))
    ingest = _start_service(env, tmp_path / "ingest.log")
    agent = AgentProcess(cwd=tmp_path, env=env)
    try:
        await asyncio.to_thread(_probe, pg_url, mosquitto)
        agent.start()
        await wait_until(collector, lambda m: len(_unique(m)) > 10, timeout=30, what="events")
        sim.model.set_state("labeler", Code.RUNNING)
        await asyncio.sleep(4)
        agent.kill()  # restarts from the checkpoint in its outbox
        ingest.send_signal(signal.SIGKILL)  # what it had not committed comes again
        ingest.wait(10)
        await asyncio.sleep(1)
        ingest = _start_service(env, tmp_path / "ingest.log")
        agent.start()
        await asyncio.sleep(8)
        sim.model.set_state(None, 11)  # a break: the counters stop
        await asyncio.sleep(2)
        # More rejects without a reason: room for any reason counted after its reject was
        # sent (carried to the next event), so every reason part is sent by the end.
        for name in REASON_MACHINES:
            plc = sim.model.machine(name)
            wrap = 2 ** LINE[plc.index].total_bits
            sim.model.set_counter(name, "reject", plc.reject + 100)
            sim.model.set_counter(name, "total", (plc.total + 100) % wrap)
        await asyncio.sleep(3)
        assert agent.terminate() == 0
        msgs = await wait_until(
            collector,
            lambda m: any(isinstance(x, c.StatusMessage) and x.status == "offline" for _, x in m),
            timeout=20,
            what="the offline status",
        )
        events = _unique(msgs)
        await _ledger(pg_url, len({m.seq for _, m in msgs if hasattr(m, "seq")}))
        with psycopg.connect(pg_url) as conn:
            stored = {
                (machine, reason): n
                for machine, reason, n in conn.execute(
                    "SELECT a.name, r.reason, sum(r.count)::int FROM production_rejects r"
                    " JOIN assets a ON a.id = r.asset_id GROUP BY 1, 2"
                )
            }
            rejects: dict[str, int] = dict(
                conn.execute(
                    "SELECT a.name, sum(p.reject)::int FROM production_counts p"
                    " JOIN assets a ON a.id = p.asset_id GROUP BY 1"
                ).fetchall()
            )
    finally:
        agent.close()
        collector.stop()
        if ingest.poll() is None:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(30)
        await sim.stop()
    sent: Counter[tuple[str, str]] = Counter()
    sent_rejects: Counter[str] = Counter()
    for topic, m in events.values():
        path = c.parse_topic(topic).path
        assert path is not None
        for e in m.events:
            if isinstance(e, c.CountEvent):
                assert sum(n for _, n in e.rejects) <= e.reject
                sent_rejects[path.machine] += e.reject
                sent.update({(path.machine, r): n for r, n in e.rejects})
    moved = {
        (name, reason): _moved(_readings(msgs, f"{name}.reject.{reason}"), spec.reason_bits)
        for name, spec in REASON_MACHINES.items()
        for reason in spec.reject_reasons
    }
    assert all(n > 0 for n in moved.values()), moved
    assert dict(sent) == moved  # the agent sent every reason part, once
    assert stored == moved  # the database holds each once, after the kills
    assert rejects == dict(sent_rejects)
    label = _readings(msgs, "labeler.reject.label_missing")
    assert label[0] == 65_530 > label[-1]  # the 16-bit counter wrapped
