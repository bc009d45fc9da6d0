"""Modbus TCP: the read planner (pure) and ModbusHub against real pymodbus servers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.config import ModbusDevice, ModbusTag
from edge_agent.contract import Quality, Sample, Value
from edge_agent.decode import encode_value
from edge_agent.errors import ConfigError
from edge_agent.sources.modbus import ModbusHub, ReadRequest, plan_reads, tag_width
from tests.harness import free_port

# ---------------------------------------------------------------- planner


def tag(address: int, datatype: str = "uint16", table: str = "holding", **kw: Any) -> ModbusTag:
    name = kw.pop("name", f"{table}_{address}_{datatype}")
    fields = {"name": name, "table": table, "address": address, "datatype": datatype}
    return ModbusTag.model_validate(fields | kw)


def check_plan(tags: list[ModbusTag], plan: list[ReadRequest], *, limit: int, gap: int) -> None:
    """Every tag in exactly one request that holds it whole; every request within limits."""
    seen = [t.name for r in plan for t in r.tags]
    assert sorted(seen) == sorted(t.name for t in tags)
    for r in plan:
        lim = limit if r.table in ("holding", "input") else 2000
        assert 1 <= r.count <= lim
        used: set[int] = set()
        for t in r.tags:
            assert t.table == r.table
            assert r.start <= t.address and t.address + tag_width(t) <= r.start + r.count
            used.update(range(t.address, t.address + tag_width(t)))
        assert r.start in used and r.start + r.count - 1 in used  # no idle ends
        holes = sorted(set(range(r.start, r.start + r.count)) - used)
        run = longest = 0
        for prev, cur in zip([None, *holes], holes, strict=False):
            run = run + 1 if prev is not None and cur == prev + 1 else 1
            longest = max(longest, run)
        assert longest <= gap


def optimal_count(spans: list[tuple[int, int]], *, limit: int, gap: int) -> int:
    """The fewest requests for non-overlapping (address, width) spans, by dynamic programming."""
    spans = sorted(spans)
    best = [0] + [math.inf] * len(spans)
    for i in range(len(spans)):
        start = spans[i][0]
        for j in range(i, len(spans)):
            if j > i and spans[j][0] - sum(spans[j - 1]) > gap:
                break
            if sum(spans[j]) - start > limit:
                break
            best[j + 1] = min(best[j + 1], best[i] + 1)
    return int(best[-1])


def test_dense_registers_need_ceil_span_over_125() -> None:
    tags = [tag(a) for a in range(1000)]
    plan = plan_reads(tags)
    assert len(plan) == math.ceil(1000 / 125) == 8
    assert [(r.start, r.count) for r in plan] == [(i * 125, 125) for i in range(8)]
    check_plan(tags, plan, limit=125, gap=16)


def test_dense_bits_need_ceil_span_over_2000() -> None:
    tags = [tag(a, "bool", table="coil") for a in range(4500)]
    plan = plan_reads(tags)
    assert [(r.start, r.count) for r in plan] == [(0, 2000), (2000, 2000), (4000, 500)]


def test_wide_tags_are_never_split() -> None:
    # 2-register floats back to back: 62 fit in 124 registers, the 63rd would straddle.
    tags = [tag(2 * i, "float32") for i in range(200)]
    plan = plan_reads(tags)
    assert len(plan) == math.ceil(200 / 62)
    check_plan(tags, plan, limit=125, gap=16)
    assert all(r.count <= 124 for r in plan)


def test_gaps_up_to_max_gap_are_read_across() -> None:
    tags = [tag(0), tag(17), tag(50)]  # gaps of 16 and 32 unused registers
    plan = plan_reads(tags, max_gap=16)
    assert [(r.start, r.count) for r in plan] == [(0, 18), (50, 1)]
    assert len(plan_reads(tags, max_gap=15)) == 3
    assert len(plan_reads(tags, max_gap=32)) == 1


def test_tables_are_planned_apart_in_order() -> None:
    tags = [
        tag(5, table="input"),
        tag(5),
        tag(5, "bool", table="coil"),
        tag(5, "bool", table="discrete_input"),
    ]
    plan = plan_reads(tags)
    assert [r.table for r in plan] == ["coil", "discrete_input", "holding", "input"]
    assert all((r.start, r.count) == (5, 1) for r in plan)


def test_overlapping_tags_share_a_read() -> None:
    tags = [
        tag(10, "uint32", name="as_u32"),
        tag(10, "float32", name="as_f32"),
        tag(11, "uint16", name="low_word"),
        tag(10, "string", length=4, name="as_text"),
    ]
    plan = plan_reads(tags)
    assert len(plan) == 1 and (plan[0].start, plan[0].count) == (10, 4)
    check_plan(tags, plan, limit=125, gap=16)


def test_smaller_limits_and_too_wide_tags() -> None:
    tags = [tag(a) for a in range(100)]
    assert len(plan_reads(tags, max_registers=10)) == 10
    with pytest.raises(ConfigError, match="spans 20 registers"):
        plan_reads([tag(0, "string", length=20)], max_registers=10)


@st.composite
def tag_maps(draw: st.DrawFn, *, overlap: bool) -> list[ModbusTag]:
    """Random register maps; without overlap every tag starts after the previous ends."""
    tags: list[ModbusTag] = []
    address = {"holding": 0, "input": 0, "coil": 0}
    for i in range(draw(st.integers(1, 120))):
        table = draw(st.sampled_from(["holding", "input", "coil"]))
        datatype = (
            "bool"
            if table == "coil"
            else draw(st.sampled_from(["uint16", "int32", "float32", "float64", "string"]))
        )
        length = draw(st.integers(1, 30)) if datatype == "string" else None
        step = draw(st.integers(-4 if overlap else 0, 40))
        start = max(0, address[table] + step)
        t = tag(start, datatype, table, length=length, name=f"t{i}")
        address[table] = start + (0 if overlap else tag_width(t))
        tags.append(t)
    return tags


@settings(max_examples=200, deadline=None)
@given(tag_maps(overlap=True), st.integers(4, 125), st.integers(0, 30))
def test_plan_covers_every_tag_once_within_limits(
    tags: list[ModbusTag], limit: int, gap: int
) -> None:
    limit = max([limit, *(tag_width(t) for t in tags if t.table != "coil")])
    plan = plan_reads(tags, max_registers=limit, max_gap=gap)
    check_plan(tags, plan, limit=limit, gap=gap)


@settings(max_examples=200, deadline=None)
@given(tag_maps(overlap=False), st.integers(30, 125), st.integers(0, 30))
def test_plan_is_minimal_for_non_overlapping_maps(
    tags: list[ModbusTag], limit: int, gap: int
) -> None:
    plan = plan_reads(tags, max_registers=limit, max_gap=gap)
    for table in ("holding", "input", "coil"):
        spans = [(t.address, tag_width(t)) for t in tags if t.table == table]
        lim = 2000 if table == "coil" else limit
        got = sum(1 for r in plan if r.table == table)
        assert got == optimal_count(spans, limit=lim, gap=gap)


# ---------------------------------------------------------------- a real server

FC_WRITE = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}  # the store's block ids


class SimServer:
    """A pymodbus TCP server on a loopback port that a test can stop and restart."""

    def __init__(self, devices: list[SimDevice], *, port: int | None = None) -> None:
        self.devices = devices
        self.port = port or free_port()
        self.server: ModbusTcpServer | None = None

    async def start(self) -> SimServer:
        self.server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    async def set(
        self, unit: int, table: str, address: int, values: list[int] | list[bool]
    ) -> None:
        """Write straight into the datastore (also input registers and discrete inputs)."""
        assert self.server is not None
        await self.server.async_setValues(unit, FC_WRITE[table], address, values)

    async def put(self, unit: int, t: ModbusTag, value: Value) -> None:
        """Store a tag's value encoded the way the tag declares it."""
        if t.table in ("coil", "discrete_input"):
            await self.set(unit, t.table, t.address, [bool(value)])
            return
        regs = encode_value(
            value,
            datatype=t.datatype,
            byte_order=t.byte_order,
            word_order=t.word_order,
            length=t.length,
            scale=t.scale,
            offset=t.offset,
        )
        await self.set(unit, t.table, t.address, regs)


def sim_device(
    unit: int, *, registers: int = 200, hole: tuple[int, int] | None = None, action: Any = None
) -> SimDevice:
    """A device with 256 coils and discrete inputs, and ``registers`` holding and input
    registers; addresses inside ``hole`` (start, end) do not exist."""
    blocks: list[SimData] = []
    if hole is None:
        blocks.append(SimData(0, count=registers, values=0, datatype=DataType.REGISTERS))
    else:
        blocks.append(SimData(0, count=hole[0], values=0, datatype=DataType.REGISTERS))
        blocks.append(
            SimData(hole[1], count=registers - hole[1], values=0, datatype=DataType.REGISTERS)
        )
    bits = [SimData(0, count=256, values=False, datatype=DataType.BITS)]
    inputs = [SimData(0, count=registers, values=0, datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=(bits, list(bits), blocks, inputs), action=action)


def device(port: int, tags: list[ModbusTag], **kw: Any) -> ModbusDevice:
    opts: dict[str, Any] = {
        "name": "plc1",
        "unit_id": 1,
        "timeout": 0.5,
        "retries": 0,
        "backoff_max": 0.4,
    } | kw
    return ModbusDevice(
        protocol="modbus", host="127.0.0.1", port=port, machine="press1", tags=tags, **opts
    )


class Collector:
    """The hub's sink: keeps every batch with the time it came."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[Sample]]] = []

    def __call__(self, samples: list[Sample]) -> None:
        self.batches.append((time.monotonic(), samples))

    def latest(self) -> dict[str, Sample]:
        out: dict[str, Sample] = {}
        for _, batch in self.batches:
            out.update({s.tag: s for s in batch})
        return out

    def since(self, mark: int) -> list[list[Sample]]:
        return [b for _, b in self.batches[mark:]]


async def eventually(check: Callable[[], bool], *, timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.02)


def all_good(sink: Collector, names: Iterable[str], mark: int = 0) -> Callable[[], bool]:
    """True once a batch after ``mark`` holds every name with good quality."""
    wanted = set(names)

    def check() -> bool:
        for batch in sink.since(mark):
            good = {s.tag for s in batch if s.quality is Quality.GOOD}
            if wanted <= good:
                return True
        return False

    return check


@contextlib.asynccontextmanager
async def running(hub: ModbusHub) -> AsyncIterator[asyncio.Task[None]]:
    """Run the hub for the block; stop it and wait for run() to return afterwards."""
    task = asyncio.create_task(hub.run())
    try:
        yield task
    finally:
        await hub.stop()
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def servers() -> AsyncIterator[list[SimServer]]:
    """Servers a test starts; all are shut down afterwards."""
    started: list[SimServer] = []
    yield started
    for s in started:
        await s.stop()


async def serve(servers: list[SimServer], devices: list[SimDevice], **kw: Any) -> SimServer:
    server = await SimServer(devices, **kw).start()
    servers.append(server)
    return server


def device_errors(name: str) -> float:
    value = REGISTRY.get_sample_value("linepulse_edge_device_errors_total", {"device": name})
    return value or 0.0


def f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


# ---------------------------------------------------------------- hub against the server

MIXED: list[tuple[ModbusTag, Value]] = [
    (tag(3, "bool", "coil", name="run_cmd"), True),
    (tag(4, "bool", "coil", name="jog_cmd"), False),
    (tag(200, "bool", "discrete_input", name="door_closed"), True),
    (tag(0, "int16", name="i16"), -1234),
    (tag(1, "uint16", name="u16", byte_order="little"), 0x1234),
    (tag(2, "int32", name="i32_cdab", word_order="little"), -123456789),
    (tag(4, "uint32", name="u32_badc", byte_order="little"), 4_000_000_000),
    (tag(6, "int64", name="i64_dcba", byte_order="little", word_order="little"), -(2**62) - 7),
    (tag(10, "uint64", name="u64"), 2**64 - 2),
    (tag(14, "float32", name="f32_abcd"), 123.456),
    (tag(16, "float32", name="f32_cdab", word_order="little"), -0.015625),
    (tag(18, "float64", name="f64_dcba", byte_order="little", word_order="little"), 2.0 / 3),
    (tag(22, "string", name="batch", length=5), "LOT-2024A"),
    (tag(27, "string", name="recipe_le", length=3, byte_order="little"), "PVC"),
    (tag(30, "bool", name="reg_flag"), True),
    (tag(40, "int16", name="temp_c", scale=0.1, offset=-40.0), 21.5),
    (tag(5, "float32", "input", name="pressure_bar"), 6.25),
    (tag(7, "uint16", "input", name="speed_rpm", scale=0.5), 750.0),
]


def expected(t: ModbusTag, value: Value) -> Value:
    return f32(value) if t.datatype == "float32" else value  # type: ignore[arg-type]


async def test_every_table_datatype_and_order_end_to_end(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(7, registers=260)])
    for t, value in MIXED:
        await server.put(7, t, value)
    sink = Collector()
    tags = [t for t, _ in MIXED]
    hub = ModbusHub(device(server.port, tags, unit_id=7), scan_classes={"default": 0.05}, sink=sink)
    assert [r.table for r in hub.plans["default"]] == ["coil", "discrete_input", "holding", "input"]
    before = time.time_ns() // 1_000_000
    async with running(hub):
        await eventually(all_good(sink, [t.name for t in tags]), what="all tags good")
        assert hub.connected
        batch = next(b for b in sink.since(0) if all(s.quality is Quality.GOOD for s in b))
        assert sorted(s.tag for s in batch) == sorted(t.name for t in tags)  # one per tag
        got = {s.tag: s for s in batch}
        for t, value in MIXED:
            sample = got[t.name]
            want = expected(t, value)
            if isinstance(want, float):
                assert isinstance(sample.value, float), t.name
                assert math.isclose(sample.value, want, rel_tol=1e-9), t.name
            else:
                assert sample.value == want and type(sample.value) is type(want), t.name
            assert before <= sample.ts <= time.time_ns() // 1_000_000
        # values are read live, every scan
        mark = len(sink.batches)
        await server.put(7, MIXED[6][0], 42)
        await server.set(7, "coil", 3, [False])
        await eventually(
            lambda: any(
                {(s.tag, s.value) for s in b} >= {("u32_badc", 42), ("run_cmd", False)}
                for b in sink.since(mark)
            ),
            what="new values",
        )


async def test_unit_id_selects_the_device(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(7), sim_device(9)])
    await server.set(7, "holding", 10, [700])
    await server.set(9, "holding", 10, [900])
    sinks = {unit: Collector() for unit in (7, 9, 5)}
    hubs = [
        ModbusHub(
            device(server.port, [tag(10, name=f"level_{u}")], unit_id=u, name=f"plc{u}"),
            scan_classes={"default": 0.05},
            sink=sinks[u],
        )
        for u in (7, 9, 5)
    ]
    tasks = [asyncio.create_task(h.run()) for h in hubs]
    try:
        for unit in (7, 9):
            await eventually(all_good(sinks[unit], [f"level_{unit}"]), what=f"unit {unit}")
            assert sinks[unit].latest()[f"level_{unit}"].value == unit * 100
        # unit 5 does not exist: the server answers with an exception, the tag is bad
        await eventually(lambda: "level_5" in sinks[5].latest(), what="unit 5 sample")
        assert sinks[5].latest()["level_5"].quality is Quality.BAD
        assert sinks[5].latest()["level_5"].value is None
    finally:
        for h in hubs:
            await h.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_exception_response_marks_only_that_request_bad(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(1, hole=(100, 120))])
    tags = [
        tag(10, name="before"),
        tag(105, "float32", name="unmapped"),
        tag(106, name="unmapped_too"),
        tag(130, name="after"),
        tag(200, "bool", "coil", name="coil_ok"),
    ]
    await server.set(1, "holding", 10, [11])
    await server.set(1, "holding", 130, [13])
    sink = Collector()
    errors_before = device_errors("plc_holes")
    hub = ModbusHub(
        device(server.port, tags, max_gap=4, name="plc_holes"),
        scan_classes={"default": 0.05},
        sink=sink,
    )
    assert [(r.start, r.count) for r in hub.plans["default"]] == [
        (200, 1),
        (10, 1),
        (105, 2),
        (130, 1),
    ]
    async with running(hub) as task:
        await eventually(lambda: len(sink.batches) >= 4, what="four scans")
        for batch in sink.since(1):
            q = {s.tag: (s.quality, s.value) for s in batch}
            assert q["unmapped"] == q["unmapped_too"] == (Quality.BAD, None)
            assert q["before"] == (Quality.GOOD, 11)
            assert q["after"] == (Quality.GOOD, 13)
            assert q["coil_ok"] == (Quality.GOOD, False)
        assert not task.done() and hub.connected
    assert device_errors("plc_holes") - errors_before >= 4


async def test_decode_failure_marks_one_tag_bad(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(1)])
    tags = [
        tag(0, "float32", name="nan_value"),
        tag(2, name="neighbour"),
        tag(3, "string", length=2, name="garbled"),
        tag(5, "float64", name="fine"),
    ]
    await server.set(1, "holding", 0, [0x7FC0, 0x0000, 77, 0xFFFE, 0x4142])
    await server.set(1, "holding", 5, encode_value(1.5, datatype="float64"))
    sink = Collector()
    hub = ModbusHub(device(server.port, tags), scan_classes={"default": 0.05}, sink=sink)
    assert len(hub.plans["default"]) == 1
    async with running(hub):
        await eventually(lambda: len(sink.batches) >= 2, what="two scans")
        got = sink.latest()
        assert got["nan_value"].quality is Quality.BAD and got["nan_value"].value is None
        assert got["garbled"].quality is Quality.BAD
        assert (got["neighbour"].quality, got["neighbour"].value) == (Quality.GOOD, 77)
        assert (got["fine"].quality, got["fine"].value) == (Quality.GOOD, 1.5)
        # the device repairs the value: the tag comes back good
        await server.set(1, "holding", 0, encode_value(2.5, datatype="float32"))
        await eventually(all_good(sink, ["nan_value"]), what="nan_value recovers")
        assert sink.latest()["nan_value"].value == 2.5


async def test_timeout_marks_only_that_request_bad(servers: list[SimServer]) -> None:
    release = asyncio.Event()

    async def stuck_range(
        fc: int, _start: int, address: int, _count: int, _regs: list[int], values: Any
    ) -> ExcCodes | None:
        # Hang reads from 150 up until the test ends. (They must not answer late: this
        # pymodbus server stamps a late answer with the newest request's transaction id.)
        if values is None and fc == 3 and address >= 150:
            await release.wait()
        return None

    server = await serve(servers, [sim_device(1, action=stuck_range)])
    await server.set(1, "holding", 10, [5])
    tags = [tag(10, name="quick"), tag(150, name="stuck")]
    sink = Collector()
    hub = ModbusHub(
        device(server.port, tags, timeout=0.3), scan_classes={"default": 0.1}, sink=sink
    )
    try:
        async with running(hub) as task:
            await eventually(lambda: len(sink.batches) >= 4, timeout=10, what="four scans")
            assert not task.done() and hub.connected
    finally:
        release.set()
    for batch in sink.since(0):
        got = {s.tag: (s.quality, s.value) for s in batch}
        assert got == {"quick": (Quality.GOOD, 5), "stuck": (Quality.BAD, None)}


async def test_outage_marks_bad_once_then_recovers_while_other_hub_goes_on(
    servers: list[SimServer],
) -> None:
    dead = await serve(servers, [sim_device(1)])
    alive = await serve(servers, [sim_device(1)])
    await dead.set(1, "holding", 0, [1, 2])
    await alive.set(1, "input", 0, [3])
    tags_a = [tag(0, name="a0"), tag(1, name="a1"), tag(9, "bool", "coil", name="a_coil")]
    sink_a, sink_b = Collector(), Collector()
    classes = {"fast": 0.05}
    hub_a = ModbusHub(
        device(dead.port, tags_a, name="plc_a", scan="fast"), scan_classes=classes, sink=sink_a
    )
    hub_b = ModbusHub(
        device(alive.port, [tag(0, table="input", name="b0")], name="plc_b", scan="fast"),
        scan_classes=classes,
        sink=sink_b,
    )
    task_a = asyncio.create_task(hub_a.run())
    task_b = asyncio.create_task(hub_b.run())
    try:
        await eventually(all_good(sink_a, ["a0", "a1", "a_coil"]), what="a good")
        await eventually(all_good(sink_b, ["b0"]), what="b good")
        await dead.stop()
        mark_a = len(sink_a.batches)
        await eventually(
            lambda: any(
                all(s.quality is Quality.BAD for s in b) and len(b) == 3
                for b in sink_a.since(mark_a)
            ),
            what="a all bad",
        )
        assert not hub_a.connected
        mark_b = len(sink_b.batches)
        await asyncio.sleep(1.5)  # the outage: several backoff rounds of plc_a
        assert not task_a.done()
        assert [len(b) for b in sink_a.since(mark_a)] == [3]  # bad once, no spinning
        b_during = sink_b.since(mark_b)
        assert len(b_during) >= 10 and all(s.quality is Quality.GOOD for b in b_during for s in b)
        await dead.start()  # same port; a restarted server starts from fresh memory
        await dead.set(1, "holding", 1, [22])
        mark_a = len(sink_a.batches)
        await eventually(all_good(sink_a, ["a0", "a1", "a_coil"], mark_a), what="a recovers")
        await eventually(lambda: sink_a.latest()["a1"].value == 22, what="a1 read again")
        assert hub_a.connected
    finally:
        await hub_a.stop()
        await hub_b.stop()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), 5)


async def test_dead_from_start_backs_off_and_connects_when_device_appears(
    servers: list[SimServer],
) -> None:
    port = free_port()
    sink = Collector()
    before = device_errors("plc_late")
    hub = ModbusHub(
        device(port, [tag(0, name="late")], name="plc_late", backoff_max=0.4),
        scan_classes={"default": 0.05},
        sink=sink,
    )
    async with running(hub) as task:
        await eventually(lambda: len(sink.batches) == 1, what="one all-bad batch")
        await asyncio.sleep(1.2)
        # backoff 0.25, 0.4, 0.4, ...: a handful of attempts, not a spin
        assert 2 <= device_errors("plc_late") - before <= 6
        assert len(sink.batches) == 1 and sink.batches[0][1][0].quality is Quality.BAD
        assert not task.done() and not hub.connected
        server = await serve(servers, [sim_device(1)], port=port)
        await server.set(1, "holding", 0, [99])
        await eventually(all_good(sink, ["late"]), what="good once the device is up")
        assert sink.latest()["late"].value == 99


async def test_scan_classes_poll_at_their_own_rates(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(1)])
    tags = [
        tag(0, name="fast_tag", scan="fast"),
        tag(1, name="slow_tag", scan="slow"),
        tag(2, name="default_tag"),
    ]
    sink = Collector()
    hub = ModbusHub(
        device(server.port, tags),
        scan_classes={"fast": 0.05, "slow": 0.4, "default": 0.2},
        sink=sink,
    )
    assert sorted(hub.plans) == ["default", "fast", "slow"]
    async with running(hub):
        await asyncio.sleep(1.25)
    counts = {
        name: sum(1 for _, b in sink.batches if b[0].tag == name)
        for name in ("fast_tag", "slow_tag", "default_tag")
    }
    assert all(len(b) == 1 for _, b in sink.batches)  # one batch per scan class per scan
    # 1.25 s at 0.05, 0.4 and 0.2 s, with the scan at t=0: 26, 4 and 7 scans
    assert 15 <= counts["fast_tag"] <= 27
    assert 3 <= counts["slow_tag"] <= 5
    assert 5 <= counts["default_tag"] <= 8


def slow_reads(delay: dict[str, float]) -> Any:
    """A SimDevice action that answers every read after ``delay["s"]`` seconds."""

    async def action(
        _fc: int, _start: int, _address: int, _count: int, _regs: list[int], values: Any
    ) -> ExcCodes | None:
        if values is None and delay["s"]:
            await asyncio.sleep(delay["s"])
        return None

    return action


async def test_overrun_starts_next_scan_at_once_without_catching_up(
    servers: list[SimServer],
) -> None:
    delay = {"s": 0.1}
    server = await serve(servers, [sim_device(1, action=slow_reads(delay))])
    sink = Collector()
    hub = ModbusHub(
        device(server.port, [tag(0, name="slow_read")], timeout=1.0),
        scan_classes={"default": 0.02},
        sink=sink,
    )
    async with running(hub):
        await eventually(lambda: len(sink.batches) >= 8, what="eight slow scans")
        times = [t for t, _ in sink.batches[1:8]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # each scan takes ~0.1 s, five periods: back to back, never idle
        assert all(0.09 <= g <= 0.2 for g in gaps), gaps
        delay["s"] = 0.0  # the device is fast again
        await asyncio.sleep(0.05)
        mark = len(sink.batches)
        await asyncio.sleep(0.2)
        # ~10 scans at the 0.02 s period; a loop that made up the ~30 missed ticks would burst
        assert len(sink.batches) - mark <= 13


async def test_scans_stay_on_the_grid(servers: list[SimServer]) -> None:
    delay = {"s": 0.02}  # each scan takes 0.02 s of a 0.05 s period
    server = await serve(servers, [sim_device(1, action=slow_reads(delay))])
    sink = Collector()
    hub = ModbusHub(
        device(server.port, [tag(0, name="steady")]), scan_classes={"default": 0.05}, sink=sink
    )
    async with running(hub):
        await eventually(lambda: len(sink.batches) >= 21, what="21 scans")
    first, last = sink.batches[0][0], sink.batches[20][0]
    # 20 periods = 1.0 s; sleeping a period after each scan would drift to ~1.4 s
    assert abs((last - first) - 20 * 0.05) < 0.08, last - first


async def test_sink_errors_do_not_stop_polling(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(1)])
    calls: list[int] = []

    def failing_sink(samples: list[Sample]) -> None:
        calls.append(len(samples))
        raise RuntimeError("downstream is broken")

    hub = ModbusHub(
        device(server.port, [tag(0)]), scan_classes={"default": 0.05}, sink=failing_sink
    )
    async with running(hub) as task:
        await eventually(lambda: len(calls) >= 3, what="three scans")
        assert not task.done()


async def test_stop_ends_run_and_closes(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(1)])
    sink = Collector()
    hub = ModbusHub(device(server.port, [tag(0)]), scan_classes={"default": 0.05}, sink=sink)
    task = asyncio.create_task(hub.run())
    await eventually(lambda: hub.connected, what="connected")
    await hub.stop()
    await asyncio.wait_for(task, 2)
    assert not hub.connected
    count = len(sink.batches)
    await asyncio.sleep(0.2)
    assert len(sink.batches) == count


async def test_cancel_ends_run(servers: list[SimServer]) -> None:
    server = await serve(servers, [sim_device(1)])
    hub = ModbusHub(device(server.port, [tag(0)]), scan_classes={"default": 0.05}, sink=Collector())
    task = asyncio.create_task(hub.run())
    await eventually(lambda: hub.connected, what="connected")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert not hub.connected


def test_unknown_scan_class_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scan class 'fast'"):
        ModbusHub(
            device(1502, [tag(0, scan="fast")]), scan_classes={"default": 1.0}, sink=Collector()
        )
