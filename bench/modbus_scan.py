"""Benchmark: Modbus read planning and scan time with the real hub against a local server.

Run it as ``python bench/modbus_scan.py`` (from the repository root). It prints:

1. For a 1,000-tag map (mixed datatypes over holding and input registers, in blocks with
   realistic gaps): the requests the planner makes, against the lower bound for the
   125-register limit and the true minimum under the same rules (tags whole, gaps of at
   most ``max_gap`` read across), found by dynamic programming.
2. Scan time of the real ModbusHub over 2,000 registers, and over the 1,000-tag map,
   against a pymodbus server in another process on a loopback port: mean and p95 over
   the scans, taken from the hub's own scan-duration histogram.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from prometheus_client import REGISTRY

from edge_agent.config import ModbusDevice, ModbusTag
from edge_agent.contract import Quality, Sample
from edge_agent.decode import encode_value
from edge_agent.logs import setup_logging
from edge_agent.sources.modbus import ModbusHub, plan_reads, tag_width
from tests.harness import free_port, wait_port

TYPES = ["uint16", "int16", "float32", "int32", "uint32", "bool", "float64", "string", "int64"]
WEIGHTS = [30, 15, 30, 6, 4, 5, 5, 3, 2]
TABLES = ("holding", "input")


# ---------------------------------------------------------------- maps


def realistic_map(n: int = 1000, *, seed: int = 7) -> list[ModbusTag]:
    """Tags in PLC-like blocks: mostly back to back, spare words inside, gaps between."""
    rng = random.Random(seed)
    tags: list[ModbusTag] = []
    cursor = {"holding": 0, "input": 0}
    while len(tags) < n:
        table = rng.choice(["holding", "holding", "holding", "input", "input"])
        for _ in range(rng.randint(5, 60)):
            if len(tags) == n:
                break
            datatype = rng.choices(TYPES, WEIGHTS)[0]
            spare = 0 if rng.random() < 0.8 else rng.randint(1, 4)
            address = cursor[table] + spare
            t = ModbusTag.model_validate(
                {
                    "name": f"{table}_{address}",
                    "table": table,
                    "address": address,
                    "datatype": datatype,
                    "length": 8 if datatype == "string" else None,
                }
            )
            tags.append(t)
            cursor[table] = address + tag_width(t)
        cursor[table] += rng.randint(5, 30) if rng.random() < 0.6 else rng.randint(50, 400)
    return tags


def dense_map(registers: int = 2000) -> list[ModbusTag]:
    """``registers`` registers, half holding (float32) and half input (uint16), no gaps."""
    half = registers // 2
    floats = [
        ModbusTag(name=f"f{i}", table="holding", address=2 * i, datatype="float32")
        for i in range(half // 2)
    ]
    words = [ModbusTag(name=f"w{i}", table="input", address=i) for i in range(half)]
    return floats + words


def sample_value(t: ModbusTag, rng: random.Random) -> Any:
    if t.datatype == "bool":
        return rng.random() < 0.5
    if t.datatype == "string":
        return "LOT" + str(rng.randint(0, 99999))
    if t.datatype.startswith("float"):
        return round(rng.uniform(-1000, 1000), 3)
    return rng.randint(0, 30000)


def register_images(tags: Sequence[ModbusTag], *, seed: int = 1) -> dict[str, list[int]]:
    """The holding and input register contents that hold a value for every tag."""
    rng = random.Random(seed)
    images = {table: [0] * 16 for table in TABLES}
    for t in tags:
        image = images[t.table]
        regs = encode_value(sample_value(t, rng), datatype=t.datatype, length=t.length)
        end = t.address + len(regs)
        if len(image) < end + 16:
            image.extend([0] * (end + 16 - len(image)))
        image[t.address : end] = regs
    return images


# ---------------------------------------------------------------- planning figures


def optimal_requests(spans: list[tuple[int, int]], *, limit: int, gap: int) -> int:
    """Fewest reads for non-overlapping (address, width) spans under the planner's rules."""
    spans = sorted(spans)
    best = [0.0] + [math.inf] * len(spans)
    for i in range(len(spans)):
        for j in range(i, len(spans)):
            if j > i and spans[j][0] - sum(spans[j - 1]) > gap:
                break
            if sum(spans[j]) - spans[i][0] > limit:
                break
            best[j + 1] = min(best[j + 1], best[i] + 1)
    return int(best[-1])


def planning_figures(tags: list[ModbusTag], *, max_gap: int = 16) -> None:
    began = time.perf_counter()
    plan = plan_reads(tags, max_gap=max_gap)
    plan_ms = (time.perf_counter() - began) * 1000
    used = {tb: sum(tag_width(t) for t in tags if t.table == tb) for tb in TABLES}
    spans = {tb: [(t.address, tag_width(t)) for t in tags if t.table == tb] for tb in TABLES}
    lower = sum(math.ceil(n / 125) for n in used.values())
    optimum = sum(optimal_requests(s, limit=125, gap=max_gap) for s in spans.values())
    read = sum(r.count for r in plan)
    print(f"1,000-tag map: {len(tags)} tags, {sum(used.values())} registers used", end="")
    print(f" ({used['holding']} holding, {used['input']} input)")
    print(f"  planner (max_gap={max_gap}):        {len(plan):5d} requests in {plan_ms:.1f} ms")
    print(f"  minimum under the same rules:    {optimum:5d} requests (dynamic programming)")
    print(f"  lower bound ceil(used/125):      {lower:5d} requests (if gaps were free)")
    print(f"  reading across any gap (124):    {len(plan_reads(tags, max_gap=124)):5d} requests")
    print(f"  without reading across gaps:     {len(plan_reads(tags, max_gap=0)):5d} requests")
    print(f"  one request per tag:             {len(tags):5d} requests")
    print(f"  registers read per scan: {read} ({read - sum(used.values())} of them unused gap)")


# ---------------------------------------------------------------- scan figures


def serve(port: int, images: dict[str, list[int]]) -> None:
    """Child process: a pymodbus TCP server holding the images, until terminated."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def block(values: list[int]) -> list[SimData]:
        return [SimData(0, values=values, datatype=DataType.REGISTERS)]

    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    device = SimDevice(
        id=1, simdata=(bits, list(bits), block(images["holding"]), block(images["input"]))
    )

    async def main() -> None:
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever()

    asyncio.run(main())


async def measure(
    port: int, tags: list[ModbusTag], *, name: str, scans: int, period: float
) -> tuple[list[float], int, int]:
    """Run the hub until it has scanned ``scans`` times; return scan seconds and bad count."""
    durations: list[float] = []
    bad = 0
    labels = {"device": name, "scan": "default"}
    last = 0.0
    done = asyncio.Event()

    def sink(samples: list[Sample]) -> None:
        nonlocal last, bad
        total = REGISTRY.get_sample_value("linepulse_edge_scan_seconds_sum", labels) or 0.0
        durations.append(total - last)
        last = total
        bad += sum(s.quality is not Quality.GOOD for s in samples)
        if len(durations) > scans:
            done.set()

    device = ModbusDevice(
        protocol="modbus", name=name, host="127.0.0.1", port=port, machine="bench", tags=tags
    )
    hub = ModbusHub(device, scan_classes={"default": period}, sink=sink)
    requests = len(hub.plans["default"])
    task = asyncio.create_task(hub.run())
    await asyncio.wait_for(done.wait(), 120)
    await hub.stop()
    await task
    return durations[1:], bad, requests  # the first scan pays for the connection


def report(what: str, registers: int, requests: int, durations: list[float], bad: int) -> None:
    ms = [d * 1000 for d in durations]
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18]
    print(f"{what}: {registers} registers in {requests} requests, {len(ms)} scans")
    print(
        f"  scan time mean {statistics.fmean(ms):.2f} ms, p95 {p95:.2f} ms, "
        f"min {min(ms):.2f} ms, max {max(ms):.2f} ms; "
        f"{statistics.fmean(ms) / requests:.2f} ms a request; bad samples {bad}"
    )


def scan_figures(*, scans: int, period: float) -> None:
    for what, tags in (
        ("2,000 dense registers", dense_map(2000)),
        ("1,000-tag map", realistic_map(1000)),
    ):
        port = free_port()
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=serve, args=(port, register_images(tags)), daemon=True)
        proc.start()
        try:
            wait_port(port, timeout=30)
            name = "bench_" + what.split()[0].replace(",", "")
            durations, bad, requests = asyncio.run(
                measure(port, tags, name=name, scans=scans, period=period)
            )
        finally:
            proc.terminate()
            proc.join(10)
        registers = sum(r.count for r in plan_reads(tags))
        report(what, registers, requests, durations, bad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=50)
    parser.add_argument("--period", type=float, default=0.1, help="scan period, seconds")
    args = parser.parse_args()
    setup_logging(json=False, level="warning")
    planning_figures(realistic_map(1000))
    print()
    scan_figures(scans=args.scans, period=args.period)


if __name__ == "__main__":
    main()
