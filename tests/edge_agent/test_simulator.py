"""The simulated line: the pure model, scripts, and both servers read back by real clients."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from pymodbus.client import AsyncModbusTcpClient

from edge_agent.simulator import (
    DEFAULT_LINE,
    NAMESPACE_URI,
    STATE_CODES,
    Code,
    LineModel,
    LineSnapshot,
    ScriptError,
    Simulator,
    SimulatorError,
    load_script,
    parse_script,
    run_simulator,
)
from edge_agent.simulator.tags import MODBUS_POINTS, OPCUA_POINTS, UNIT_ID, value_of

EXAMPLES = Path(__file__).resolve().parents[2] / "edge_agent" / "examples"
SPECS = {spec.name: spec for spec in DEFAULT_LINE}


def per_tick(machine: str, tick: float) -> float:
    """Parts a machine makes per tick at its rated speed (frozen: exactly that)."""
    return SPECS[machine].rate / 60.0 * tick


def trajectory(model: LineModel, ticks: int) -> list[tuple[Any, ...]]:
    """Everything but the timestamps, tick by tick."""
    out = []
    for _ in range(ticks):
        snap = model.step()
        out.append(
            tuple((m.state, m.total, m.reject, m.speed, m.temperature, m.product) for m in snap)
        )
    return out


# ---------------------------------------------------------------- the model


def test_same_seed_same_trajectory_other_seed_differs() -> None:
    a = trajectory(LineModel(seed=7, tick=0.5), 4000)
    b = trajectory(LineModel(seed=7, tick=0.5, start=1.7e9), 4000)  # the start only stamps
    c = trajectory(LineModel(seed=8, tick=0.5), 4000)
    assert a == b
    assert a != c
    states = {s for row in a for s, *_ in row}
    assert Code.RUNNING in states and any(20 <= s <= 29 for s in states)  # it does live


def test_time_is_start_plus_n_ticks() -> None:
    model = LineModel(seed=1, tick=0.25, start=1_700_000_000.0)
    snap = model.run(10)
    assert (snap.n, snap.t, snap.ts) == (10, 2.5, 1_700_000_002.5)
    assert all(m.ts == snap.ts for m in snap)


def test_filler_counter_wraps_at_16_bits_others_at_32() -> None:
    tick = 0.5
    model = LineModel(
        seed=1, tick=tick, frozen=True, counters={"filler.total": 65530, "capper.total": 2**32 - 3}
    )
    model.run(10)
    made = int(10 * per_tick("filler", tick))
    assert made > 6  # enough to wrap
    assert model.machine("filler").total == (65530 + made) % 65536
    assert model.machine("filler").total < 65530
    # the capper (paced by its infeed) counts on past 2**32 - 1 to a few parts
    assert 0 < model.machine("capper").total < 20


def test_counter_limits_and_reset() -> None:
    model = LineModel(seed=1, tick=0.5, frozen=True)
    with pytest.raises(SimulatorError, match=r"16-bit counter.*0\.\.65535"):
        model.set_counter("filler", "total", 65536)
    with pytest.raises(SimulatorError, match=r"no machine 'fillr'.*filler, capper"):
        model.set_counter("fillr", "total", 1)
    model.set_counter("capper", "total", 2**32 - 1)  # 32 bits: fine
    model.run(20)
    assert model.machine("filler").total > 0
    model.reset_counter("filler", "total")
    assert model.machine("filler").total == 0
    assert model.machine("capper").total > 0  # other machines untouched
    model.reset_counter(None)  # every counter of every machine
    assert all(m.total == 0 and m.reject == 0 for m in model.snapshot())
    model.step()
    assert model.machine("filler").total == int(per_tick("filler", 0.5))  # counting resumes


def test_frozen_line_counts_exactly_and_rejects_at_the_ratio() -> None:
    tick = 0.5
    model = LineModel(seed=3, tick=tick, frozen=True)
    first = model.snapshot()
    model.run(1200)  # 10 minutes
    filler = model.machine("filler")
    made = int(1200 * per_tick("filler", tick) + 1e-6)
    assert filler.total == made
    assert filler.reject == int(made * SPECS["filler"].reject_ratio + 1e-6)
    assert filler.temperature == first["filler"].temperature  # no noise while frozen
    assert filler.speed == SPECS["filler"].rate


def test_parts_are_conserved_along_the_line() -> None:
    """A downstream machine never makes more than what reached it (plus its start buffer)."""
    model = LineModel(seed=11, tick=0.5)
    for _ in range(40):
        snap = model.run(360)  # 3 minutes at a time, 2 hours in all
        totals = [m.total for m in snap]
        assert snap["filler"].total < 65536
        for up, down in itertools.pairwise(totals):
            assert down <= up + model.buffer_size / 2 + 1
        assert all(0 <= level <= model.buffer_size for level in model.buffers)


def test_a_stopped_filler_starves_downstream_in_order_and_a_stopped_packer_blocks_upstream() -> (
    None
):
    model = LineModel(seed=1, tick=0.5, frozen=True)
    model.run(20)
    model.set_state("filler", Code.JAM)
    first: dict[str, float] = {}
    for _ in range(600):
        snap = model.step()
        for m in snap:
            if m.state == Code.STARVED:
                first.setdefault(m.name, snap.t)
    assert list(first) == ["capper", "labeler", "packer"]
    assert first["capper"] < first["labeler"] < first["packer"]
    assert first["capper"] > 10.0 + 5  # after a while: the buffer drains first
    model.set_state("filler", Code.RUNNING)
    model.run(40)
    assert all(m.state == Code.RUNNING for m in model.snapshot())

    model.set_state("packer", Code.DOOR_OPEN)
    blocked: dict[str, float] = {}
    for _ in range(600):
        snap = model.step()
        for m in snap:
            if m.state == Code.BLOCKED:
                blocked.setdefault(m.name, snap.t)
    assert list(blocked) == ["labeler", "capper", "filler"]
    assert snap["packer"].state == Code.DOOR_OPEN and snap["packer"].faulted
    assert snap["filler"].speed == 0.0 and not snap["filler"].running


def test_state_api_duration_and_validation() -> None:
    model = LineModel(seed=1, tick=0.5, frozen=True)
    model.set_state("capper", Code.MOTOR_OVERLOAD, duration=3.0)
    assert model.machine("capper").state == Code.MOTOR_OVERLOAD  # shown at once
    model.run(5)
    assert model.machine("capper").state == Code.MOTOR_OVERLOAD
    model.step()  # t = 3.0
    assert model.machine("capper").state == Code.RUNNING
    model.set_state("all", Code.PLANNED_MAINTENANCE)
    assert {m.state for m in model.snapshot()} == {Code.PLANNED_MAINTENANCE}
    with pytest.raises(SimulatorError, match="state code"):
        model.set_state("capper", 70000)
    with pytest.raises(SimulatorError, match="ASCII"):
        model.set_product("SKU-" + "9" * 20)


# ---------------------------------------------------------------- scripts


SCRIPT = {
    "actions": [
        {"at": 0, "freeze": True},
        {"at": "2s", "machine": "filler", "counter": "total", "value": 65000},
        {"at": 5, "machine": "filler", "state": 21, "for": 10},
        {"at": 7.5, "product": "SKU-1043", "order": "ORD-7"},
        {"at": 20, "machine": "capper", "reset": "total"},
        {"at": 25, "machine": "capper", "counter": "reject.cap_skewed", "value": 4_294_967_290},
        {"at": 30, "changeover": "SKU-2210", "order": "ORD-8", "for": "5s"},
        {"at": 40, "freeze": False},
    ]
}


def test_script_actions_happen_at_their_times() -> None:
    tick = 0.5
    model = LineModel(seed=2, tick=tick, script=parse_script(SCRIPT))
    seen: dict[float, LineSnapshot] = {}
    for _ in range(100):
        snap = model.step()
        seen[snap.t] = snap
    step = per_tick("filler", tick)
    assert seen[1.5]["filler"].total == int(3 * step)
    assert seen[2.0]["filler"].total == 65000
    assert seen[4.5]["filler"].state == Code.RUNNING
    assert seen[5.0]["filler"].state == Code.JAM and seen[5.0]["filler"].faulted
    assert seen[5.0]["filler"].total == 65000 + int(6 * step)  # counted up to t = 5
    assert seen[14.5]["filler"].total == seen[5.0]["filler"].total  # jammed: no parts
    assert seen[15.0]["filler"].state == Code.RUNNING
    assert seen[7.0]["labeler"].product == "SKU-1042"
    assert (seen[7.5]["labeler"].product, seen[7.5]["labeler"].order) == ("SKU-1043", "ORD-7")
    assert seen[19.5]["capper"].total > 0 and seen[20.0]["capper"].total == 0
    assert seen[20.0]["labeler"].total > 0
    assert seen[24.5]["capper"].reject_counter("cap_skewed") < 1000
    assert seen[25.0]["capper"].reject_counter("cap_skewed") == 4_294_967_290
    assert {m.state for m in seen[30.0]} == {Code.CHANGEOVER}
    assert {m.product for m in seen[30.0]} == {"SKU-2210"}
    assert {m.state for m in seen[35.0]} == {Code.RUNNING}
    # frozen until 40: no noise on the analogs; then it is back
    assert (
        seen[39.0]["capper"].pressure == seen[39.5]["capper"].pressure == SPECS["capper"].pressure
    )
    assert seen[45.0]["capper"].pressure != seen[45.5]["capper"].pressure


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ({"at": 1, "machine": "filler", "state": 21, "reset": "total"}, "exactly one of"),
        ({"at": 1, "machine": "filler", "counter": "total"}, "counter and value go together"),
        ({"at": 1, "counter": "total", "value": 3}, "counter needs one machine"),
        ({"at": -1, "freeze": True}, "cannot be negative"),
        ({"at": 1, "machine": "filer", "state": 2}, "no machine 'filer' on the line"),
        ({"at": 1, "machine": "filler", "counter": "total", "value": 70000}, "16-bit counter"),
        ({"at": 1, "product": "SKU-" + "1" * 13}, "1..16 ASCII characters"),
        ({"at": 1, "machine": "capper", "state": 21, "for": 0}, "longer than zero"),
        ({"at": 1, "freeze": True, "colour": "red"}, "colour"),
        ({"at": 1, "machine": "filler", "product": "X", "for": 3}, "'for' applies only"),
        ({"at": 1, "machine": "filler", "counter": "good", "value": 1}, "reject.<reason>"),
        ({"at": 1, "machine": "filler", "counter": "reject.", "value": 1}, "reject.<reason>"),
        ({"at": 1, "machine": "filler", "counter": "reject.jam", "value": 1}, "no reject reason"),
        ({"at": 1, "machine": "packer", "counter": "reject.x", "value": 1}, "no reject reason"),
    ],
)
def test_bad_script_actions_are_named(action: dict[str, Any], message: str) -> None:
    with pytest.raises(ScriptError, match=message) as err:
        parse_script({"actions": [{"at": 0, "freeze": True}, action]}, source="s.yaml")
    assert "s.yaml:" in str(err.value) and "actions[1]" in str(err.value)


def test_script_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "actions:\n  - {at: 0, freeze: true}\n\n  - {at: 3, machine: filler, state: x}\n"
    )
    with pytest.raises(ScriptError, match=r"bad\.yaml:4: actions\[1\]: state"):
        load_script(path)
    with pytest.raises(ScriptError, match="cannot read"):
        load_script(tmp_path / "missing.yaml")


def test_example_scenario_runs_as_documented() -> None:
    script = load_script(EXAMPLES / "scenario.yaml")
    model = LineModel(seed=1, tick=0.5, script=script)
    states: dict[str, set[int]] = {name: set() for name in SPECS}
    wrapped = False
    last_filler = model.machine("filler").total
    for _ in range(int(600 / 0.5)):
        snap = model.step()
        for m in snap:
            states[m.name].add(m.state)
        wrapped |= snap["filler"].total < last_filler and snap.t < 240
        last_filler = snap["filler"].total
    assert wrapped
    assert {Code.STARVED, Code.BREAK, Code.CHANGEOVER} <= states["packer"]
    assert {Code.BLOCKED, Code.JAM} <= states["filler"]
    assert Code.DOOR_OPEN in states["packer"]
    assert model.machine("packer").product == "SKU-2210"


# ---------------------------------------------------------------- the servers


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """The server(s) a test names on free ports; time advances only when the test says so."""
    servers = getattr(request, "param", ("opcua", "modbus"))
    simulator = Simulator(
        opcua_port=0 if "opcua" in servers else None,
        modbus_port=0 if "modbus" in servers else None,
        seed=5,
        tick=0.5,
        autostep=False,
    )
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def f32(value: float) -> float:
    """What a float32 register pair holds for ``value``."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def value(dv: ua.DataValue) -> Any:
    assert dv.Value is not None
    return dv.Value.Value


async def read_opcua(endpoint: str) -> dict[str, ua.DataValue]:
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        nodes = [client.get_node(f"ns={ns};s={name}") for name in OPCUA_POINTS]
        values = await client.read_attributes(nodes)
        eu = await client.get_node(f"ns={ns};s=labeler.temperature").get_child("0:EURange")
        values.append(await eu.read_data_value())
    return dict(zip([*OPCUA_POINTS, "labeler.temperature.EURange"], values, strict=True))


@pytest.mark.parametrize("sim", [("opcua",)], indirect=True)
async def test_opcua_serves_the_model_with_types_and_source_timestamps(sim: Simulator) -> None:
    model = sim.model
    model.freeze()
    model.set_state("capper", Code.MOTOR_OVERLOAD)
    model.set_counter("filler", "total", 65535)
    model.set_reason_counter("filler", "underfill", 2**32 - 5)
    model.set_reason_counter("labeler", "label_skewed", 65_000)
    model.set_product("SKU-2210", order="ORD-9")
    snap = await sim.advance(3)
    assert sim.opcua_endpoint == f"opc.tcp://127.0.0.1:{sim.opcua_port}/linepulse/sim/"
    values = await read_opcua(sim.opcua_endpoint)
    types = {
        "UInt16": ua.VariantType.UInt16,
        "UInt32": ua.VariantType.UInt32,
        "Double": ua.VariantType.Double,
        "String": ua.VariantType.String,
        "Boolean": ua.VariantType.Boolean,
    }
    for name, point in OPCUA_POINTS.items():
        dv = values[name]
        assert dv.StatusCode is not None and dv.StatusCode.is_good(), name
        assert dv.Value is not None
        assert dv.Value.Value == value_of(snap[point.machine], point.field, point.reason), name
        assert dv.Value.VariantType == types[point.datatype], name
    assert OPCUA_POINTS["filler.total"].datatype == "UInt16"
    assert value(values["filler.total"]) == (65535 + int(3 * per_tick("filler", 0.5))) % 65536
    assert value(values["capper.state"]) == Code.MOTOR_OVERLOAD
    assert value(values["capper.faulted"]) is True
    eu = value(values["labeler.temperature.EURange"])
    assert (eu.Low, eu.High) == OPCUA_POINTS["labeler.temperature"].eu_range
    # the counter changed in the last tick: stamped with it; the state changed before
    ts_total = values["filler.total"].SourceTimestamp
    assert ts_total is not None and abs(ts_total.timestamp() - snap.ts) < 1e-3

    state_ts = values["capper.state"].SourceTimestamp
    later = await sim.advance(2)
    again = await read_opcua(sim.opcua_endpoint)
    assert again["capper.state"].SourceTimestamp == state_ts  # unchanged: not rewritten
    ts = again["filler.total"].SourceTimestamp
    assert ts is not None and abs(ts.timestamp() - later.ts) < 1e-3


@pytest.mark.parametrize("sim", [("modbus",)], indirect=True)
async def test_modbus_serves_the_register_map(sim: Simulator) -> None:
    sim.set_state("labeler", Code.JAM)
    sim.set_counter("capper", "reject", 2**32 - 1)
    sim.set_counter("filler", "total", 65534)
    sim.model.set_reason_counter("capper", "cap_skewed", 2**32 - 2)
    sim.model.set_reason_counter("labeler", "label_missing", 65_535)
    sim.set_product("SKU-3307", order="ORD-1", machine="packer")
    snap = await sim.advance(4)
    assert (snap["packer"].product, snap["filler"].product) == ("SKU-3307", "SKU-1042")
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.modbus_port or 0)
    await client.connect()
    try:
        for m in snap:
            base = m.index * 100
            rr = await client.read_holding_registers(base, count=38, device_id=UNIT_ID)
            assert not rr.isError(), rr
            regs = rr.registers
            conv = client.convert_from_registers
            dt = client.DATATYPE
            assert regs[0] == m.state and regs[1] == int(m.running)
            if m.name == "filler":
                assert (regs[2], regs[3]) == (m.total, 0)
            else:
                assert conv(regs[2:4], dt.UINT32) == m.total
            assert conv(regs[4:6], dt.UINT32) == m.reject
            assert conv(regs[6:8], dt.FLOAT32) == f32(m.speed)
            assert conv(regs[8:10], dt.FLOAT32) == f32(m.temperature)
            assert conv(regs[10:12], dt.FLOAT32) == f32(m.pressure)
            for k, (_, n) in enumerate(m.rejects):  # reject-reason counters from base+12
                reason = regs[12 + 2 * k : 14 + 2 * k]
                wide = m.name != "labeler"
                assert (conv(reason, dt.UINT32) if wide else reason[0]) == n, m.name
                assert wide or reason[1] == 0
            assert str(conv(regs[20:28], dt.STRING)).rstrip("\0") == m.product
            assert str(conv(regs[30:38], dt.STRING)).rstrip("\0") == m.order
            ir = await client.read_input_registers(base + 6, count=6, device_id=UNIT_ID)
            assert ir.registers == regs[6:12]
            coils = await client.read_coils(m.index * 16, count=2, device_id=UNIT_ID)
            inputs = await client.read_discrete_inputs(m.index * 16, count=2, device_id=UNIT_ID)
            assert coils.bits[:2] == inputs.bits[:2] == [m.running, m.faulted]
        assert snap["labeler"].faulted and not snap["labeler"].running
        gap = await client.read_holding_registers(50, count=2, device_id=UNIT_ID)
        assert gap.isError()  # between machine blocks: illegal address
    finally:
        client.close()
    # every documented point is inside a block that reads
    assert {p.machine for p in MODBUS_POINTS} == set(SPECS)


async def wait_for(check: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s")
        await asyncio.sleep(0.05)


async def test_ticking_servers_follow_the_model() -> None:
    sim = Simulator(opcua_port=0, modbus_port=0, seed=9, tick=0.1)
    await sim.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.modbus_port or 0)
    try:
        await client.connect()

        async def filler_total() -> int:
            rr = await client.read_holding_registers(2, count=1, device_id=UNIT_ID)
            return int(rr.registers[0])

        first = await filler_total()

        async def filler_counted() -> bool:
            return await filler_total() != first

        await wait_for(filler_counted)
        assert sim.model.n > 0
        sim.model.set_state("packer", Code.EMERGENCY_STOP)

        async def packer_faulted() -> bool:
            rr = await client.read_coils(3 * 16 + 1, count=1, device_id=UNIT_ID)
            return bool(rr.bits[0])

        await wait_for(packer_faulted)
        async with Client(sim.opcua_endpoint or "", timeout=5) as ua_client:
            ns = await ua_client.get_namespace_index(NAMESPACE_URI)
            state = await ua_client.get_node(f"ns={ns};s=packer.state").read_value()
        assert state == Code.EMERGENCY_STOP
    finally:
        client.close()
        await sim.stop()


async def test_run_simulator_reports_ports_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    stop = asyncio.Event()
    ready: list[dict[str, Any]] = []

    def on_ready(ports: dict[str, Any]) -> None:
        ready.append(ports)
        stop.set()

    await asyncio.wait_for(
        run_simulator(opcua_port=None, modbus_port=0, seed=1, tick=0.5, ready=on_ready, stop=stop),
        timeout=20,
    )
    assert ready and ready[0]["opcua_port"] is None and ready[0]["modbus_port"] > 0
    out = capsys.readouterr().out
    assert "OPC UA off" in out and f"127.0.0.1:{ready[0]['modbus_port']} unit 1" in out
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", ready[0]["modbus_port"]))


def test_linepulse_simulate_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "s.yaml"
    script.write_text("actions:\n  - {at: 0, freeze: true}\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "simulate",
            "--opcua-port",
            "0",
            "--modbus-port",
            "0",
            "--tick",
            "0.2",
            "--script",
            str(script),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "opc.tcp://127.0.0.1:" in line and "/linepulse/sim/" in line and "Modbus TCP" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_linepulse_simulate_refuses_a_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "s.yaml"
    script.write_text("actions:\n  - {at: 0, machine: nope, state: 1}\n")
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "simulate", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2
    assert "s.yaml:2: actions[0]: no machine 'nope' on the line" in done.stderr


# ---------------------------------------------------------------- security


def make_cert(directory: Path, *, app_uri: str, server: bool) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (DER) and key (PEM)."""
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(app_uri),
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
    ]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = cert_gen.generate_self_signed_app_certificate(
        key, app_uri, {"organizationName": "linepulse tests"}, names, extended=[usage], days=2
    )
    name = "server" if server else "client"
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


async def test_opcua_with_certificates_requires_basic256sha256(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, app_uri=f"{NAMESPACE_URI}:server", server=True)
    client_cert, client_key = make_cert(tmp_path, app_uri="urn:linepulse:test:client", server=False)
    sim = Simulator(
        opcua_port=0, modbus_port=None, autostep=False, certificate=cert, private_key=key
    )
    await sim.start()
    try:
        endpoint = sim.opcua_endpoint or ""
        with pytest.raises(ua.UaError, match="No matching endpoints"):  # None is not offered
            async with Client(endpoint, timeout=3) as plain:
                await plain.get_namespace_index(NAMESPACE_URI)
        secure = Client(endpoint, timeout=5)
        secure.application_uri = "urn:linepulse:test:client"
        await secure.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}"
        )
        async with secure:
            ns = await secure.get_namespace_index(NAMESPACE_URI)
            state = await secure.get_node(f"ns={ns};s=filler.state").read_value()
        assert state == sim.model.machine("filler").state
    finally:
        await sim.stop()


def test_every_state_code_has_a_state_name() -> None:
    assert all(code in STATE_CODES for code in Code)
    assert all(STATE_CODES[c][0] == "faulted" for c in Code if 20 <= c <= 29)
