"""The simulated line as a Modbus TCP server (pymodbus), unit id 1.

Register map (addresses are 0-based, as on the wire; machine index i: filler 0, capper 1,
labeler 2, packer 3; base = i * 100, bit = i * 16). Multi-register values are big-endian
bytes and big-endian word order (high word first), the Modbus norm::

    holding registers (function 3)
      base+0    state        uint16     state code (1 running, 3 starved, 21 jam ...)
      base+1    running      uint16     1 while running, else 0
      base+2    total        uint32     parts counter; the filler's is uint16 at base+2
                                        (base+3 reads 0), wraps at 65536
      base+4    reject       uint32     reject counter
      base+6    speed        float32    parts/min, 0 when not running
      base+8    temperature  float32    degC
      base+10   pressure     float32    bar
      base+12.. reject.<reason>  uint32  reject counter of one reason, two registers each
                                        (uint16 on the labeler, wrapping at 65536; the
                                        second register reads 0): filler underfill +12,
                                        overfill +14; capper cap_missing +12, cap_skewed
                                        +14; labeler label_missing +12, label_skewed +14;
                                        the rest of base+12..19 is spare, read as 0
      base+20   product      string     8 registers, 16 ASCII characters, NUL padded
      base+30   order        string     8 registers, NUL padded
    input registers (function 4): speed, temperature, pressure at base+6, +8, +10 (float32)
    coils (function 1) and discrete inputs (function 2), same bits:
      bit+0     running
      bit+1     faulted      (state code 20..29)

So filler state is holding 0, capper total holding 102-103, labeler temperature holding
208-209 (or input 208-209), packer running coil 48. Each machine's holding block reads
in one request (base .. base+37); addresses between blocks are illegal (exception 2).
Writes are accepted and overwritten at the next tick: the simulator is the PLC.
"""

from __future__ import annotations

from typing import Final

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.decode import encode_value
from edge_agent.simulator.line import MachineSpec, SimulatorError
from edge_agent.simulator.model import LineSnapshot
from edge_agent.simulator.tags import (
    BLOCK_STRIDE,
    COIL_STRIDE,
    UNIT_ID,
    ModbusPoint,
    modbus_points,
    value_of,
)

HOLDING_SPAN: Final = 38  # base .. base+37
INPUT_FIRST, INPUT_SPAN = 6, 6  # base+6 .. base+11
_WRITE = {"holding": 16, "input": 4, "coil": 15, "discrete_input": 2}  # table -> function code


def encode(point: ModbusPoint, value: bool | int | float | str) -> list[int]:
    """Registers for one value, big-endian bytes and words: the gateway decoder's inverse."""
    if isinstance(value, bool) and point.datatype != "bool":
        value = int(value)  # "running" is a 0/1 register too
    return encode_value(value, datatype=point.datatype, length=point.length)


class ModbusSim:
    """A pymodbus TCP server whose registers show the latest line snapshot."""

    def __init__(
        self, *, line: tuple[MachineSpec, ...], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._machines = tuple(spec.name for spec in line)
        self._points = modbus_points(line)
        self._server: ModbusTcpServer | None = None

    def _device(self) -> SimDevice:
        n = len(self._machines)
        holding = [
            SimData(
                address=i * BLOCK_STRIDE, count=HOLDING_SPAN, values=0, datatype=DataType.REGISTERS
            )
            for i in range(n)
        ]
        inputs = [
            SimData(
                address=i * BLOCK_STRIDE + INPUT_FIRST,
                count=INPUT_SPAN,
                values=0,
                datatype=DataType.REGISTERS,
            )
            for i in range(n)
        ]
        bits = [SimData(address=0, values=[False] * (n * COIL_STRIDE), datatype=DataType.BITS)]
        return SimDevice(id=UNIT_ID, simdata=(bits, list(bits), holding, inputs))

    async def start(self, snapshot: LineSnapshot) -> int:
        """Listen and show ``snapshot``; return the bound port."""
        self._server = ModbusTcpServer(self._device(), address=(self.host, self.requested_port))
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as err:
            self._server = None
            raise SimulatorError(
                f"Modbus server cannot listen on {self.host}:{self.requested_port}"
                " (port in use, or a host this machine does not have)"
            ) from err
        sockets = getattr(self._server.transport, "sockets", None) or []
        if not sockets:
            await self.stop()
            raise SimulatorError("Modbus server started without a listening socket")
        self.port = int(sockets[0].getsockname()[1])
        await self.publish(snapshot)
        return self.port

    async def publish(self, snapshot: LineSnapshot) -> None:
        """Write every register and bit from ``snapshot``."""
        if self._server is None:
            return
        for table, address, values in self._images(snapshot):
            await self._server.async_setValues(UNIT_ID, _WRITE[table], address, values)

    def _images(self, snapshot: LineSnapshot) -> list[tuple[str, int, list[int] | list[bool]]]:
        """(table, first address, values) blocks that cover every point."""
        n = len(self._machines)
        holding = {i: [0] * HOLDING_SPAN for i in range(n)}
        inputs = {i: [0] * INPUT_SPAN for i in range(n)}
        bits = [False] * (n * COIL_STRIDE)
        index = {name: i for i, name in enumerate(self._machines)}
        for p in self._points:
            value = value_of(snapshot[p.machine], p.field, p.reason)
            i = index[p.machine]
            offset = p.address - i * BLOCK_STRIDE
            if p.table == "holding":
                holding[i][offset : offset + p.register_count] = encode(p, value)
            elif p.table == "input":
                offset -= INPUT_FIRST
                inputs[i][offset : offset + p.register_count] = encode(p, value)
            else:  # coils and discrete inputs carry the same bits
                bits[p.address] = bool(value)
        blocks: list[tuple[str, int, list[int] | list[bool]]] = []
        for i in range(n):
            blocks.append(("holding", i * BLOCK_STRIDE, holding[i]))
            blocks.append(("input", i * BLOCK_STRIDE + INPUT_FIRST, inputs[i]))
        blocks += [("coil", 0, bits), ("discrete_input", 0, list(bits))]
        return blocks

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()
