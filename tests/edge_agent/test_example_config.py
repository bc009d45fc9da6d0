"""The example gateway config loads, and every tag in it exists in the simulator's maps."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient

from edge_agent.config import GatewayConfig, ModbusDevice, OpcUaDevice
from edge_agent.config_file import load_config
from edge_agent.decode import decode_registers
from edge_agent.simulator import DEFAULT_LINE, NAMESPACE_URI, STATE_CODES, Code, Simulator
from edge_agent.simulator.tags import (
    MODBUS_BY_ADDRESS,
    OPCUA_POINTS,
    UNIT_ID,
    ModbusPoint,
    OpcUaPoint,
    value_of,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "edge_agent" / "examples" / "gateway.yaml"
NSU = f"nsu={NAMESPACE_URI};s="
ANALOGS = {"speed", "temperature", "pressure"}


@pytest.fixture(scope="module")
def cfg() -> GatewayConfig:
    return load_config(EXAMPLE, env={})


def opcua_tags(cfg: GatewayConfig) -> list[tuple[OpcUaDevice, Any, OpcUaPoint]]:
    out = []
    for d in cfg.devices:
        if isinstance(d, OpcUaDevice):
            for t in d.tags:
                assert t.node.startswith(NSU), f"{t.name}: use nsu={NAMESPACE_URI};s=..."
                name = t.node.removeprefix(NSU)
                assert name in OPCUA_POINTS, f"{t.name}: node {name!r} is not in the simulator"
                out.append((d, t, OPCUA_POINTS[name]))
    return out


def modbus_tags(cfg: GatewayConfig) -> list[tuple[ModbusDevice, Any, ModbusPoint]]:
    out = []
    for d in cfg.devices:
        if isinstance(d, ModbusDevice):
            assert d.unit_id == UNIT_ID
            for t in d.tags:
                point = MODBUS_BY_ADDRESS.get((t.table, t.address))
                assert point is not None, f"{t.name}: no {t.table} {t.address} in the simulator"
                out.append((d, t, point))
    return out


def test_defaults_and_environment(cfg: GatewayConfig) -> None:
    assert cfg.broker.url == "mqtt://127.0.0.1:1883"
    endpoints = [d.endpoint for d in cfg.devices if isinstance(d, OpcUaDevice)]
    assert endpoints == ["opc.tcp://127.0.0.1:4840/linepulse/sim/"]
    assert [d.port for d in cfg.devices if isinstance(d, ModbusDevice)] == [5020]
    env = {
        "SIM_OPCUA_PORT": "14840",
        "SIM_MODBUS_PORT": "15020",
        "LINEPULSE_MQTT_URL": "mqtt://broker:1884",
    }
    other = load_config(EXAMPLE, env=env)
    assert other.broker.url == "mqtt://broker:1884"
    assert [d.port for d in other.devices if isinstance(d, ModbusDevice)] == [15020]
    assert "127.0.0.1:14840/" in next(
        d.endpoint for d in other.devices if isinstance(d, OpcUaDevice)
    )


def test_every_opcua_tag_is_a_simulator_node(cfg: GatewayConfig) -> None:
    found = opcua_tags(cfg)
    assert {p.machine for _, _, p in found} == {"filler", "capper"}
    for device, tag, point in found:
        assert (tag.machine or device.machine) == point.machine, tag.name
        if point.field in ANALOGS:
            assert tag.deadband is not None, f"{tag.name}: analogs need a deadband"
        if tag.deadband is not None and tag.deadband.percent is not None:
            assert point.eu_range is not None, f"{tag.name}: percent deadband needs EURange"


def test_every_modbus_tag_is_a_simulator_register(cfg: GatewayConfig) -> None:
    found = modbus_tags(cfg)
    assert {p.machine for _, _, p in found} == {"labeler", "packer"}
    for device, tag, point in found:
        assert (tag.machine or device.machine) == point.machine, tag.name
        assert tag.datatype == point.datatype, tag.name
        assert tag.length == point.length, tag.name
        assert (tag.byte_order, tag.word_order) == ("big", "big"), tag.name
        if point.field in ANALOGS:
            assert tag.deadband is not None, f"{tag.name}: analogs need a deadband"


def test_machine_models_match_the_simulated_line(cfg: GatewayConfig) -> None:
    points: dict[str, OpcUaPoint | ModbusPoint] = {t.name: p for _, t, p in opcua_tags(cfg)}
    points.update({t.name: p for _, t, p in modbus_tags(cfg)})
    specs = {spec.name: spec for spec in DEFAULT_LINE}
    assert [m.name for m in cfg.machines] == list(specs)
    for m in cfg.machines:
        assert m.state is not None and m.state.tag is not None
        assert (points[m.state.tag].machine, points[m.state.tag].field) == (m.name, "state")
        codes = {int(code): (sc.state, sc.reason) for code, sc in m.state.codes.items()}
        assert codes == {int(c): v for c, v in STATE_CODES.items()}, m.name
        assert m.counters is not None and m.counters.total and m.counters.reject
        for field, counter in (("total", m.counters.total), ("reject", m.counters.reject)):
            assert (points[counter.tag].machine, points[counter.tag].field) == (m.name, field)
        assert m.counters.total.bits == specs[m.name].total_bits
        assert m.counters.reject.bits == 32
        assert m.product is not None
        assert (points[m.product].machine, points[m.product].field) == (m.name, "product")
        reasons = m.reject_reasons or {}
        assert list(reasons) == list(specs[m.name].reject_reasons), m.name
        for reason, counter in reasons.items():
            point = points[counter.tag]
            assert (point.machine, point.field, point.reason) == (m.name, "reject_reason", reason)
            assert counter.bits == specs[m.name].reason_bits, counter.tag
    assert cfg.machines[0].counters and cfg.machines[0].counters.total
    assert cfg.machines[0].counters.total.bits == 16  # the filler's counter wraps at 65536


def f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


async def test_every_tag_reads_the_simulated_value(cfg: GatewayConfig) -> None:
    """Read each tag of the example the way its config says, from a live simulator."""
    sim = Simulator(opcua_port=0, modbus_port=0, seed=4, autostep=False)
    await sim.start()
    try:
        sim.model.set_state("labeler", Code.SENSOR_FAULT)
        sim.model.set_counter("filler", "total", 65535)
        sim.model.set_reason_counter("labeler", "label_skewed", 65535)
        sim.model.set_reason_counter("capper", "cap_missing", 2**32 - 1)
        snap = await sim.advance(2)
        env = {"SIM_OPCUA_PORT": str(sim.opcua_port), "SIM_MODBUS_PORT": str(sim.modbus_port)}
        live = load_config(EXAMPLE, env=env)
        read: dict[str, tuple[Any, Any]] = {}
        for device, tag, point in opcua_tags(live):
            async with Client(device.endpoint, timeout=5) as client:
                ns = await client.get_namespace_index(NAMESPACE_URI)
                got = await client.get_node(f"ns={ns};s={tag.node.removeprefix(NSU)}").read_value()
            read[tag.name] = (got, value_of(snap[point.machine], point.field, point.reason))
        for mb_device, mb_tag, mb_point in modbus_tags(live):
            got = await read_modbus(mb_device, mb_tag)
            want: Any = value_of(snap[mb_point.machine], mb_point.field, mb_point.reason)
            read[mb_tag.name] = (got, f32(want) if mb_tag.datatype == "float32" else want)
    finally:
        await sim.stop()
    wrong = {name: pair for name, pair in read.items() if pair[0] != pair[1]}
    assert not wrong
    assert len(read) == sum(len(d.tags) for d in cfg.devices)
    assert read["labeler.faulted"] == (True, True)


async def read_modbus(device: ModbusDevice, tag: Any) -> Any:
    client = AsyncModbusTcpClient(device.host, port=device.port)
    await client.connect()
    try:
        kw = {"count": tag.register_count, "device_id": device.unit_id}
        if tag.table == "coil":
            return (await client.read_coils(tag.address, **kw)).bits[0]
        if tag.table == "discrete_input":
            return (await client.read_discrete_inputs(tag.address, **kw)).bits[0]
        if tag.table == "input":
            rr = await client.read_input_registers(tag.address, **kw)
        else:
            rr = await client.read_holding_registers(tag.address, **kw)
        assert not rr.isError(), f"{tag.name}: {rr}"
        return decode_registers(
            rr.registers,
            datatype=tag.datatype,
            byte_order=tag.byte_order,
            word_order=tag.word_order,
        )
    finally:
        client.close()
