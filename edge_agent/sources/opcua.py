"""OPC UA source: subscribe to (or poll) one device's tags and hand batches of Samples to a sink.

Reconnects are our own supervised loop, not asyncua's ``auto_reconnect``: asyncua reactivates
the old session and restores subscriptions behind our back, but node ids resolved from
namespace URIs must be resolved again after a server restart (the NamespaceArray may be
reordered), tags must go BAD exactly once when the link drops, and the backoff must follow
``device.backoff_max``. So each connection attempt gets a fresh ``Client``; when it is lost
we close it (its session, if the server still listens, so session caps are not exhausted),
mark every tag BAD in one sink call, wait with capped exponential backoff and start over:
resolve namespaces, create subscriptions, start polls.

Subscriptions use asyncua's service layer (``client.uaclient``) with our own publish
callback: one sink call per notification message, no task or object per value, and the
raw CreateMonitoredItems results (which say why an item was refused) stay visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import structlog
from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509

from edge_agent.config import OpcUaDevice, OpcUaTag
from edge_agent.contract import MIN_TS_MS, Quality, Sample, Value
from edge_agent.logs import FailureGate
from edge_agent.metrics import (
    DEVICE_CONNECTED,
    DEVICE_ERRORS,
    DEVICE_READS,
    SAMPLES_READ,
    SCAN_SECONDS,
)

Sink = Callable[[list[Sample]], None]
_T = TypeVar("_T")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
# Servers send 1601-01-01 (FILETIME zero) or other junk for "no timestamp": ignore pre-2000.
_MIN_TS_MS: Final = MIN_TS_MS
_NSU: Final = re.compile(r"^nsu=([^;]+);(.+)$")
_FIRST_BACKOFF: Final = 1.0
_STABLE_AFTER: Final = 30.0  # a session that lived this long resets the backoff
_DEFAULT_CHUNK: Final = 1000  # items per Read / CreateMonitoredItems when the server sets no limit
_KEEPALIVE_S: Final = 5.0  # ask for a keep-alive at least this often on quiet subscriptions
_SESSION_TIMEOUT_MS: Final = 60_000  # an orphaned session (dead link) expires within a minute

_NO_NODE: Final = frozenset(
    {
        ua.StatusCodes.BadNodeIdUnknown,
        ua.StatusCodes.BadNodeIdInvalid,
        ua.StatusCodes.BadAttributeIdInvalid,
    }
)
_FILTER_REFUSED: Final = frozenset(
    {
        ua.StatusCodes.BadFilterNotAllowed,
        ua.StatusCodes.BadMonitoredItemFilterInvalid,
        ua.StatusCodes.BadMonitoredItemFilterUnsupported,
        ua.StatusCodes.BadDeadbandFilterInvalid,
    }
)
_AUTH: Final = frozenset(
    {
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadIdentityTokenInvalid,
        ua.StatusCodes.BadIdentityTokenRejected,
    }
)
_SECURITY: Final = frozenset(
    {
        ua.StatusCodes.BadSecurityPolicyRejected,
        ua.StatusCodes.BadSecurityChecksFailed,
        ua.StatusCodes.BadCertificateUntrusted,
        ua.StatusCodes.BadCertificateInvalid,
        ua.StatusCodes.BadCertificateUriInvalid,
        ua.StatusCodes.BadCertificateTimeInvalid,
    }
)


class NodeIdError(ValueError):
    """A tag's node id cannot be resolved on this server; the message says why."""


# ---------------------------------------------------------------- pure conversions


def to_ms(dt: datetime) -> int:
    """Integer milliseconds since 1970 UTC (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Good* -> GOOD, Uncertain* -> UNCERTAIN, Bad* (and the reserved severity) -> BAD."""
    if status is None:
        return Quality.GOOD
    severity = status.value >> 30
    if severity == 0:
        return Quality.GOOD
    return Quality.UNCERTAIN if severity == 1 else Quality.BAD


def _number(x: float) -> tuple[Value, str | None]:
    if math.isfinite(x):
        return x, None
    return None, f"value {x!r} is not a finite number"


def convert_value(raw: Any, *, scale: float = 1.0, offset: float = 0.0) -> tuple[Value, str | None]:
    """A wire value from an OPC UA value, or (None, why) when it cannot be one."""
    if isinstance(raw, bool | str):
        return raw, None
    if isinstance(raw, int):
        if scale == 1.0 and offset == 0.0:
            return int(raw), None  # int() turns IntEnum members into plain ints
        return _number(raw * scale + offset)
    if isinstance(raw, float):
        return _number(raw * scale + offset)
    if isinstance(raw, datetime):
        return to_ms(raw), None
    if isinstance(raw, ua.LocalizedText):
        return raw.Text or "", None
    if isinstance(raw, ua.NodeId | ua.QualifiedName):
        return raw.to_string(), None
    if isinstance(raw, uuid.UUID):
        return str(raw), None
    if isinstance(raw, list | tuple):
        return None, f"the value is an array of {len(raw)} elements: only scalars are supported"
    if raw is None:
        return None, "the server sent an empty (null) value with a non-bad status"
    return None, f"values of type {type(raw).__name__} are not supported"


def source_ts(dv: ua.DataValue, now_ms: int) -> int:
    """SourceTimestamp in ms, else ServerTimestamp, else now."""
    for dt in (dv.SourceTimestamp, dv.ServerTimestamp):
        if dt is not None:
            ms = to_ms(dt)
            if ms >= _MIN_TS_MS:
                return ms
    return now_ms


def resolve_node_id(text: str, namespaces: Sequence[str]) -> ua.NodeId:
    """``nsu=<uri>;s=X`` -> ``ns=<index of uri>;s=X`` on this server; other forms as they are."""
    m = _NSU.match(text)
    if m:
        uri, rest = m.groups()
        try:
            text = f"ns={namespaces.index(uri)};{rest}"
        except ValueError:
            raise NodeIdError(
                f"namespace {uri!r} is not on the server (it has {list(namespaces)})"
            ) from None
    try:
        return ua.NodeId.from_string(text)
    except Exception as err:
        raise NodeIdError(f"{text!r} is not a valid node id: {err}") from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _chunks(seq: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(seq), max(1, size)):
        yield seq[i : i + size]


def describe_error(err: BaseException, device: OpcUaDevice) -> tuple[str, bool]:
    """A message an operator can act on, and whether retrying soon is pointless (config)."""
    code = getattr(err, "code", None)
    if isinstance(err, ExceptionGroup):
        return describe_error(err.exceptions[0], device)
    if isinstance(err, ua.UaStatusCodeError) and code in _AUTH:
        who = f"user {device.username!r}" if device.username else "anonymous access"
        return f"the server rejected {who} ({err}): check username and password", True
    if isinstance(err, ua.UaStatusCodeError) and code in _SECURITY:
        return (
            f"the server rejected the secure channel ({err}): check security.policy, security.mode"
            " and that the server trusts the client certificate"
        ), True
    if isinstance(err, ua.UaError) and "No matching endpoints" in str(err):
        sec = device.security
        return f"the server offers no endpoint with {sec.policy}/{sec.mode}: {err}", True
    if isinstance(err, TimeoutError):
        return f"no answer from {device.endpoint} within the timeout", False
    if isinstance(err, OSError) and err.filename:
        return f"cannot read {err.filename}: {err.strerror}", True
    if isinstance(err, OSError):
        return f"cannot reach {device.endpoint}: {err.strerror or err}", False
    return f"{type(err).__name__}: {err}", False


# ---------------------------------------------------------------- per tag and per session


@dataclass(slots=True, eq=False)
class _Item:
    """One tag with what the hot path needs precomputed."""

    handle: int
    tag: OpcUaTag
    scan: str
    period: float
    nodeid: ua.NodeId | None = None

    @property
    def name(self) -> str:
        return self.tag.name


@dataclass(slots=True, eq=False)
class _Session:
    """One connection attempt: its client, why it ended, its subscriptions and poll tasks."""

    client: Client
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None
    connected: bool = False
    subs: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> (last, stale)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()


@dataclass(frozen=True, slots=True)
class _Limits:
    read: int = _DEFAULT_CHUNK
    monitor: int = _DEFAULT_CHUNK


# ---------------------------------------------------------------- the source


class OpcUaSource:
    """Reads one OPC UA device and feeds the sink; survives every device failure."""

    def __init__(
        self, device: OpcUaDevice, *, scan_classes: Mapping[str, float], sink: Sink
    ) -> None:
        self.device = device
        self._sink = sink
        default = scan_classes.get("default", 1.0)
        self._items: list[_Item] = []
        for i, tag in enumerate(device.tags, start=1):
            scan = tag.scan or device.scan
            self._items.append(_Item(i, tag, scan, scan_classes.get(scan, default)))
        self._by_handle = {it.handle: it for it in self._items}
        self._log = structlog.get_logger(__name__).bind(device=device.name)
        self._gate = FailureGate(self._log, what="opcua connection")
        self._sink_gate = FailureGate(self._log, what="opcua sink")
        self._noted: set[tuple[str, str]] = set()
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._session: _Session | None = None
        self._all_bad_sent = False
        name = device.name
        self._m_connected = DEVICE_CONNECTED.labels(name)
        self._m_reads = DEVICE_READS.labels(name)
        self._m_errors = DEVICE_ERRORS.labels(name)
        self._m_samples = SAMPLES_READ.labels(name)

    @property
    def connected(self) -> bool:
        """True while a session with the server is up."""
        return self._session is not None and self._session.connected

    async def run(self) -> None:
        """Connect, stream values, reconnect on trouble; returns only after stop()."""
        self._done.clear()
        delay = min(_FIRST_BACKOFF, self.device.backoff_max)
        try:
            while not self._stop.is_set():
                session = _Session(self._new_client())
                self._session = session
                started = time.monotonic()
                config_error = False
                try:
                    await self._serve(session)
                except Exception as err:
                    message, config_error = describe_error(err, self.device)
                    session.lose(message)
                finally:
                    await self._close(session)
                if self._stop.is_set():
                    break
                self._failed(session.reason or "connection lost")
                if config_error:
                    delay = self.device.backoff_max
                elif time.monotonic() - started > _STABLE_AFTER:
                    delay = min(_FIRST_BACKOFF, self.device.backoff_max)
                # jitter keeps a fleet of gateways from reconnecting in lockstep
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.8, 1.0))
                delay = min(delay * 2, self.device.backoff_max)
        finally:
            self._m_connected.set(0)
            self._done.set()

    async def stop(self) -> None:
        """Close subscriptions and the session; run() then returns."""
        self._stop.set()
        session = self._session
        if session is not None:
            session.lost.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.device.timeout * 2 + 1)

    # ------------------------------------------------------------ connection

    def _new_client(self) -> Client:
        d = self.device
        client = Client(d.endpoint, timeout=d.timeout, watchdog_intervall=d.timeout)
        client.session_timeout = _SESSION_TIMEOUT_MS
        client.name = client.description = f"linepulse edge {d.name}"
        if d.username:
            client.set_user(d.username)
            client.set_password(d.password or "")
        return client

    async def _secure(self, client: Client) -> None:
        sec = self.device.security
        if sec.policy == "None" or sec.certificate is None or sec.private_key is None:
            return
        cert = await uacrypto.load_certificate(str(sec.certificate))
        with contextlib.suppress(x509.ExtensionNotFound):
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
            if uris:  # servers check that the session's application URI matches the cert
                client.application_uri = uris[0]
        await client.set_security(
            getattr(security_policies, f"SecurityPolicy{sec.policy}"),
            str(sec.certificate),
            str(sec.private_key),
            server_certificate=str(sec.server_certificate) if sec.server_certificate else None,
            mode=getattr(ua.MessageSecurityMode, sec.mode),
        )

    async def _serve(self, session: _Session) -> None:
        """One session: connect, resolve, subscribe or poll, then wait until it is lost."""
        client = session.client

        async def on_lost(exc: Exception) -> None:
            session.lose(f"connection lost: {exc!r}")

        client.connection_lost_callback = on_lost
        async with asyncio.timeout(self.device.timeout * 4):
            await self._secure(client)
            await client.connect()
        session.connected = True
        self._m_connected.set(1)
        self._all_bad_sent = False  # the next loss marks the tags BAD again
        namespaces, limits = await self._server_info(client)
        bad = self._resolve(namespaces)
        if self.device.mode == "subscribe":
            polled, refused = await self._subscribe(session, limits)
            bad += refused
        else:
            polled = [it for it in self._items if it.nodeid is not None]
        if bad:
            self._emit(bad, read=False)
        for scan, items in self._by_scan(polled).items():
            task = asyncio.create_task(self._poll_loop(session, scan, items, limits))
            session.tasks.append(task)
        if self.device.mode == "subscribe":
            self._gate.ok()
        self._log.info(
            "opcua connected",
            endpoint=self.device.endpoint,
            subscriptions=len(session.subs),
            polled=len(polled),
            unavailable=len(bad),
        )
        await self._watch(session)

    async def _watch(self, session: _Session) -> None:
        """Wait for loss or stop; also notice a subscription the server stopped serving."""
        while not session.lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.lost.wait(), 1.0)
            now = time.monotonic()
            for sub_id, (last, stale_after) in session.subs.items():
                if now - last > stale_after:
                    session.lose(
                        f"subscription {sub_id} got no publish response for {stale_after:.0f}s"
                    )

    async def _close(self, session: _Session) -> None:
        for task in session.tasks:
            task.cancel()
        await asyncio.gather(*session.tasks, return_exceptions=True)
        if session.connected:
            session.connected = False
            self._m_connected.set(0)
            # Also deletes the subscriptions; on a dead link it fails fast or times out.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.client.disconnect(), self.device.timeout)
        else:
            # a connect cut short by our timeout (a cancellation) leaves asyncua's socket open
            session.client.disconnect_socket()

    def _failed(self, reason: str) -> None:
        """The link is down: log (loudly once), count, and mark every tag BAD in one batch."""
        self._gate.failed(reason, endpoint=self.device.endpoint)
        self._m_errors.inc()
        if not self._all_bad_sent:
            self._all_bad_sent = True
            now = _now_ms()
            self._emit([Sample(it.name, now, None, Quality.BAD) for it in self._items], read=False)

    async def _server_info(self, client: Client) -> tuple[list[str], _Limits]:
        """The NamespaceArray and the per-call operation limits, in one Read."""
        ids = (
            ua.ObjectIds.Server_NamespaceArray,
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
        )
        params = ua.ReadParameters(
            NodesToRead=[
                ua.ReadValueId(NodeId=ua.NodeId(ua.Int32(i)), AttributeId=ua.AttributeIds.Value)
                for i in ids
            ]
        )
        ns, max_read, max_monitor = await client.uaclient.read(params)
        if ns.Value is None or not isinstance(ns.Value.Value, list):
            raise ua.UaError("the server did not return its NamespaceArray")

        def limit(dv: ua.DataValue) -> int:
            v = dv.Value.Value if dv.Value is not None else None
            return v if isinstance(v, int) and v > 0 else _DEFAULT_CHUNK

        return list(ns.Value.Value), _Limits(read=limit(max_read), monitor=limit(max_monitor))

    def _resolve(self, namespaces: Sequence[str]) -> list[Sample]:
        """Resolve every tag's node id on this server; BAD samples for those that fail."""
        bad: list[Sample] = []
        now = _now_ms()
        for it in self._items:
            try:
                it.nodeid = resolve_node_id(it.tag.node, namespaces)
            except NodeIdError as err:
                it.nodeid = None
                uri = m.group(1) if (m := _NSU.match(it.tag.node)) else it.tag.node
                self._note(("nodeid", uri), "opcua node id unusable", tag=it.name, error=str(err))
                bad.append(Sample(it.name, now, None, Quality.BAD))
        return bad

    # ------------------------------------------------------------ subscribe mode

    async def _subscribe(
        self, session: _Session, limits: _Limits
    ) -> tuple[list[_Item], list[Sample]]:
        """Create subscriptions; return the items to poll instead and BAD samples of the rest."""
        d = self.device
        items = [it for it in self._items if it.nodeid is not None]
        pub_ms = d.publishing_interval * 1000
        keepalive = max(1, math.ceil(_KEEPALIVE_S / d.publishing_interval))
        to_poll: list[_Item] = []
        bad: list[Sample] = []
        for chunk in _chunks(items, d.max_items_per_subscription):
            params = ua.CreateSubscriptionParameters(
                RequestedPublishingInterval=pub_ms,
                RequestedLifetimeCount=keepalive * 6,
                RequestedMaxKeepAliveCount=keepalive,
                MaxNotificationsPerPublish=10_000,
                PublishingEnabled=True,
            )
            result = await session.client.uaclient.create_subscription(
                params, functools.partial(self._on_publish, session)
            )
            revised = result.RevisedPublishingInterval / 1000 * result.RevisedMaxKeepAliveCount
            session.subs[result.SubscriptionId] = (time.monotonic(), 2 * revised + d.timeout)
            polled, refused = await self._monitor(session, result.SubscriptionId, chunk, limits)
            to_poll += polled
            bad += refused
        return to_poll, bad

    def _request(self, it: _Item, *, with_filter: bool) -> ua.MonitoredItemCreateRequest:
        tag = it.tag
        mp = ua.MonitoringParameters(
            ClientHandle=it.handle,
            SamplingInterval=(tag.sampling_interval or it.period) * 1000,
            QueueSize=tag.queue_size,
            DiscardOldest=True,
        )
        if with_filter and tag.deadband is not None:
            db = tag.deadband
            if db.absolute is not None:
                # the server compares raw values; the config deadband is in scaled units
                value = db.absolute / abs(tag.scale) if tag.scale else db.absolute
                kind = ua.DeadbandType.Absolute
            else:
                value, kind = db.percent or 0.0, ua.DeadbandType.Percent
            mp.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=kind, DeadbandValue=value
            )
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=it.nodeid, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=mp,
        )

    async def _monitor(
        self, session: _Session, sub_id: int, items: Sequence[_Item], limits: _Limits
    ) -> tuple[list[_Item], list[Sample]]:
        """Create the monitored items; return the ones to poll and BAD samples of missing ones."""
        to_poll: list[_Item] = []
        bad: list[Sample] = []
        pending = [(it, True) for it in items]
        while pending:
            retry: list[tuple[_Item, bool]] = []
            for part in _chunks(pending, limits.monitor):
                params = ua.CreateMonitoredItemsParameters(
                    SubscriptionId=sub_id,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                    ItemsToCreate=[self._request(it, with_filter=f) for it, f in part],
                )
                results = await session.client.uaclient.create_monitored_items(params)
                for (it, with_filter), res in zip(part, results, strict=True):
                    if res.StatusCode.is_good():
                        self._check_revised(it, res.RevisedSamplingInterval)
                    elif with_filter and self._refused(it, res.StatusCode) == "filter":
                        retry.append((it, False))
                    elif res.StatusCode.value in _NO_NODE:
                        bad.append(Sample(it.name, _now_ms(), None, Quality.BAD))
                    else:
                        to_poll.append(it)
            pending = retry
        return to_poll, bad

    def _refused(self, it: _Item, status: ua.StatusCode) -> str:
        """Log (once) why the server refused an item: "filter", "node" or "poll"."""
        if it.tag.deadband is not None and status.value in _FILTER_REFUSED:
            event, outcome = "opcua deadband filter refused, subscribing without it", "filter"
        elif status.value in _NO_NODE:
            event, outcome = "opcua node does not exist", "node"
        else:
            event, outcome = "opcua server refused to monitor, polling", "poll"
        self._note((it.name, status.name), event, tag=it.name, node=it.tag.node, status=status.name)
        return outcome

    def _check_revised(self, it: _Item, revised_ms: float) -> None:
        """Servers raise a sampling interval below their minimum: say so once."""
        asked_ms = (it.tag.sampling_interval or it.period) * 1000
        if revised_ms > asked_ms * 1.01:
            self._note(
                ("*", "revised"),
                "opcua server samples slower than asked (first such tag)",
                tag=it.name,
                asked_ms=asked_ms,
                revised_ms=revised_ms,
            )

    def _on_publish(self, session: _Session, result: ua.PublishResult) -> None:
        """A publish response: one batch to the sink (keep-alives carry no data)."""
        if session is not self._session or session.lost.is_set():
            return
        sub = session.subs.get(result.SubscriptionId)
        if sub is not None:
            session.subs[result.SubscriptionId] = (time.monotonic(), sub[1])
        samples: list[Sample] = []
        now = _now_ms()
        for note in result.NotificationMessage.NotificationData:
            if isinstance(note, ua.DataChangeNotification):
                by_handle = self._by_handle
                for mi in note.MonitoredItems:
                    it = by_handle.get(mi.ClientHandle)
                    if it is not None:
                        samples.append(self._sample(it, mi.Value, now))
            elif isinstance(note, ua.StatusChangeNotification) and note.Status.is_bad():
                session.lose(f"subscription {result.SubscriptionId} ended: {note.Status.name}")
        if samples:
            self._m_reads.inc()
            self._emit(samples)

    # ------------------------------------------------------------ poll mode

    def _by_scan(self, items: Iterable[_Item]) -> dict[str, list[_Item]]:
        groups: dict[str, list[_Item]] = {}
        for it in items:
            groups.setdefault(it.scan, []).append(it)
        return groups

    async def _poll_loop(
        self, session: _Session, scan: str, items: list[_Item], limits: _Limits
    ) -> None:
        """Read a scan class every period (fixed rate; a late scan skips, never bunches)."""
        period = items[0].period
        timer = SCAN_SECONDS.labels(self.device.name, scan)
        next_at = time.monotonic()
        while not session.lost.is_set():
            t0 = time.monotonic()
            try:
                samples = await self._read(session.client, items, limits)
            except Exception as err:
                # A failed Read means the link is unusable: reconnect (all tags go BAD once).
                session.lose(describe_error(err, self.device)[0])
                return
            timer.observe(time.monotonic() - t0)
            self._emit(samples)
            if self.device.mode == "poll":
                self._gate.ok()
            now = time.monotonic()
            next_at += period
            if next_at < now:
                next_at += math.ceil((now - next_at) / period) * period
            await asyncio.sleep(next_at - now)

    async def _read(self, client: Client, items: list[_Item], limits: _Limits) -> list[Sample]:
        samples: list[Sample] = []
        for part in _chunks(items, limits.read):
            params = ua.ReadParameters(
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[
                    ua.ReadValueId(NodeId=it.nodeid, AttributeId=ua.AttributeIds.Value)
                    for it in part
                ],
            )
            results = await client.uaclient.read(params)
            self._m_reads.inc()
            now = _now_ms()
            samples += [self._sample(it, dv, now) for it, dv in zip(part, results, strict=True)]
        return samples

    # ------------------------------------------------------------ values

    def _sample(self, it: _Item, dv: ua.DataValue, now: int) -> Sample:
        """A Sample from a DataValue; problems are logged once per tag and reason."""
        status = dv.StatusCode
        quality = quality_of(status)
        ts = source_ts(dv, now)
        if quality is Quality.BAD:
            if status is not None and status.value in _NO_NODE:
                self._note(
                    (it.name, status.name),
                    "opcua node does not exist",
                    tag=it.name,
                    node=it.tag.node,
                    status=status.name,
                )
            return Sample(it.name, ts, None, Quality.BAD)
        raw = dv.Value.Value if dv.Value is not None else None
        value, problem = convert_value(raw, scale=it.tag.scale, offset=it.tag.offset)
        if problem is not None:
            self._note((it.name, "value"), "opcua value unusable", tag=it.name, reason=problem)
            return Sample(it.name, ts, None, Quality.BAD)
        return Sample(it.name, ts, value, quality)

    def _note(self, key: tuple[str, str], event: str, **kw: Any) -> None:
        """Log a per-tag problem once, not on every value."""
        if key not in self._noted:
            self._noted.add(key)
            self._log.warning(event, **kw)

    def _emit(self, samples: list[Sample], *, read: bool = True) -> None:
        if read:
            self._m_samples.inc(len(samples))
        try:
            self._sink(samples)
        except Exception as err:
            # the sink is ours, not the device's: report it (once) and keep reading
            self._sink_gate.failed(repr(err), samples=len(samples))
        else:
            self._sink_gate.ok()
