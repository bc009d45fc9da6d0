"""The simulated line as an OPC UA server (asyncua).

Endpoint ``opc.tcp://<host>:<port>/linepulse/sim/``, security None unless a certificate
and key are given (then Basic256Sha256, Sign or SignAndEncrypt, and nothing else).
Namespace ``urn:linepulse:simulator``; resolve its index from the NamespaceArray
(``nsu=urn:linepulse:simulator;s=filler.state`` in a gateway config). Address space::

    Objects/Line (s=line)
      Filler (s=filler), Capper (s=capper), Labeler (s=labeler), Packer (s=packer)
        <machine>.state        UInt16    state code (1 running, 3 starved, 21 jam ...)
        <machine>.running      Boolean
        <machine>.faulted      Boolean   state code 20..29
        <machine>.total        UInt32    parts counter (UInt16 on the filler: wraps at 65536)
        <machine>.reject       UInt32    reject counter
        <machine>.reject.<reason>  UInt32  reject counter of one reason (UInt16 on the
                                         labeler): filler underfill, overfill; capper
                                         cap_missing, cap_skewed; labeler label_missing,
                                         label_skewed; the packer has none
        <machine>.speed        Double    parts/min, 0 when not running   EURange 0..200
        <machine>.temperature  Double    degC                            EURange 0..120
        <machine>.pressure     Double    bar                             EURange 0..10
        <machine>.product      String    product code, e.g. SKU-1042
        <machine>.order        String    order number, e.g. ORD-240001

Analog variables carry an ``EURange`` property (``s=<machine>.<field>.EURange``) so a
client can ask for a percent deadband (asyncua accepts the item but does not filter it;
the gateway applies its deadband itself). Every value is written with the tick's time as its
source timestamp, and only when it changed (analogs change every tick unless frozen).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Final

from asyncua import Node, Server, ua

from edge_agent.simulator.line import MachineSpec, SimulatorError
from edge_agent.simulator.model import LineSnapshot
from edge_agent.simulator.tags import (
    ENDPOINT_PATH,
    NAMESPACE_URI,
    OpcUaPoint,
    opcua_points,
    value_of,
)

_VARIANT: Final = {
    "Boolean": ua.VariantType.Boolean,
    "UInt16": ua.VariantType.UInt16,
    "UInt32": ua.VariantType.UInt32,
    "Double": ua.VariantType.Double,
    "String": ua.VariantType.String,
}


class OpcUaSim:
    """An asyncua server whose variables follow the line snapshots it is given."""

    def __init__(
        self,
        *,
        line: tuple[MachineSpec, ...],
        host: str = "127.0.0.1",
        port: int = 0,
        certificate: Path | None = None,
        private_key: Path | None = None,
    ) -> None:
        if (certificate is None) != (private_key is None):
            raise SimulatorError("OPC UA security needs both a certificate and a private key")
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.namespace_index: int | None = None
        self._line = line
        self._points = opcua_points(line)
        self._certificate = certificate
        self._private_key = private_key
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._last: dict[str, bool | int | float | str] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    async def start(self, snapshot: LineSnapshot) -> int:
        """Build the address space, listen, show ``snapshot``; return the bound port."""
        quiet_asyncua()
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.requested_port}{ENDPOINT_PATH}")
        server.set_server_name("linepulse simulated packaging line")
        await server.set_application_uri(f"{NAMESPACE_URI}:server")
        await self._security(server)
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        await self._build(server, self.namespace_index, snapshot)
        try:
            await server.start()
        except OSError as err:
            raise SimulatorError(
                f"OPC UA server cannot listen on {self.host}:{self.requested_port}: {err.strerror}"
            ) from err
        self._server = server
        if server.bserver is None:  # start() returned without a listener: asyncua changed
            raise SimulatorError("OPC UA server started without a listening socket")
        self.port = int(server.bserver.port)
        await self.publish(snapshot)
        return self.port

    async def _security(self, server: Server) -> None:
        if self._certificate is None or self._private_key is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        try:
            await server.load_certificate(str(self._certificate))
            await server.load_private_key(str(self._private_key))
        except (OSError, ValueError) as err:
            raise SimulatorError(f"cannot load the OPC UA certificate or key: {err}") from err
        server.set_security_policy(
            [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
            ]
        )

    async def _build(self, server: Server, ns: int, snapshot: LineSnapshot) -> None:
        line = await server.nodes.objects.add_object(_id(ns, "line"), ua.QualifiedName("Line", ns))
        for spec in self._line:
            obj = await line.add_object(
                _id(ns, spec.name), ua.QualifiedName(spec.name.capitalize(), ns)
            )
            for point in self._points.values():
                if point.machine == spec.name:
                    value = value_of(snapshot[spec.name], point.field, point.reason)
                    await self._variable(obj, ns, point, value)

    async def _variable(self, parent: Node, ns: int, point: OpcUaPoint, value: object) -> None:
        vtype = _VARIANT[point.datatype]
        node = await parent.add_variable(
            _id(ns, point.node),
            ua.QualifiedName(point.browse_name, ns),
            ua.Variant(value, vtype),
            datatype=vtype.value,
        )
        if point.eu_range is not None:
            await node.add_property(
                _id(ns, f"{point.node}.EURange"),
                ua.QualifiedName("EURange", 0),
                ua.Range(*point.eu_range),
                datatype=ua.ObjectIds.Range,
            )
        self._nodes[point.node] = node.nodeid

    async def publish(self, snapshot: LineSnapshot) -> None:
        """Write the values that changed, stamped with the snapshot's time."""
        if self._server is None:
            return
        source = ua.DateTime.fromtimestamp(snapshot.ts, dt.UTC)
        now = ua.DateTime.now(dt.UTC)
        for node, point in self._points.items():
            value = value_of(snapshot[point.machine], point.field, point.reason)
            if node in self._last and self._last[node] == value:
                continue
            datavalue = ua.DataValue(
                ua.Variant(value, _VARIANT[point.datatype]),
                SourceTimestamp=source,
                ServerTimestamp=now,
            )
            await self._server.write_attribute_value(self._nodes[node], datavalue)
            self._last[node] = value

    async def stop(self) -> None:
        """Close every session and the listener."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()


def _id(ns: int, name: str) -> ua.NodeId:
    return ua.NodeId.from_string(f"ns={ns};s={name}")


def quiet_asyncua() -> None:
    """Hush asyncua warnings that are noise for this server, unless logging says otherwise.

    With security None on purpose, asyncua warns that nothing is signed or encrypted; it
    does not implement percent deadband filters and warns once per monitored item (the
    items work, unfiltered: the gateway applies its deadband itself).
    """
    for name in ("asyncua.server.server", "asyncua.server.monitored_item_service"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)
