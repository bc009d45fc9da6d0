"""Run the simulated line: one asyncio process, one model, OPC UA and Modbus servers.

Each tick the model steps once and both servers show the new snapshot. Simulated time
follows the wall clock (a fresh model's clock is set when ticking starts); a runner that
falls behind catches up by stepping several ticks, and skips time rather than lag for ever.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from edge_agent.errors import ConfigError
from edge_agent.logs import FailureGate
from edge_agent.simulator.line import DEFAULT_LINE, SimulatorError
from edge_agent.simulator.model import CounterName, LineModel, LineSnapshot
from edge_agent.simulator.script import Script, load_script
from edge_agent.simulator.tags import ENDPOINT_PATH, NAMESPACE_URI, UNIT_ID

if TYPE_CHECKING:  # the protocol stacks load only when a server starts
    from edge_agent.simulator.modbus_server import ModbusSim
    from edge_agent.simulator.opcua_server import OpcUaSim

MAX_CATCH_UP: Final = 20  # ticks stepped at once before the clock skips ahead
log = structlog.get_logger("linepulse.simulator")


class Simulator:
    """The simulated line with its servers; ``start()``/``stop()`` in-process (tests, demo)."""

    def __init__(
        self,
        *,
        opcua_port: int | None = 0,
        modbus_port: int | None = 0,
        seed: int = 1,
        tick: float = 0.5,
        script: Path | Script | None = None,
        host: str = "127.0.0.1",
        autostep: bool = True,
        certificate: Path | None = None,
        private_key: Path | None = None,
        model: LineModel | None = None,
    ) -> None:
        if isinstance(script, Path):
            script = load_script(script, line=model.specs if model else DEFAULT_LINE)
        self.model = model or LineModel(seed=seed, tick=tick, start=time.time(), script=script)
        self.host = host
        self.autostep = autostep
        self._ports = (opcua_port, modbus_port)
        self._certs = (certificate, private_key)
        self._opcua: OpcUaSim | None = None
        self._modbus: ModbusSim | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._gate = FailureGate(log, what="publishing to the simulator's servers")

    @property
    def opcua_port(self) -> int | None:
        return self._opcua.port if self._opcua else None

    @property
    def modbus_port(self) -> int | None:
        return self._modbus.port if self._modbus else None

    @property
    def opcua_endpoint(self) -> str | None:
        return self._opcua.endpoint if self._opcua else None

    @property
    def ports(self) -> dict[str, Any]:
        """What ``ready`` callbacks get: bound ports (None for a server that is off)."""
        return {
            "opcua_port": self.opcua_port,
            "modbus_port": self.modbus_port,
            "opcua_endpoint": self.opcua_endpoint,
            "namespace": NAMESPACE_URI,
            "unit_id": UNIT_ID,
        }

    # The model's scripting API, here too; servers show a change at the next tick, or at
    # once after ``await publish()``.

    def set_state(self, machine: str | None, code: int, *, duration: float | None = None) -> None:
        """See :meth:`LineModel.set_state`."""
        self.model.set_state(machine, code, duration=duration)

    def set_counter(self, machine: str, counter: CounterName, value: int) -> None:
        """See :meth:`LineModel.set_counter`."""
        self.model.set_counter(machine, counter, value)

    def reset_counter(self, machine: str | None, counter: CounterName | None = None) -> None:
        """See :meth:`LineModel.reset_counter`."""
        self.model.reset_counter(machine, counter)

    def set_product(
        self, product: str, *, order: str | None = None, machine: str | None = None
    ) -> None:
        """See :meth:`LineModel.set_product`."""
        self.model.set_product(product, order=order, machine=machine)

    async def start(self) -> None:
        """Start the servers that have a port, show the current snapshot, start ticking."""
        snapshot = self.model.snapshot()
        try:
            await self._start_servers(snapshot)
        except BaseException:
            await self.stop()
            raise
        if self.autostep:
            if self.model.n == 0:  # not started yet: its first tick is one tick from now
                self.model.shift_clock(time.time() - self.model.now)
            self._task = asyncio.create_task(self._loop(), name="linepulse-simulator")

    async def _start_servers(self, snapshot: LineSnapshot) -> None:
        opcua_port, modbus_port = self._ports
        if opcua_port is not None:
            from edge_agent.simulator.opcua_server import OpcUaSim

            cert, key = self._certs
            self._opcua = OpcUaSim(
                line=self.model.specs,
                host=self.host,
                port=opcua_port,
                certificate=cert,
                private_key=key,
            )
            await self._opcua.start(snapshot)
        if modbus_port is not None:
            from edge_agent.simulator.modbus_server import ModbusSim

            self._modbus = ModbusSim(line=self.model.specs, host=self.host, port=modbus_port)
            await self._modbus.start(snapshot)

    async def stop(self) -> None:
        """Stop ticking and close both servers; safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for server in (self._modbus, self._opcua):
            if server is not None:
                await server.stop()

    async def publish(self) -> LineSnapshot:
        """Show the model's current snapshot on both servers now (after a test changed it)."""
        async with self._lock:
            return await self._publish()

    async def advance(self, ticks: int = 1) -> LineSnapshot:
        """Step the model ``ticks`` times and publish: for tests that drive time themselves."""
        async with self._lock:
            self.model.run(ticks)
            return await self._publish()

    async def _publish(self) -> LineSnapshot:
        snapshot = self.model.snapshot()
        try:
            if self._opcua:
                await self._opcua.publish(snapshot)
            if self._modbus:
                await self._modbus.publish(snapshot)
        except Exception as err:  # a server hiccup must not stop the line
            self._gate.failed(err)
        else:
            self._gate.ok()
        return snapshot

    async def _loop(self) -> None:
        tick = self.model.tick
        while True:
            await asyncio.sleep(max(0.0, self.model.now + tick - time.time()))
            due = int((time.time() - self.model.now) / tick)
            if due > MAX_CATCH_UP:
                log.warning("simulator fell behind; skipping time", seconds=round(due * tick, 1))
                self.model.shift_clock((due - 1) * tick)
                due = 1
            async with self._lock:
                try:
                    self.model.run(max(due, 1))
                except SimulatorError as err:  # a script action the line refuses: skip it
                    log.error("simulator action failed", error=str(err))
                await self._publish()


async def run_simulator(
    *,
    opcua_port: int | None,
    modbus_port: int | None,
    seed: int = 1,
    tick: float = 0.5,
    script: Path | None = None,
    ready: Callable[[dict[str, Any]], None] | None = None,
    host: str = "127.0.0.1",
    certificate: Path | None = None,
    private_key: Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); print the endpoints once started."""
    sim = Simulator(
        opcua_port=opcua_port,
        modbus_port=modbus_port,
        seed=seed,
        tick=tick,
        script=script,
        host=host,
        certificate=certificate,
        private_key=private_key,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)  # only possible in the main thread
    try:
        await sim.start()
        print(_banner(sim, seed=seed, tick=tick), flush=True)
        if ready is not None:
            ready(sim.ports)
        await stop.wait()
    finally:
        await sim.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def _banner(sim: Simulator, *, seed: int, tick: float) -> str:
    opcua = f"OPC UA {sim.opcua_endpoint} (ns {NAMESPACE_URI})" if sim.opcua_port else "OPC UA off"
    modbus = (
        f"Modbus TCP {sim.host}:{sim.modbus_port} unit {UNIT_ID}"
        if sim.modbus_port
        else ("Modbus off")
    )
    return f"linepulse simulate: {opcua}; {modbus}; seed {seed}, tick {tick}s"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535 (0 picks a free one)")
    return port


def _tick(text: str) -> float:
    try:
        tick = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.01 <= tick <= 3600:
        raise argparse.ArgumentTypeError("tick must be between 0.01 and 3600 seconds")
    return tick


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``linepulse simulate``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--opcua-port", type=_port, default=4840, help="0 picks a free port")
    parser.add_argument("--modbus-port", type=_port, default=5020, help="0 picks a free port")
    parser.add_argument("--no-opcua", action="store_true", help="do not start the OPC UA server")
    parser.add_argument("--no-modbus", action="store_true", help="do not start the Modbus server")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same line behaviour")
    parser.add_argument("--tick", type=_tick, default=0.5, help="seconds between updates")
    parser.add_argument("--script", type=Path, default=None, help="YAML script of timed actions")
    parser.add_argument(
        "--opcua-cert",
        type=Path,
        default=None,
        help=f"server certificate (PEM/DER): {ENDPOINT_PATH} then requires Basic256Sha256",
    )
    parser.add_argument("--opcua-key", type=Path, default=None, help="private key of --opcua-cert")


def main(args: argparse.Namespace) -> int:
    """``linepulse simulate``: run until SIGTERM/SIGINT; 0 on a clean stop."""
    try:
        asyncio.run(
            run_simulator(
                opcua_port=None if args.no_opcua else args.opcua_port,
                modbus_port=None if args.no_modbus else args.modbus_port,
                seed=args.seed,
                tick=args.tick,
                script=args.script,
                host=args.host,
                certificate=args.opcua_cert,
                private_key=args.opcua_key,
            )
        )
    except (SimulatorError, ConfigError) as err:
        print(f"linepulse simulate: {err}", file=sys.stderr)
        return 2
    return 0
