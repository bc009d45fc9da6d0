"""End to end: simulated line → agent (a real process) → Mosquitto → a test subscriber.

The simulator runs in the test's event loop so the test can steer it and knows what the
PLCs did; the agent runs as ``linepulse edge run`` with the shipped example config.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge_agent import contract as c
from edge_agent.simulator import Simulator
from tests.harness import AgentProcess, Collector, Mosquitto, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "edge_agent" / "examples" / "gateway.yaml"
Messages = list[tuple[str, object]]


def data(msgs: Messages) -> list[tuple[str, c.SamplesMessage | c.EventsMessage]]:
    return [(t, m) for t, m in msgs if isinstance(m, c.SamplesMessage | c.EventsMessage)]


def machine_of(topic: str) -> str:
    path = c.parse_topic(topic).path
    assert path is not None
    return path.machine


def samples_of(msgs: Messages, tag: str) -> list[c.Sample]:
    return [
        s
        for _, m in data(msgs)
        if isinstance(m, c.SamplesMessage)
        for s in m.samples
        if s.tag == tag
    ]


def events_of(msgs: Messages, machine: str) -> list[c.Event]:
    return [
        e
        for t, m in data(msgs)
        if isinstance(m, c.EventsMessage) and machine_of(t) == machine
        for e in m.events
    ]


def longest_decreasing(xs: list[int]) -> int:
    """Length of the longest strictly decreasing subsequence (patience sorting)."""
    tails: list[int] = []
    for x in xs:
        i = bisect.bisect_left(tails, -x)
        tails[i : i + 1] = [-x]
    return len(tails)


def unique_seqs(msgs: Messages) -> list[int]:
    return sorted({m.seq for _, m in data(msgs)})


@pytest.fixture
def collector(mosquitto: Mosquitto) -> Iterator[Collector]:
    col = Collector(mosquitto.url).start()
    yield col
    col.stop()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(opcua_port=0, modbus_port=0, seed=7, tick=0.2)
    await s.start()
    yield s
    await s.stop()


def agent_env(
    mosquitto: Mosquitto, sim: Simulator, *, modbus_port: int | None = None
) -> dict[str, str]:
    return {
        **os.environ,
        "LINEPULSE_MQTT_URL": mosquitto.url,
        "SIM_OPCUA_PORT": str(sim.opcua_port),
        "SIM_MODBUS_PORT": str(modbus_port or sim.modbus_port),
    }


@pytest.fixture
def agent(tmp_path: Path, mosquitto: Mosquitto, sim: Simulator) -> Iterator[AgentProcess]:
    a = AgentProcess(cwd=tmp_path, env=agent_env(mosquitto, sim))
    yield a
    a.close()


def assert_counts_match_counters(msgs: Messages, machine: str, bits: int) -> None:
    """Sum of count deltas == how far the PLC counter moved between first and last report."""
    totals = [s.value for s in samples_of(msgs, f"{machine}.total") if s.quality is c.Quality.GOOD]
    rejects = [
        s.value for s in samples_of(msgs, f"{machine}.reject") if s.quality is c.Quality.GOOD
    ]
    counts = [e for e in events_of(msgs, machine) if isinstance(e, c.CountEvent)]
    assert totals and counts, f"{machine}: no counter samples or count events"
    assert isinstance(totals[0], int) and isinstance(totals[-1], int)
    moved = (totals[-1] - totals[0]) % 2**bits
    assert sum(e.total for e in counts) == moved, machine
    assert isinstance(rejects[0], int) and isinstance(rejects[-1], int)
    assert sum(e.reject for e in counts) == rejects[-1] - rejects[0], machine
    assert all(e.good + e.reject == e.total and e.total >= 0 for e in counts)


@pytest.mark.slow
async def test_values_states_and_counts_arrive(
    sim: Simulator, agent: AgentProcess, collector: Collector
) -> None:
    # The filler is 40 parts from its 16-bit rollover, so the run crosses it.
    sim.model.set_counter("filler", "total", 65536 - 40)
    await sim.publish()
    agent.start()
    msgs = await wait_until(
        collector,
        lambda m: all(
            samples_of(m, f"{x}.state") for x in ("filler", "capper", "labeler", "packer")
        ),
        timeout=30,
        what="state samples of all four machines",
    )
    birth = [m for _, m in msgs if isinstance(m, c.StatusMessage)]
    assert birth and birth[0].status == "online"
    assert {t.tag for t in birth[0].tags} >= {"filler.state", "packer.total", "labeler.speed"}

    sim.model.set_state("filler", 21, duration=2.0)  # a jam, over OPC UA
    sim.model.set_state("packer", 23, duration=2.0)  # low air, over Modbus
    msgs = await wait_until(
        collector,
        lambda m: (
            any(isinstance(e, c.StateEvent) and e.reason == "jam" for e in events_of(m, "filler"))
            and any(
                isinstance(e, c.StateEvent) and e.reason == "low_air_pressure"
                for e in events_of(m, "packer")
            )
        ),
        timeout=20,
        what="the jam and the low-air fault as state events",
    )
    # Let the line run past the filler's rollover, then stop it so the counters settle.
    await wait_until(
        collector,
        lambda m: any(
            isinstance(s.value, int) and s.value < 1000 for s in samples_of(m, "filler.total")
        ),
        timeout=30,
        what="the filler counter to roll over",
    )
    sim.model.set_state(None, 11)  # a break everywhere: counters stop
    await asyncio.sleep(3)
    assert agent.terminate() == 0
    msgs = collector.snapshot()

    for machine, bits in (("filler", 16), ("capper", 32), ("labeler", 32), ("packer", 32)):
        assert_counts_match_counters(msgs, machine, bits)
        last = samples_of(msgs, f"{machine}.total")[-1].value
        assert last == sim.model.machine(machine).total, machine
        states = [e for e in events_of(msgs, machine) if isinstance(e, c.StateEvent)]
        assert states[-1].state == "break", machine
    # Every value carries a source timestamp close to now, and seqs are unique per message.
    now = time.time() * 1000
    assert all(
        now - 120_000 < s.ts <= now + 1000
        for _, m in data(msgs)
        if isinstance(m, c.SamplesMessage)
        for s in m.samples
    )
    seqs = [m.seq for _, m in data(msgs)]
    assert len(seqs) == len(set(seqs))
    assert seqs == sorted(seqs)
    # A clean stop publishes the retained offline status.
    assert [m for _, m in collector.snapshot() if isinstance(m, c.StatusMessage)][
        -1
    ].status == "offline"
    assert not collector.errors


@pytest.mark.slow
async def test_broker_outage_loses_nothing(
    sim: Simulator, agent: AgentProcess, collector: Collector, mosquitto: Mosquitto
) -> None:
    agent.start()
    await wait_until(collector, lambda m: len(data(m)) >= 5, timeout=30, what="first messages")
    mosquitto.stop()
    outage_start = time.time() * 1000
    sim.model.set_state("capper", 22, duration=5.0)  # a fault while the broker is down
    await asyncio.sleep(30)
    outage_end = time.time() * 1000
    mosquitto.start()
    await asyncio.sleep(8)
    sim.model.set_state(None, 11)
    await asyncio.sleep(2)
    assert agent.terminate() == 0
    msgs = await wait_until(
        collector,
        lambda m: any(isinstance(x, c.StatusMessage) and x.status == "offline" for _, x in m),
        timeout=20,
        what="the offline status after the clean stop",
    )
    seqs = [m.seq for _, m in data(msgs)]
    # Every seq from the first to the last arrived exactly once: nothing lost, nothing doubled.
    assert len(seqs) == len(set(seqs)), "a message arrived twice"
    assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1)), "a message is missing"
    # Values read during the outage arrived, and the fault during it too.
    during = [
        s
        for _, m in data(msgs)
        if isinstance(m, c.SamplesMessage)
        for s in m.samples
        if outage_start < s.ts < outage_end
    ]
    assert len(during) > 50
    assert any(
        isinstance(e, c.StateEvent) and e.reason == "motor_overload"
        for e in events_of(msgs, "capper")
    )
    # Order: live messages go out at once while the backlog replays, each lane in seq order,
    # so the arrival order is a merge of two increasing runs (no decreasing triple).
    assert longest_decreasing(seqs) <= 2, seqs
    for machine, bits in (("filler", 16), ("capper", 32), ("labeler", 32), ("packer", 32)):
        assert_counts_match_counters(msgs, machine, bits)


@pytest.mark.slow
async def test_agent_killed_and_restarted_loses_nothing(
    sim: Simulator, agent: AgentProcess, collector: Collector
) -> None:
    agent.start()
    await wait_until(collector, lambda m: len(data(m)) >= 10, timeout=30, what="first messages")
    agent.kill()
    before = unique_seqs(collector.snapshot())
    await asyncio.sleep(2)
    agent.start()
    await wait_until(
        collector,
        lambda m: len(data(m)) >= len(before) + 10,
        timeout=30,
        what="messages after the restart",
    )
    sim.model.set_state(None, 11)
    await asyncio.sleep(2)
    assert agent.terminate() == 0
    msgs = await wait_until(
        collector,
        lambda m: any(isinstance(x, c.StatusMessage) and x.status == "offline" for _, x in m),
        timeout=20,
        what="the offline status",
    )
    seqs = unique_seqs(msgs)
    assert seqs == list(range(min(seqs), max(seqs) + 1)), "a message is missing"
    assert max(seqs) > max(before), "seq did not keep increasing after the restart"
    # Only what was in flight at the kill may come twice (the ingest dedups (agent, seq)).
    all_seqs = [m.seq for _, m in data(msgs)]
    assert len(all_seqs) - len(seqs) <= 64
    # The retained will told the cloud the gateway went away.
    statuses = [m.status for _, m in msgs if isinstance(m, c.StatusMessage)]
    assert statuses.count("online") >= 2 and "offline" in statuses[:-1]
    for machine, bits in (("filler", 16), ("capper", 32), ("labeler", 32), ("packer", 32)):
        assert_counts_match_counters(msgs, machine, bits)


@pytest.mark.slow
async def test_device_outage_marks_its_tags_bad_and_recovers(
    tmp_path: Path, mosquitto: Mosquitto, collector: Collector
) -> None:
    ua = Simulator(opcua_port=0, modbus_port=None, seed=3, tick=0.2)
    mb = Simulator(opcua_port=None, modbus_port=0, seed=3, tick=0.2)
    await ua.start()
    await mb.start()
    port = mb.modbus_port
    assert port
    env = agent_env(mosquitto, ua, modbus_port=port)
    agent = AgentProcess(cwd=tmp_path, env=env).start()
    try:
        await wait_until(
            collector,
            lambda m: bool(samples_of(m, "packer.state")),
            timeout=30,
            what="Modbus samples",
        )
        await mb.stop()
        t_down = time.time() * 1000
        msgs = await wait_until(
            collector,
            lambda m: any(
                s.quality is c.Quality.BAD and s.ts >= t_down - 1000
                for s in samples_of(m, "packer.state")
            ),
            timeout=30,
            what="packer tags to go bad",
        )
        assert all(
            s.value is None for s in samples_of(msgs, "packer.state") if s.quality is c.Quality.BAD
        )

        # The OPC UA device keeps going meanwhile.
        def ua_samples(m: Messages) -> int:
            return sum(len(samples_of(m, f"filler.{t}")) for t in ("speed", "total", "pressure"))

        n_ua = ua_samples(msgs)
        await wait_until(
            collector,
            lambda m: ua_samples(m) > n_ua + 3,
            timeout=10,
            what="OPC UA samples while the Modbus PLC is down",
        )
        # The PLC comes back (its counters restarted: a reset, never a negative delta).
        mb = Simulator(opcua_port=None, modbus_port=port, seed=3, tick=0.2)
        await mb.start()
        t_up = time.time() * 1000
        msgs = await wait_until(
            collector,
            lambda m: any(
                s.quality is c.Quality.GOOD and s.ts >= t_up for s in samples_of(m, "packer.state")
            ),
            timeout=60,
            what="packer tags to be good again",
        )
        states = [e for e in events_of(msgs, "packer") if isinstance(e, c.StateEvent)]
        assert any(e.state == "unknown" and e.reason == "no data" for e in states)
        counts = [e for e in events_of(msgs, "packer") if isinstance(e, c.CountEvent)]
        assert all(e.total >= 0 and e.reject >= 0 for e in counts)
        assert agent.terminate() == 0
    finally:
        agent.close()
        await mb.stop()
        await ua.stop()
