"""Gateway config: valid files load; broken ones are rejected naming file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge_agent.config import GatewayConfig, ModbusDevice, OpcUaDevice
from edge_agent.config_file import load_config
from edge_agent.errors import ConfigError

GOOD = """\
agent:
  id: gw-1
  data_dir: ./data/gw-1
broker:
  url: ${MQTT_URL:-mqtt://127.0.0.1:1883}
  password: ${MQTT_PASSWORD:-}
line: {site: plant1, area: packaging, line: line1}
scan_classes: {fast: 100ms, slow: 5s}
devices:
  - name: plc1
    protocol: modbus
    host: 127.0.0.1
    port: ${MODBUS_PORT:-5020}
    machine: filler
    tags:
      - {name: filler.state, address: 0}
      - {name: filler.total, address: 2, datatype: uint32}
      - {name: filler.temp, address: 8, datatype: float32, word_order: little, scan: fast,
         deadband: {absolute: 0.5}, unit: degC}
  - name: ua1
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840/sim/
    machine: capper
    tags:
      - {name: capper.speed, node: "nsu=urn:linepulse:simulator;s=capper.speed",
         deadband: {percent: 2}}
machines:
  - name: filler
    state:
      tag: filler.state
      codes: {1: {state: running}, 21: {state: faulted, reason: jam}}
    counters: {total: {tag: filler.total, bits: 16}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gateway.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_good_config_loads_with_env(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={"MODBUS_PORT": "1502"})
    assert isinstance(cfg, GatewayConfig)
    plc = cfg.devices[0]
    assert isinstance(plc, ModbusDevice) and plc.port == 1502
    assert isinstance(cfg.devices[1], OpcUaDevice)
    assert cfg.scan_classes == {"fast": 0.1, "slow": 5.0, "default": 1.0}
    assert cfg.broker.port == 1883 and cfg.broker.host == "127.0.0.1"
    assert cfg.broker.password == ""
    assert plc.tags[1].register_count == 2
    assert str(cfg.machine_path("filler")) == "plant1/packaging/line1/filler"


def test_password_never_in_repr(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={"MQTT_PASSWORD": "s3cret"})
    assert cfg.broker.password == "s3cret"
    assert "s3cret" not in repr(cfg)


BROKEN = [
    # (what to replace, with what, expected line, expected words in the message)
    ("  id: gw-1", "  id: gw/1", 2, "agent.id"),
    ("  url: ${MQTT_URL:-mqtt://127.0.0.1:1883}", "  url: http://x", 5, "broker.url"),
    ("    port: ${MODBUS_PORT:-5020}", "    port: 70000", 13, "devices.0.port"),
    ("    port: ${MODBUS_PORT:-5020}", "    port: ${MODBUS_PORT}", 13, "MODBUS_PORT is not set"),
    (
        "      - {name: filler.state, address: 0}",
        "      - {name: filler.state, adress: 0}",
        16,
        "devices.0.tags.0.adress: unknown field",
    ),
    (
        "      - {name: filler.state, address: 0}",
        "      - {name: filler.state, address: 0, datatype: float33}",
        16,
        "devices.0.tags.0.datatype",
    ),
    (
        "      - {name: filler.state, address: 0}",
        "      - {name: filler.state, address: 0, table: coil, datatype: uint16}",
        16,
        "must be bool",
    ),
    (
        "      - {name: filler.state, address: 0}",
        "      - {name: filler.state, address: 0, datatype: string}",
        16,
        "needs length",
    ),
    (
        "      - {name: filler.state, address: 0}",
        "      - {name: filler.state, address: 65535, datatype: uint32}",
        16,
        "runs past",
    ),
    ("    protocol: modbus", "    protocol: profinet", 11, "devices.0"),
    (
        "         deadband: {absolute: 0.5}",
        "         deadband: {absolute: 0.5, percent: 1}",
        19,
        "exactly one of absolute or percent",
    ),
    (
        "    endpoint: opc.tcp://127.0.0.1:4840/sim/",
        "    endpoint: http://127.0.0.1/",
        22,
        "devices.1.endpoint",
    ),
    (
        '      - {name: capper.speed, node: "nsu=urn:linepulse:simulator;s=capper.speed",',
        '      - {name: capper.speed, node: "capper.speed",',
        25,
        "not an OPC UA node id",
    ),
    (
        "scan_classes: {fast: 100ms, slow: 5s}",
        "scan_classes: {fast: soon, slow: 5s}",
        8,
        "scan_classes.fast",
    ),
    ("      tag: filler.state", "      tag: filler.status", None, "refers to tag 'filler.status'"),
    (
        "      - {name: filler.total, address: 2, datatype: uint32}",
        "      - {name: filler.state, address: 2, datatype: uint32}",
        None,
        "used twice",
    ),
    (
        "    counters: {total: {tag: filler.total, bits: 16}}",
        "    counters: {total: {tag: filler.total, bits: 12}}",
        32,
        "bits",
    ),
    (
        "line: {site: plant1, area: packaging, line: line1}",
        "line: {site: plant1, area: packaging}",
        7,
        "line.line: Field required",
    ),
    (
        "         deadband: {absolute: 0.5}, unit: degC}",
        "         deadband: {absolute: 0.5}, unit: degC, scan: turbo}",
        None,
        "scan class 'turbo' is not defined",
    ),
]


@pytest.mark.parametrize(("old", "new", "line", "words"), BROKEN)
def test_broken_configs_name_the_field(
    tmp_path: Path, old: str, new: str, line: int | None, words: str
) -> None:
    assert old in GOOD, old
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert str(path) in msg
    assert words in msg, msg
    if line is not None:
        assert f"{path}:{line}:" in msg, msg


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  data_dir: ./data/gw-1", "  data_dir: [oops"))
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_config(path, env={})


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_agent.cli import main

    assert main(["edge", "check", "--config", str(write(tmp_path, GOOD))]) == 0
    assert "OK" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("  id: gw-1", "  id: gw/1"))
    assert main(["edge", "check", "--config", str(bad)]) == 2
    assert "agent.id" in capsys.readouterr().err
