"""The edge agent: sources → tag engine and machine models → batches → outbox → MQTT.

One asyncio loop runs the device sources (a Modbus hub or an OPC UA client per device)
and a flush loop. Sources hand their samples to ``_on_samples``; the tag engine keeps
those that pass report-by-exception, the machine models turn state and counter tags into
events. Every ``publish.flush_interval`` (or sooner when a batch is full) the pending
samples and events are written to the outbox in one transaction, and the publisher
thread sends them to the broker and deletes them when acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import structlog

from edge_agent import contract
from edge_agent.config import GatewayConfig, ModbusDevice, OpcUaDevice
from edge_agent.contract import Event, Kind, Sample, TagInfo
from edge_agent.engine import TagEngine
from edge_agent.health import HealthServer
from edge_agent.logs import FailureGate
from edge_agent.machine import MachineModel
from edge_agent.metrics import EVENTS_EMITTED, SAMPLES_REPORTED
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher

log = structlog.get_logger("edge_agent")


class Source(Protocol):
    """What the agent needs of a device source."""

    async def run(self) -> None: ...
    async def stop(self) -> None: ...
    @property
    def connected(self) -> bool: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Agent:
    """One gateway: its devices, its outbox and its broker link."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        config.agent.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(
            config.agent.data_dir / "outbox.sqlite",
            agent_id=config.agent.id,
            max_bytes=config.outbox.max_bytes,
        )
        self.engine = TagEngine(config)
        self.machines = [MachineModel(m) for m in config.machines]
        self._machine_of_tag = {
            t.name: (t.machine or d.machine or "") for d, t in config.all_tags()
        }
        self._listeners: dict[str, list[MachineModel]] = defaultdict(list)
        for m in self.machines:
            for tag in m.tags:
                self._listeners[tag].append(m)
        self._topics = {
            name: {
                kind: contract.machine_topic(
                    config.broker.topic_prefix, config.machine_path(name), kind
                )
                for kind in Kind
            }
            for name in {*self._machine_of_tag.values(), *(m.name for m in config.machines)}
        }
        self.sources: dict[str, Source] = {
            d.name: _make_source(d, config, self._on_samples) for d in config.devices if d.enabled
        }
        self.publisher = Publisher(
            config.broker,
            agent_id=config.agent.id,
            outbox=self.outbox,
            publish=config.publish,
            birth=self.birth_payload,
        )
        self._samples: dict[str, list[Sample]] = defaultdict(list)
        self._events: dict[str, list[Event]] = defaultdict(list)
        self._pending = 0
        self._full = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._health: HealthServer | None = None
        self._flush_gate = FailureGate(log, what="writing to the outbox")
        self._last_checkpoint: str | None = None
        self._restore()

    # ------------------------------------------------------------ data path

    def _on_samples(self, samples: list[Sample]) -> None:
        """Called by sources on the loop: report by exception, update machine models."""
        for s in self.engine.offer(samples):
            self._samples[self._machine_of_tag.get(s.tag, "")].append(s)
            self._pending += 1
        if self._listeners:
            by_model: dict[int, list[Sample]] = defaultdict(list)
            models: dict[int, MachineModel] = {}
            for s in samples:
                for m in self._listeners.get(s.tag, ()):
                    by_model[id(m)].append(s)
                    models[id(m)] = m
            for key, batch in by_model.items():
                self._add_events(models[key].name, models[key].update(batch))
        if self._pending >= self.config.publish.max_batch:
            self._full.set()

    def _add_events(self, machine: str, events: Iterable[Event]) -> None:
        for e in events:
            self._events[machine].append(e)
            self._pending += 1
            EVENTS_EMITTED.labels(type=e.type).inc()

    def flush(self) -> int:
        """Write what is pending to the outbox (one transaction) and wake the publisher.

        If the outbox cannot take it (disk full, damaged file), everything stays pending and
        the next flush tries again: nothing read is dropped here.
        """
        t = now_ms()
        for m in self.machines:
            self._add_events(m.name, m.flush(t))
        for s in self.engine.heartbeats(t):
            self._samples[self._machine_of_tag.get(s.tag, "")].append(s)
        items: list[tuple[str, Kind, bytes]] = []
        for machine, events in self._events.items():
            topic = self._topics[machine][Kind.EVENTS]
            items += [(topic, Kind.EVENTS, b) for b in self._bodies(Kind.EVENTS, events)]
        reported = 0
        for machine, samples in self._samples.items():
            reported += len(samples)
            topic = self._topics[machine][Kind.SAMPLES]
            items += [(topic, Kind.SAMPLES, b) for b in self._bodies(Kind.SAMPLES, samples)]
        checkpoint = self._checkpoint()
        if items or checkpoint != self._last_checkpoint:
            self.outbox.put(items, checkpoint=checkpoint)
            self._last_checkpoint = checkpoint
        self._samples.clear()
        self._events.clear()
        self._pending = 0
        if items:
            SAMPLES_REPORTED.inc(reported)
            self.publisher.wake()
        return len(items)

    def _bodies(self, kind: Kind, items: Sequence[Sample] | Sequence[Event]) -> list[bytes]:
        """Encoded batches of at most ``max_batch`` items and MAX_PAYLOAD_BYTES each."""
        limit = self.config.publish.max_batch
        out: list[bytes] = []
        todo = [items[i : i + limit] for i in range(0, len(items), limit)]
        while todo:
            chunk = todo.pop(0)
            body = contract.encode_body(kind, chunk)
            if len(body) <= contract.MAX_PAYLOAD_BYTES:
                out.append(body)
            elif len(chunk) > 1:
                half = len(chunk) // 2
                todo[:0] = [chunk[:half], chunk[half:]]
            else:  # one value larger than any broker takes: say which, and go on
                log.error(
                    "value too large to publish; dropped",
                    kind=kind.value,
                    item=repr(chunk[0])[:200],
                    bytes=len(body),
                )
        return out

    def _checkpoint(self) -> str | None:
        if not self.machines:
            return None
        return json.dumps({m.name: m.checkpoint() for m in self.machines}, sort_keys=True)

    def _restore(self) -> None:
        raw = self.outbox.load_checkpoint()
        if raw is None:
            return
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("the counter checkpoint in the outbox is unreadable; starting afresh")
            return
        for m in self.machines:
            if isinstance(data.get(m.name), dict):
                m.restore(data[m.name])
        self._last_checkpoint = raw
        log.info("counters continue from the checkpoint", machines=len(self.machines))

    async def _flush_loop(self) -> None:
        interval = self.config.publish.flush_interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), interval)
            self._full.clear()
            try:
                self.flush()
            except Exception as err:  # the data stays pending for the next try
                self._flush_gate.failed(err)
            else:
                self._flush_gate.ok()

    # ------------------------------------------------------------ lifecycle

    def birth_payload(self) -> bytes:
        """The retained online status, with the tag catalogue for the cloud to register."""
        tags = tuple(
            TagInfo(
                path=self.config.machine_path(t.machine or d.machine or ""),
                tag=t.name,
                datatype=str(getattr(t, "datatype", None) or "variant"),
                unit=t.unit,
            )
            for d, t in self.config.all_tags()
        )
        msg = contract.StatusMessage(
            agent=self.config.agent.id, status="online", ts=now_ms(), tags=tags
        )
        return contract.encode(msg)

    def health(self) -> tuple[bool, dict[str, Any]]:
        devices = {name: s.connected for name, s in self.sources.items()}
        ok = self.publisher.connected and all(devices.values())
        return ok, {
            "agent": self.config.agent.id,
            "broker_connected": self.publisher.connected,
            "devices": devices,
            "outbox_messages": self.outbox.depth,
            "outbox_bytes": self.outbox.size_bytes,
        }

    async def run(self) -> None:
        """Run until ``stop()`` (or cancellation); then flush and close cleanly."""
        cfg = self.config
        log.info(
            "agent starting",
            agent=cfg.agent.id,
            devices=list(self.sources),
            broker=cfg.broker.url,
            outbox=self.outbox.depth,
        )
        if cfg.agent.health_port is not None:
            self._health = HealthServer(
                host=cfg.agent.health_host, port=cfg.agent.health_port, health=self.health
            ).start()
            log.info(
                "health endpoint", url=f"http://{cfg.agent.health_host}:{self._health.port}/health"
            )
        self.publisher.start()
        self._tasks = [
            asyncio.create_task(s.run(), name=f"source:{n}") for n, s in self.sources.items()
        ]
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="flush"))
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler on the loop)."""
        self._stopping.set()

    @property
    def health_port(self) -> int | None:
        return self._health.port if self._health else None

    async def _shutdown(self) -> None:
        self._stopping.set()
        for s in self.sources.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.stop(), 5)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            self.flush()  # what the sources read last goes to disk before we go
        except Exception as err:
            log.error("could not write the last readings to the outbox", error=str(err))
        self.publisher.stop()
        self.outbox.close()
        if self._health:
            self._health.stop()
        log.info("agent stopped", agent=self.config.agent.id)


def _make_source(
    device: ModbusDevice | OpcUaDevice, config: GatewayConfig, sink: Callable[[list[Sample]], None]
) -> Source:
    # Imported here so a gateway with only Modbus devices never imports asyncua (and back).
    if isinstance(device, ModbusDevice):
        from edge_agent.sources.modbus import ModbusHub

        return ModbusHub(device, scan_classes=config.scan_classes, sink=sink)
    from edge_agent.sources.opcua import OpcUaSource

    return OpcUaSource(device, scan_classes=config.scan_classes, sink=sink)
