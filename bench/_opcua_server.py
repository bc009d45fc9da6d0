"""An asyncua server for bench/opcua_throughput.py, run in a child process.

It serves ``count`` Double variables (string node ids ``bench.<global index>`` in the
namespace ``NS_URI``) and writes every one of them ``rate`` times a second. The writes of
one period are spread over ``SLICES`` equal sub-ticks, so the server does not send all its
changes in one burst. The schedule is fixed-rate: a short stall is caught up, but a server
more than a whole period behind skips sub-ticks instead of bunching them, so the writes it
achieves (counted in a shared counter) fall below the offered rate and show that the
server is the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Final, cast

from asyncua import Server, ua

NS_URI: Final = "urn:linepulse:bench:opcua"
SLICES: Final = 20  # sub-ticks a period is divided into


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server process: its port and the slice of the global item range it serves."""

    port: int
    first: int  # global index of its first item
    count: int
    rate: float  # changes per second of every item

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/bench/"


def node_name(index: int) -> str:
    """The string identifier of item ``index`` (also the agent's tag name)."""
    return f"bench.{index:05d}"


def serve(spec: ServerSpec, *, writes: Synchronized[int], ready: Event, stop: Event) -> None:
    """Process entry point: serve and write until ``stop`` is set."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # "no signing policy" etc.
    asyncio.run(_main(spec, writes=writes, ready=ready, stop=stop))


async def _main(spec: ServerSpec, *, writes: Synchronized[int], ready: Event, stop: Event) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(spec.endpoint)
    server.disable_clock()  # no 1 s CurrentTime writes competing with ours
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS_URI)
    folder = await server.nodes.objects.add_object(_string_id("Bench", ns), "Bench")
    nodeids: list[ua.NodeId] = []
    for i in range(spec.first, spec.first + spec.count):
        name = node_name(i)
        node = await folder.add_variable(
            _string_id(name, ns), name, ua.Variant(0.0, ua.VariantType.Double)
        )
        nodeids.append(node.nodeid)
    await server.start()
    ready.set()
    try:
        await _write_loop(server, nodeids, rate=spec.rate, writes=writes, stop=stop)
    finally:
        await server.stop()


def _string_id(name: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(name), ua.Int16(ns))


async def _write_loop(
    server: Server,
    nodeids: list[ua.NodeId],
    *,
    rate: float,
    writes: Synchronized[int],
    stop: Event,
) -> None:
    """Write every node ``rate`` times a second, one slice per sub-tick, fixed rate."""
    slices = [nodeids[k::SLICES] for k in range(SLICES)]
    tick = 1.0 / rate / SLICES
    iserver = server.iserver
    next_at = time.monotonic()
    k = 0
    while not stop.is_set():
        now = datetime.now(UTC)
        # the value changes every round, so every write is a data change
        variant = ua.Variant(float(k // SLICES), ua.VariantType.Double)
        dv = ua.DataValue(
            variant,
            SourceTimestamp=cast(ua.DateTime, now),
            ServerTimestamp=cast(ua.DateTime, now),
        )
        part = slices[k % SLICES]
        for nodeid in part:
            await iserver.write_attribute_value(nodeid, dv)
        with writes.get_lock():
            writes.value += len(part)
        k += 1
        next_at += tick
        late = time.monotonic() - next_at
        # A stall (a big publish response being encoded) is caught up; a server more than a
        # period behind cannot keep the rate: it skips what it missed rather than bunch it.
        if late > tick * SLICES:
            skipped = int(late // tick)
            k += skipped
            next_at += skipped * tick
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
