"""Gateway configuration: one YAML file per gateway, validated on load.

A bad file stops the agent with a message that names the file, the line, the field and
what is wrong (:mod:`edge_agent.config_file` loads it). Values may reference environment
variables (``${NAME}``, ``${NAME:-default}``) so secrets and ports stay out of the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from edge_agent.contract import AssetPath, ContractError, check_reason, check_segment, check_tag
from edge_agent.decode import register_count
from edge_agent.units import Duration, Size


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _segment(value: str, what: str) -> str:
    try:
        return check_segment(value, what=what)
    except ContractError as err:
        raise ValueError(str(err)) from None


# ---------------------------------------------------------------- broker


class TLSConfig(_Model):
    """TLS to the broker; with no files the system trust store is used."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip hostname verification (test rigs only)


class BrokerConfig(_Model):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    tls: TLSConfig | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive: Duration = 30.0
    topic_prefix: str = "linepulse"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(mqtt|mqtts|tcp|ssl)://[^:/\s]+(:\d{1,5})?/?$", v):
            raise ValueError(f"{v!r} is not a broker URL like mqtt://host:1883 or mqtts://host")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return _segment(v, "topic_prefix")

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/").rsplit(":", 1)[0]

    @property
    def use_tls(self) -> bool:
        return self.url.startswith(("mqtts://", "ssl://")) or self.tls is not None

    @property
    def port(self) -> int:
        hostport = self.url.split("://", 1)[1].rstrip("/")
        if ":" in hostport:
            return int(hostport.rsplit(":", 1)[1])
        return 8883 if self.use_tls else 1883


# ---------------------------------------------------------------- agent-wide settings


class AgentConfig(_Model):
    id: str
    data_dir: Path = Path("./data")
    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _segment(v, "agent id")


class LineConfig(_Model):
    """Where this gateway sits in the ISA-95 tree."""

    site: str
    area: str
    line: str

    @field_validator("site", "area", "line")
    @classmethod
    def _seg(cls, v: str) -> str:
        return _segment(v, "asset name")


class PublishConfig(_Model):
    max_batch: int = Field(default=1000, ge=1, le=20000)
    flush_interval: Duration = 0.25
    max_inflight: int = Field(default=64, ge=1, le=65535)
    replay_rate: float = Field(
        default=200.0, gt=0, description="messages a second sent from the backlog after an outage"
    )


class OutboxConfig(_Model):
    max_bytes: Size = 512 * 1024**2
    # When full, the oldest samples go first; events are never dropped (see outbox.py).
    overflow: Literal["drop_oldest_samples"] = "drop_oldest_samples"


class Deadband(_Model):
    absolute: float | None = Field(default=None, ge=0)
    percent: float | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _one(self) -> Deadband:
        if (self.absolute is None) == (self.percent is None):
            raise ValueError("give exactly one of absolute or percent")
        return self


# ---------------------------------------------------------------- tags and devices

ModbusDatatype = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
ByteOrder = Literal["big", "little"]


class _TagBase(_Model):
    name: str
    machine: str | None = None  # defaults to the device's machine
    unit: str | None = Field(default=None, max_length=32)
    scan: str | None = None  # a scan class; defaults to the device's
    deadband: Deadband | None = None
    heartbeat: Duration | None = None  # publish at least this often even when unchanged
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return check_tag(v)
        except ContractError as err:
            raise ValueError(str(err)) from None

    @field_validator("machine")
    @classmethod
    def _machine(cls, v: str | None) -> str | None:
        return None if v is None else _segment(v, "machine")


class ModbusTag(_TagBase):
    table: Literal["coil", "discrete_input", "holding", "input"] = "holding"
    address: int = Field(ge=0, le=65535)
    datatype: ModbusDatatype = "uint16"
    byte_order: ByteOrder = "big"
    word_order: ByteOrder = "big"
    length: int | None = Field(default=None, ge=1, le=125, description="registers of a string")

    @model_validator(mode="after")
    def _shape(self) -> ModbusTag:
        bit_table = self.table in ("coil", "discrete_input")
        if bit_table and self.datatype != "bool":
            raise ValueError(f"a {self.table} holds one bit: datatype must be bool")
        if self.datatype == "string" and self.length is None:
            raise ValueError("a string tag needs length (in registers, two characters each)")
        if self.datatype != "string" and self.length is not None:
            raise ValueError("length applies only to string tags")
        if self.datatype in ("bool", "string") and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset apply to numbers, not to a {self.datatype} tag")
        if self.address + self.register_count > 65536:
            raise ValueError("the tag runs past register 65535")
        return self

    @property
    def register_count(self) -> int:
        """Registers (or bits, for bit tables) this tag occupies."""
        if self.table in ("coil", "discrete_input"):
            return 1
        return register_count(self.datatype, self.length)


class OpcUaTag(_TagBase):
    node: str = Field(description="node id; prefer nsu=<namespace uri>;s=... or ;i=...")
    datatype: str | None = None  # informative; the server's type is used
    sampling_interval: Duration | None = None
    queue_size: int = Field(default=1, ge=1, le=10000)

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if not re.match(r"^(nsu=[^;]+;|ns=\d+;)?(i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=.+)$", v):
            raise ValueError(
                f"{v!r} is not an OPC UA node id: use nsu=<uri>;s=<name>, ns=<index>;i=<n>, ..."
            )
        return v


class _DeviceBase(_Model):
    name: str
    machine: str | None = None  # the machine that tags belong to unless they say otherwise
    scan: str = "default"
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _segment(v, "device name")

    @field_validator("machine")
    @classmethod
    def _machine(cls, v: str | None) -> str | None:
        return None if v is None else _segment(v, "machine")


class ModbusDevice(_DeviceBase):
    protocol: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    timeout: Duration = 2.0
    retries: int = Field(default=1, ge=0, le=10)
    max_gap: int = Field(
        default=16, ge=0, le=124, description="unused registers a single read may span"
    )
    max_registers: int = Field(default=125, ge=1, le=125)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    backoff_max: Duration = 30.0
    tags: list[ModbusTag] = Field(min_length=1)


class OpcUaSecurity(_Model):
    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy and mode must both be None or both be set")
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"policy {self.policy} needs certificate and private_key")
        return self


class OpcUaDevice(_DeviceBase):
    protocol: Literal["opcua"]
    endpoint: str
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval: Duration = 0.5
    timeout: Duration = 4.0
    backoff_max: Duration = 30.0
    max_items_per_subscription: int = Field(default=2000, ge=1)
    tags: list[OpcUaTag] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith("opc.tcp://"):
            raise ValueError(f"{v!r} is not an OPC UA endpoint like opc.tcp://host:4840/path")
        return v


Device = Annotated[ModbusDevice | OpcUaDevice, Field(discriminator="protocol")]


# ---------------------------------------------------------------- machine model


class StateCode(_Model):
    state: str
    reason: str | None = None

    @field_validator("state")
    @classmethod
    def _state(cls, v: str) -> str:
        return _segment(v, "state")


class StateSource(_Model):
    """Where a machine's state comes from: one tag, or an expression over tags."""

    tag: str | None = None
    expression: str | None = None
    codes: dict[int | str, StateCode] = Field(default_factory=dict)
    default: StateCode = StateCode(state="unknown")

    @model_validator(mode="after")
    def _one(self) -> StateSource:
        if (self.tag is None) == (self.expression is None):
            raise ValueError("give exactly one of tag or expression")
        if self.expression is not None:
            self.referenced_tags()  # a disallowed construct fails the load, at its line
        return self

    def referenced_tags(self) -> frozenset[str]:
        """The tags the state is read from: the tag, or the names in the expression."""
        if self.tag is not None:
            return frozenset({self.tag})
        from edge_agent.machine import Expression  # machine imports this module

        return Expression(self.expression or "").names


class Counter(_Model):
    tag: str
    bits: Literal[16, 32, 64] = 32  # the PLC register width, for rollover
    # Parts a second this counter can never exceed; a larger jump is taken as a reset or a
    # bad value, not counted (see edge_agent.counters.CounterTracker).
    max_rate: float | None = Field(default=None, gt=0)


class CountersConfig(_Model):
    total: Counter | None = None
    good: Counter | None = None
    reject: Counter | None = None

    @model_validator(mode="after")
    def _enough(self) -> CountersConfig:
        if len(self.given) < 2 and self.given != {"total"} and self.given != {"good"}:
            raise ValueError("give total, good, or two of total/good/reject")
        return self

    @field_validator("total", "good", "reject", mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        return _counter_shorthand(v)

    @property
    def given(self) -> set[str]:
        """The roles configured."""
        return {k for k in ("total", "good", "reject") if getattr(self, k) is not None}

    @property
    def tags(self) -> list[str]:
        """The tags of the configured counters."""
        return [c.tag for c in (self.total, self.good, self.reject) if c is not None]


def _counter_shorthand(v: Any) -> Any:
    """``underfill: filler.rej_underfill`` is short for ``{tag: filler.rej_underfill}``."""
    return {"tag": v} if isinstance(v, str) else v


def _reason(v: str) -> str:
    try:
        return check_reason(v)
    except ContractError as err:
        raise ValueError(str(err)) from None


RejectReason = Annotated[str, AfterValidator(_reason)]


class MachineConfig(_Model):
    name: str
    state: StateSource | None = None
    counters: CountersConfig | None = None
    # Reject counters per reason (reason -> counter), each a part of the reject count; the
    # same counter semantics as total/good/reject (bits, rollover, reset, max_rate).
    reject_reasons: dict[RejectReason, Counter] | None = None
    product: str | None = None  # tag with the current product code

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _segment(v, "machine")

    @field_validator("reject_reasons", mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {reason: _counter_shorthand(c) for reason, c in v.items()}
        return v

    @model_validator(mode="after")
    def _reasons_have_rejects(self) -> MachineConfig:
        if not self.reject_reasons:
            return self
        given = self.counters.given if self.counters else set()
        if "reject" not in given and not {"total", "good"} <= given:
            raise ValueError(
                "reject_reasons needs counters that give rejects: reject, or total and good"
            )
        seen = set(self.counters.tags if self.counters else [])
        for reason, c in self.reject_reasons.items():
            if c.tag in seen:
                raise ValueError(f"reject_reasons.{reason}: tag {c.tag!r} is already a counter")
            seen.add(c.tag)
        return self

    def counter_tags(self) -> list[str]:
        """Every counter tag of this machine, reject reasons included."""
        tags = self.counters.tags if self.counters else []
        return tags + [c.tag for c in (self.reject_reasons or {}).values()]


# ---------------------------------------------------------------- the file


class GatewayConfig(_Model):
    agent: AgentConfig
    broker: BrokerConfig = BrokerConfig()
    line: LineConfig
    publish: PublishConfig = PublishConfig()
    outbox: OutboxConfig = OutboxConfig()
    scan_classes: dict[str, Duration] = Field(default_factory=lambda: {"default": 1.0})
    heartbeat: Duration = 60.0
    devices: list[Device] = Field(min_length=1)
    machines: list[MachineConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        if "default" not in self.scan_classes:
            self.scan_classes["default"] = 1.0
        seen_devices: set[str] = set()
        tags: set[str] = set()
        for d in self.devices:
            if d.name in seen_devices:
                raise ValueError(f"device name {d.name!r} is used twice")
            seen_devices.add(d.name)
            if d.scan not in self.scan_classes:
                raise ValueError(f"device {d.name!r}: scan class {d.scan!r} is not defined")
            for t in d.tags:
                if t.name in tags:
                    raise ValueError(f"tag name {t.name!r} is used twice")
                tags.add(t.name)
                if t.scan is not None and t.scan not in self.scan_classes:
                    raise ValueError(f"tag {t.name!r}: scan class {t.scan!r} is not defined")
                if (t.machine or d.machine) is None:
                    raise ValueError(
                        f"tag {t.name!r} belongs to no machine: set machine on it or on {d.name!r}"
                    )
        for m in self.machines:
            refs = []
            if m.state:
                refs += sorted(m.state.referenced_tags())
            refs += m.counter_tags()
            if m.product:
                refs.append(m.product)
            for ref in refs:
                if ref not in tags:
                    raise ValueError(
                        f"machine {m.name!r} refers to tag {ref!r}, which no device has"
                    )
        return self

    def machine_path(self, machine: str) -> AssetPath:
        return AssetPath(self.line.site, self.line.area, self.line.line, machine)

    def all_tags(self) -> list[tuple[Device, ModbusTag | OpcUaTag]]:
        return [(d, t) for d in self.devices for t in d.tags]
