"""Real asyncua OPC UA servers for tests, on loopback ports the tests own, plus certificates."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import Node, Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_agent.contract import Quality, Sample
from tests.harness import free_port

NS_URI = "urn:linepulse:test:plant"
SERVER_URI = "urn:linepulse:test:server"
CLIENT_URI = "urn:linepulse:test:edge"

# name -> (initial value, variant type); node ids are nsu=NS_URI;s=<name>
DEFAULT_VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {
    "temp": (21.5, ua.VariantType.Double),
    "count": (7, ua.VariantType.Int32),
    "running": (True, ua.VariantType.Boolean),
    "recipe": ("SKU-1", ua.VariantType.String),
    "raw": (100, ua.VariantType.UInt16),
    "level": (21.5, ua.VariantType.Double),
}


@dataclass(frozen=True)
class Certs:
    """PEM key and DER certificate files of one OPC UA application."""

    cert: Path
    key: Path


def make_certs(directory: Path, *, name: str, app_uri: str, server: bool) -> Certs:
    """A self-signed application certificate with the URI and host names OPC UA expects."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(app_uri),
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
    ]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {"organizationName": "linepulse tests"}, names, extended=[usage], days=2
    )
    paths = Certs(cert=directory / f"{name}.der", key=directory / f"{name}.pem")
    paths.cert.write_bytes(cert.public_bytes(Encoding.DER))
    paths.key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return paths


class PasswordUsers(UserManager):
    """Accepts only the listed user names with their passwords."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class OpcServer:
    """A running asyncua server with string-id variables in the NS_URI namespace."""

    server: Server
    port: int
    ns: int
    nodes: dict[str, Node] = field(default_factory=dict)
    types: dict[str, ua.VariantType] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/x/"

    async def write(
        self,
        name: str,
        value: Any,
        *,
        status: int = ua.StatusCodes.Good,
        source_ts: datetime | None = None,
    ) -> None:
        """Write a value with a status code and a source timestamp (now when not given)."""
        now = datetime.now(UTC)
        dv = ua.DataValue(
            ua.Variant(value, self.types[name]),
            StatusCode=ua.StatusCode(ua.UInt32(status)),
            # ua.DateTime is a datetime subclass in asyncua's annotations only
            SourceTimestamp=cast(ua.DateTime, source_ts or now),
            ServerTimestamp=cast(ua.DateTime, now),
        )
        await self.nodes[name].write_value(dv)

    def subscription_count(self) -> int:
        return len(self.server.iserver.subscription_service.subscriptions)

    def session_count(self) -> int:
        # private in asyncua 2.1, but the only place the open sessions are listed
        return len(self.server.iserver._external_sessions)

    async def stop(self) -> None:
        await self.server.stop()


async def start_server(
    *,
    port: int | None = None,
    variables: Mapping[str, tuple[Any, ua.VariantType]] = DEFAULT_VARIABLES,
    extra_namespaces: Sequence[str] = (),
    certs: Certs | None = None,
    users: Mapping[str, str] | None = None,
    refuse: Refusal | None = None,
) -> OpcServer:
    """Start a server; with certs it offers only Basic256Sha256 SignAndEncrypt.

    ``refuse`` makes it behave like servers that reject some monitored items (no deadband
    support, item limits): it returns a status code for the items it refuses.
    """
    server = Server(user_manager=PasswordUsers(users) if users is not None else None)
    await server.init()
    port = port or free_port()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/x/")
    server.disable_clock()
    if certs is not None:
        await server.set_application_uri(SERVER_URI)
        await server.load_certificate(str(certs.cert))
        await server.load_private_key(str(certs.key))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if users is not None:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    for uri in extra_namespaces:
        await server.register_namespace(uri)
    ns = await server.register_namespace(NS_URI)
    line = await server.nodes.objects.add_object(_string_id("Line", ns), "Line")
    result = OpcServer(server=server, port=port, ns=ns)
    for name, (value, vtype) in variables.items():
        node = await line.add_variable(_string_id(name, ns), name, ua.Variant(value, vtype))
        result.nodes[name] = node
        result.types[name] = vtype
    if refuse is not None:
        _refuse_items(server, refuse)
    await server.start()
    return result


def _string_id(name: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(name), ua.Int16(ns))


Refusal = Callable[[ua.MonitoredItemCreateRequest], int | None]


def _refuse_items(server: Server, refuse: Refusal) -> None:
    service = server.iserver.subscription_service
    create = service.create_monitored_items

    async def create_some(
        params: ua.CreateMonitoredItemsParameters,
    ) -> list[ua.MonitoredItemCreateResult]:
        codes = [refuse(item) for item in params.ItemsToCreate]
        keep = [
            item for item, code in zip(params.ItemsToCreate, codes, strict=True) if code is None
        ]
        made = iter(await create(dataclasses.replace(params, ItemsToCreate=keep)) if keep else [])
        return [
            next(made)
            if code is None
            else ua.MonitoredItemCreateResult(StatusCode=ua.StatusCode(ua.UInt32(code)))
            for code in codes
        ]

    service.create_monitored_items = create_some  # type: ignore[method-assign]


class Collector:
    """A sink that records every batch, with helpers to wait for what a test expects."""

    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []

    def __call__(self, samples: list[Sample]) -> None:
        self.batches.append(list(samples))

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b]

    def latest(self, tag: str) -> Sample | None:
        for batch in reversed(self.batches):
            for s in reversed(batch):
                if s.tag == tag:
                    return s
        return None

    async def wait_for(
        self, check: Callable[[Collector], bool], *, timeout: float = 5.0, what: str = ""
    ) -> None:
        """Poll until check(self) holds; fail with what was received so far."""
        deadline = time.monotonic() + timeout
        while not check(self):
            if time.monotonic() > deadline:
                tail = self.samples[-12:]
                raise AssertionError(f"timed out waiting for {what or check}; last samples: {tail}")
            await asyncio.sleep(0.02)

    async def wait_value(self, tag: str, value: Any, *, timeout: float = 5.0) -> Sample:
        """Wait until the latest sample of tag is GOOD with this value."""

        def ok(c: Collector) -> bool:
            s = c.latest(tag)
            return s is not None and s.quality is Quality.GOOD and s.value == value

        await self.wait_for(ok, timeout=timeout, what=f"{tag} == {value!r}")
        sample = self.latest(tag)
        assert sample is not None
        return sample

    async def wait_quality(self, tag: str, quality: Quality, *, timeout: float = 5.0) -> Sample:
        """Wait until the latest sample of tag has this quality."""

        def ok(c: Collector) -> bool:
            s = c.latest(tag)
            return s is not None and s.quality is quality

        await self.wait_for(ok, timeout=timeout, what=f"{tag} {quality}")
        sample = self.latest(tag)
        assert sample is not None
        return sample
