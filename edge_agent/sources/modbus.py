"""Modbus TCP source: a read planner and one hub per device.

The planner (:func:`plan_reads`) is pure: it coalesces a device's tag map into the fewest
read requests the protocol allows (125 registers or 2,000 bits a read), reading across
small gaps of unused addresses rather than sending another request.

A :class:`ModbusHub` owns one device's client and a lock, as Home Assistant's modbus hub
does. Each scan class runs its own loop over a plan made once; all loops share the client
under the lock, one request at a time. Device trouble never raises out of :meth:`run`:

- an exception response or a timeout marks only that request's tags bad;
- a value that does not decode marks only that tag bad;
- a lost connection marks every tag of the device bad once, then the hub reconnects with
  exponential backoff capped at ``device.backoff_max``.

Modbus carries no source timestamps: every sample is stamped with the wall-clock time
(UTC, integer ms) at which the response to its read arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException

from edge_agent.config import ModbusDevice, ModbusTag
from edge_agent.contract import Quality, Sample
from edge_agent.decode import decode_registers
from edge_agent.errors import ConfigError, DecodeError
from edge_agent.logs import FailureGate
from edge_agent.metrics import (
    DEVICE_CONNECTED,
    DEVICE_ERRORS,
    DEVICE_READS,
    SAMPLES_READ,
    SCAN_SECONDS,
)

TABLES: Final = ("coil", "discrete_input", "holding", "input")
BIT_TABLES: Final = frozenset({"coil", "discrete_input"})
_BACKOFF_START: Final = 0.25  # seconds before the first reconnect attempt

Sink = Callable[[list[Sample]], None]


# ---------------------------------------------------------------- read planner


@dataclass(frozen=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of ``table`` from ``start``, feeding ``tags``."""

    table: str
    start: int
    count: int
    tags: tuple[ModbusTag, ...]


def tag_width(tag: ModbusTag) -> int:
    """Registers (or bits, in a bit table) a tag occupies."""
    return tag.register_count


def plan_reads(
    tags: Iterable[ModbusTag],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 16,
) -> list[ReadRequest]:
    """Coalesce tags into the fewest reads: per table, never splitting a tag.

    A request spans at most ``max_registers`` registers (``max_bits`` for coils and
    discrete inputs) and reads across at most ``max_gap`` unused addresses in a row.
    Tags may overlap (one register read as two datatypes). Raises ConfigError for a tag
    wider than one read.
    """
    if max_registers < 1 or max_bits < 1 or max_gap < 0:
        raise ConfigError("max_registers and max_bits must be >= 1 and max_gap >= 0")
    by_table: dict[str, list[ModbusTag]] = {}
    for tag in tags:
        by_table.setdefault(tag.table, []).append(tag)
    plan: list[ReadRequest] = []
    for table in TABLES:
        if table in by_table:
            limit = max_bits if table in BIT_TABLES else max_registers
            ordered = sorted(by_table[table], key=lambda t: (t.address, tag_width(t)))
            plan.extend(_coalesce(table, ordered, limit=limit, max_gap=max_gap))
    return plan


def _coalesce(
    table: str, tags: Sequence[ModbusTag], *, limit: int, max_gap: int
) -> list[ReadRequest]:
    """Greedy left to right over tags sorted by address: grow a request while it fits."""
    requests: list[ReadRequest] = []
    group: list[ModbusTag] = []
    start = end = 0
    for tag in tags:
        width = tag_width(tag)
        if width > limit:
            raise ConfigError(
                f"tag {tag.name!r} spans {width} registers, more than one read of {limit}"
            )
        tag_end = tag.address + width
        if group and tag.address - end <= max_gap and max(end, tag_end) - start <= limit:
            group.append(tag)
            end = max(end, tag_end)
            continue
        if group:
            requests.append(ReadRequest(table, start, end - start, tuple(group)))
        group, start, end = [tag], tag.address, tag_end
    if group:
        requests.append(ReadRequest(table, start, end - start, tuple(group)))
    return requests


# ---------------------------------------------------------------- hub


@dataclass(frozen=True)
class _ScanGroup:
    name: str
    period: float
    tags: tuple[ModbusTag, ...]
    plan: tuple[ReadRequest, ...]


class _LinkLost(Exception):
    """The TCP link to the device is gone; the hub reconnects."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _bad(tags: Iterable[ModbusTag], ts: int) -> list[Sample]:
    return [Sample(tag=t.name, ts=ts, value=None, quality=Quality.BAD) for t in tags]


def _exception_name(code: int) -> str:
    try:
        return ExcCodes(code).name
    except ValueError:
        return "unknown"


class ModbusHub:
    """One Modbus TCP device: its client, its lock, one poll loop per scan class."""

    def __init__(
        self,
        device: ModbusDevice,
        *,
        scan_classes: Mapping[str, float],
        sink: Sink,
    ) -> None:
        self.device = device
        self._sink = sink
        self._log = structlog.get_logger("edge_agent.modbus").bind(device=device.name)
        self._groups = self._make_groups(scan_classes)
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._client: AsyncModbusTcpClient | None = None
        self._read_ok = False  # a read succeeded since the last connect
        self._bad_announced = False  # every tag was published bad for this outage
        self._link_gate = FailureGate(self._log, what=f"modbus link to {device.host}:{device.port}")
        self._sink_gate = FailureGate(self._log, what="sample sink")
        self._read_gates: dict[tuple[str, int], FailureGate] = {}
        self._tag_gates: dict[str, FailureGate] = {}
        self._m_reads = DEVICE_READS.labels(device=device.name)
        self._m_errors = DEVICE_ERRORS.labels(device=device.name)
        self._m_connected = DEVICE_CONNECTED.labels(device=device.name)
        self._m_samples = SAMPLES_READ.labels(device=device.name)

    def _make_groups(self, scan_classes: Mapping[str, float]) -> list[_ScanGroup]:
        d = self.device
        by_class: dict[str, list[ModbusTag]] = {}
        for tag in d.tags:
            by_class.setdefault(tag.scan or d.scan, []).append(tag)
        groups = []
        for name, tags in by_class.items():
            period = scan_classes.get(name)
            if period is None or period <= 0:
                raise ConfigError(
                    f"device {d.name!r}: scan class {name!r} has no period > 0"
                    f" (defined: {sorted(scan_classes)})"
                )
            plan = plan_reads(
                tags, max_registers=d.max_registers, max_bits=d.max_bits, max_gap=d.max_gap
            )
            groups.append(_ScanGroup(name, float(period), tuple(tags), tuple(plan)))
        return groups

    @property
    def plans(self) -> dict[str, list[ReadRequest]]:
        """The read plan of each scan class (made once, at construction)."""
        return {g.name: list(g.plan) for g in self._groups}

    @property
    def connected(self) -> bool:
        """True while the TCP link to the device is up."""
        return self._client is not None and bool(self._client.connected)

    async def stop(self) -> None:
        """Stop polling and close the connection; :meth:`run` returns soon after."""
        self._stop.set()
        self._close_client()

    async def run(self) -> None:
        """Poll until cancelled or stopped; device trouble is logged, never raised."""
        if not self.device.enabled:
            self._log.info("modbus device disabled, not polling")
            return
        delay = min(_BACKOFF_START, self.device.backoff_max)
        try:
            while not self._stop.is_set():
                if await self._connect():
                    await self._serve()
                if self._stop.is_set():
                    break
                self._link_down()
                if self._read_ok:  # the link worked: the outage starts now
                    delay = min(_BACKOFF_START, self.device.backoff_max)
                await self._sleep(delay)
                delay = min(delay * 2, self.device.backoff_max)
        finally:
            self._close_client()

    async def _sleep(self, seconds: float) -> None:
        """Wait, but wake at once on stop()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ------------------------------------------------------------ connection

    async def _connect(self) -> bool:
        d = self.device
        # reconnect_delay=0: the hub owns reconnection (with its backoff), not pymodbus.
        client = AsyncModbusTcpClient(
            d.host,
            port=d.port,
            name=d.name,
            timeout=d.timeout,
            retries=d.retries,
            reconnect_delay=0,
        )
        try:
            ok = await asyncio.wait_for(client.connect(), d.timeout + 1.0)
        except (OSError, ModbusException) as err:
            ok, reason = False, str(err) or type(err).__name__
        else:
            reason = "connection refused or timed out"
        if not ok or not client.connected:
            client.close()
            self._m_errors.inc()
            self._link_gate.failed(f"cannot connect: {reason}")
            return False
        self._client = client
        self._read_ok = False
        self._m_connected.set(1)
        self._link_gate.ok()
        self._log.info("modbus connected", host=d.host, port=d.port, unit=d.unit_id)
        return True

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._m_connected.set(0)

    def _link_down(self) -> None:
        """Close the link and publish every tag bad, once per outage."""
        self._close_client()
        if not self._bad_announced:
            self._bad_announced = True
            self._emit(_bad(self.device.tags, _now_ms()))

    async def _serve(self) -> None:
        """Run one loop per scan class until the link is lost or stop() is called."""
        self._lost.clear()
        loops = [
            asyncio.create_task(self._scan_loop(g), name=f"modbus:{self.device.name}:{g.name}")
            for g in self._groups
        ]
        waiters = [asyncio.create_task(self._lost.wait()), asyncio.create_task(self._stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*loops, *waiters):
                task.cancel()
            await asyncio.gather(*loops, *waiters, return_exceptions=True)

    # ------------------------------------------------------------ scanning

    async def _scan_loop(self, group: _ScanGroup) -> None:
        """Scan every period on a fixed grid; an overrun starts the next scan at once."""
        loop = asyncio.get_running_loop()
        histogram = SCAN_SECONDS.labels(device=self.device.name, scan=group.name)
        next_at = loop.time()
        while True:
            began = loop.time()
            try:
                samples = await self._scan(group)
            except _LinkLost as err:
                if self._stop.is_set():  # stop() closed the client under us: not a failure
                    return
                self._m_errors.inc()
                self._link_gate.failed(f"connection lost: {err}")
                self._lost.set()
                return
            except Exception as err:  # a bug must not end polling: log it, mark the scan bad
                self._log.exception("modbus scan failed", scan=group.name, error=str(err))
                samples = _bad(group.tags, _now_ms())
            histogram.observe(loop.time() - began)
            self._emit(samples)
            # Advance on the grid (no drift); after an overrun skip the missed ticks.
            next_at = max(next_at + group.period, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def _scan(self, group: _ScanGroup) -> list[Sample]:
        samples: list[Sample] = []
        for request in group.plan:
            samples.extend(await self._read(request))
        return samples

    async def _read(self, request: ReadRequest) -> list[Sample]:
        """One request under the lock; failures become bad samples for its tags only."""
        d = self.device
        limit = d.timeout * (d.retries + 1) + 1.0  # pymodbus times out first; this is a guard
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                raise _LinkLost("the device closed the connection")
            try:
                response = await asyncio.wait_for(self._call(client, request), limit)
            except ConnectionException as err:
                raise _LinkLost(str(err)) from err
            except (TimeoutError, ModbusException) as err:
                if not client.connected:  # pymodbus drops the link after repeated timeouts
                    raise _LinkLost(str(err) or "no response") from err
                return self._request_failed(request, f"no response: {err}")
            except OSError as err:
                raise _LinkLost(str(err)) from err
        ts = _now_ms()
        if response.isError():
            code = getattr(response, "exception_code", 0)
            return self._request_failed(
                request, f"exception response {code} ({_exception_name(code)})", ts=ts
            )
        self._m_reads.inc()
        self._read_ok = True
        self._bad_announced = False
        gate = self._read_gates.get((request.table, request.start))
        if gate is not None:
            gate.ok(table=request.table, start=request.start)
        return self._decode(request, response, ts)

    def _call(self, client: AsyncModbusTcpClient, request: ReadRequest) -> Any:
        read = {
            "coil": client.read_coils,
            "discrete_input": client.read_discrete_inputs,
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
        }[request.table]
        return read(request.start, count=request.count, device_id=self.device.unit_id)

    def _request_failed(
        self, request: ReadRequest, reason: str, *, ts: int | None = None
    ) -> list[Sample]:
        self._m_errors.inc()
        key = (request.table, request.start)
        gate = self._read_gates.get(key)
        if gate is None:
            gate = self._read_gates[key] = FailureGate(
                self._log, what=f"read of {request.table} {request.start}+{request.count}"
            )
        gate.failed(reason, tags=len(request.tags))
        return _bad(request.tags, _now_ms() if ts is None else ts)

    # ------------------------------------------------------------ decoding

    def _decode(self, request: ReadRequest, response: Any, ts: int) -> list[Sample]:
        bits = request.table in BIT_TABLES
        values = list(response.bits if bits else response.registers)
        samples = []
        good = 0
        for tag in request.tags:
            index = tag.address - request.start
            try:
                if bits:
                    if index >= len(values):
                        raise DecodeError(f"bool: response has {len(values)} bits, not {index + 1}")
                    value: Any = bool(values[index])
                else:
                    value = self._decode_tag(tag, values[index : index + tag_width(tag)])
            except DecodeError as err:
                self._tag_failed(tag, err)
                samples.append(Sample(tag=tag.name, ts=ts, value=None, quality=Quality.BAD))
                continue
            gate = self._tag_gates.get(tag.name)
            if gate is not None:
                gate.ok(tag=tag.name)
            samples.append(Sample(tag=tag.name, ts=ts, value=value))
            good += 1
        self._m_samples.inc(good)
        return samples

    @staticmethod
    def _decode_tag(tag: ModbusTag, regs: Sequence[int]) -> Any:
        return decode_registers(
            regs,
            datatype=tag.datatype,
            byte_order=tag.byte_order,
            word_order=tag.word_order,
            scale=tag.scale,
            offset=tag.offset,
        )

    def _tag_failed(self, tag: ModbusTag, err: DecodeError) -> None:
        gate = self._tag_gates.get(tag.name)
        if gate is None:
            gate = self._tag_gates[tag.name] = FailureGate(self._log, what=f"decode of {tag.name}")
        gate.failed(err, tag=tag.name, address=tag.address, table=tag.table)

    def _emit(self, samples: list[Sample]) -> None:
        if not samples:
            return
        try:
            self._sink(samples)
        except Exception as err:  # the consumer's failure must not stop polling
            self._sink_gate.failed(err)
        else:
            self._sink_gate.ok()
