"""OpcUaSource against real asyncua servers started by the tests on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from asyncua import ua
from prometheus_client import REGISTRY

from edge_agent.config import OpcUaDevice
from edge_agent.contract import Quality
from edge_agent.sources.opcua import OpcUaSource, convert_value, to_ms
from tests.edge_agent.opcua_fixtures import (
    CLIENT_URI,
    NS_URI,
    Certs,
    Collector,
    OpcServer,
    make_certs,
    start_server,
)

SCANS = {"default": 0.2, "fast": 0.05}


def tag(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "node": f"nsu={NS_URI};s={name}", **kw}


def device(url: str, tags: list[dict[str, Any]], **kw: Any) -> OpcUaDevice:
    """A device with short timeouts so outages and reconnects take a second, not a minute."""
    fields: dict[str, Any] = {
        "name": "plc1",
        "protocol": "opcua",
        "endpoint": url,
        "machine": "m1",
        "timeout": 1.0,
        "backoff_max": 0.5,
        "publishing_interval": 0.05,
        "tags": tags,
    }
    return OpcUaDevice.model_validate(fields | kw)


@contextlib.asynccontextmanager
async def running(
    dev: OpcUaDevice,
) -> AsyncIterator[tuple[OpcUaSource, Collector, asyncio.Task[None]]]:
    """Run a source in a task; stop it (and check run() returns) on the way out."""
    sink = Collector()
    source = OpcUaSource(dev, scan_classes=SCANS, sink=sink)
    task = asyncio.create_task(source.run())
    try:
        yield source, sink, task
    finally:
        await source.stop()
        await asyncio.wait_for(task, 5)


@contextlib.asynccontextmanager
async def serving(**kw: Any) -> AsyncIterator[OpcServer]:
    server = await start_server(**kw)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog events (enter before the source is created: it binds its logger then)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def metric(name: str, dev: str) -> float:
    return REGISTRY.get_sample_value(name, {"device": dev}) or 0.0


# ---------------------------------------------------------------- pure conversion


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "expected", "problem"),
    [
        (7, 1.0, 0.0, 7, None),
        (100, 0.1, -5.0, 5.0, None),
        (True, 2.0, 1.0, True, None),
        (1.5, 2.0, 0.0, 3.0, None),
        ("SKU", 1.0, 0.0, "SKU", None),
        (datetime(2024, 1, 2, tzinfo=UTC), 1.0, 0.0, 1_704_153_600_000, None),
        (ua.LocalizedText("hi"), 1.0, 0.0, "hi", None),
        (float("nan"), 1.0, 0.0, None, "not a finite number"),
        (1e308, 10.0, 0.0, None, "not a finite number"),
        ([1, 2, 3], 1.0, 0.0, None, "array of 3 elements"),
        (b"\x00", 1.0, 0.0, None, "bytes are not supported"),
    ],
)
def test_convert_value(
    raw: Any, scale: float, offset: float, expected: Any, problem: str | None
) -> None:
    value, why = convert_value(raw, scale=scale, offset=offset)
    assert value == expected and type(value) is type(expected)
    assert (why is None) if problem is None else (problem in (why or ""))


# ---------------------------------------------------------------- subscribe mode


async def test_subscribe_values_changes_types_scale_and_source_timestamps() -> None:
    async with serving() as srv:
        tags = [
            tag("temp"),
            tag("count"),
            tag("running"),
            tag("recipe"),
            tag("raw", scale=0.1, offset=-5.0),
        ]
        async with running(device(srv.url, tags)) as (source, sink, _):
            # initial values come through the subscription, converted and typed
            assert (await sink.wait_value("temp", 21.5)).quality is Quality.GOOD
            count = await sink.wait_value("count", 7)
            assert type(count.value) is int
            assert (await sink.wait_value("running", True)).value is True
            await sink.wait_value("recipe", "SKU-1")
            assert (await sink.wait_value("raw", 5.0)).value == pytest.approx(5.0)
            assert source.connected
            initial = sum(len(b) for b in sink.batches)
            assert len(sink.batches) < initial, "initial values should arrive batched"

            when = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
            await srv.write("temp", 30.25, source_ts=when)
            await srv.write("running", False)
            await srv.write("recipe", "SKU-2")
            await srv.write("raw", 250)
            assert (await sink.wait_value("temp", 30.25)).ts == to_ms(when) == 1_714_979_289_123
            await sink.wait_value("running", False)
            await sink.wait_value("recipe", "SKU-2")
            assert (await sink.wait_value("raw", 20.0)).value == pytest.approx(20.0)

            # status codes map to quality; a bad value carries no value
            await srv.write("temp", 31.0, status=ua.StatusCodes.UncertainLastUsableValue)
            assert (await sink.wait_quality("temp", Quality.UNCERTAIN)).value == 31.0
            await srv.write("temp", 32.0, status=ua.StatusCodes.BadSensorFailure)
            assert (await sink.wait_quality("temp", Quality.BAD)).value is None
            await srv.write("temp", math.nan)
            nan = await sink.wait_quality("temp", Quality.BAD)
            assert nan.value is None
            assert srv.subscription_count() == 1
        # stop() deleted the subscription and closed the session
        assert srv.subscription_count() == 0
        assert srv.session_count() == 0


async def test_namespace_resolved_by_uri_and_items_spread_over_subscriptions() -> None:
    names = [f"v{i}" for i in range(120)]
    variables = {n: (i, ua.VariantType.Int32) for i, n in enumerate(names)}
    async with serving(variables=variables, extra_namespaces=["urn:a", "urn:b", "urn:c"]) as srv:
        assert srv.ns == 5  # not where a default server puts the first custom namespace
        dev = device(srv.url, [tag(n) for n in names], max_items_per_subscription=50)
        async with running(dev) as (_, sink, _):
            await sink.wait_for(
                lambda c: {s.tag for s in c.samples if s.quality is Quality.GOOD} == set(names),
                what="all 120 initial values",
            )
            assert {s.tag: s.value for s in sink.samples} == {n: i for i, n in enumerate(names)}
            assert srv.subscription_count() == 3  # 50 + 50 + 20
            assert metric("linepulse_edge_samples_read_total", "plc1") >= 120


async def test_absolute_deadband_suppresses_small_changes() -> None:
    async with serving() as srv:
        # deadband in scaled units: 5.0 / scale 10 = 0.5 in raw units on the server
        tags = [tag("temp", scale=10.0, deadband={"absolute": 5.0}), tag("level")]
        async with running(device(srv.url, tags)) as (_, sink, _):
            await sink.wait_value("temp", 215.0)
            await sink.wait_value("level", 21.5)
            for small in (21.8, 22.0):
                await srv.write("temp", small)
                await srv.write("level", small)
                # the unfiltered control tag shows that the change was published
                await sink.wait_value("level", small)
            await srv.write("temp", 25.0)
            await sink.wait_value("temp", 250.0)
            temps = [s.value for s in sink.samples if s.tag == "temp"]
            assert temps == [215.0, 250.0]


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_unknown_node_and_namespace_only_those_tags_bad(
    mode: str, logs: list[MutableMapping[str, Any]]
) -> None:
    async with serving() as srv:
        tags = [
            tag("temp", scan="fast"),
            {"name": "missing", "node": f"nsu={NS_URI};s=nope", "scan": "fast"},
            {"name": "elsewhere", "node": "nsu=urn:not-here;s=temp", "scan": "fast"},
        ]
        async with running(device(srv.url, tags, mode=mode)) as (_, sink, _):
            await sink.wait_value("temp", 21.5)
            await sink.wait_quality("missing", Quality.BAD)
            await sink.wait_quality("elsewhere", Quality.BAD)
            await srv.write("temp", 23.0)
            await sink.wait_value("temp", 23.0)
            await asyncio.sleep(0.3)  # several poll scans: still logged once
    missing = [e for e in events(logs, "opcua node does not exist") if e["tag"] == "missing"]
    assert len(missing) == 1 and missing[0]["status"] == "BadNodeIdUnknown"
    unusable = events(logs, "opcua node id unusable")
    assert len(unusable) == 1 and "urn:not-here" in unusable[0]["error"]
    assert not any(s.quality is Quality.BAD for s in sink.samples if s.tag == "temp")


async def test_refused_filter_and_refused_item_fall_back(
    logs: list[MutableMapping[str, Any]],
) -> None:
    def refuse(item: ua.MonitoredItemCreateRequest) -> int | None:
        # decoded filters are the generated class, not ua.DataChangeFilter (a subclass)
        if isinstance(item.RequestedParameters.Filter, ua.MonitoringFilter):
            return ua.StatusCodes.BadMonitoredItemFilterUnsupported
        if item.ItemToMonitor.NodeId.Identifier == "recipe":
            return ua.StatusCodes.BadTooManyMonitoredItems
        return None

    async with serving(refuse=refuse) as srv:
        tags = [tag("temp", deadband={"percent": 10}), tag("recipe", scan="fast"), tag("count")]
        async with running(device(srv.url, tags)) as (_, sink, _):
            await sink.wait_value("temp", 21.5)
            await sink.wait_value("recipe", "SKU-1")
            await sink.wait_value("count", 7)
            # subscribed without the filter: a small change still arrives (the agent's
            # report-by-exception applies the deadband downstream)
            await srv.write("temp", 21.6)
            await sink.wait_value("temp", 21.6)
            # polled: the change shows up on the next scan of its scan class
            await srv.write("recipe", "SKU-9")
            await sink.wait_value("recipe", "SKU-9")
            assert srv.subscription_count() == 1
    refused = events(logs, "opcua deadband filter refused, subscribing without it")
    assert [e["tag"] for e in refused] == ["temp"]
    polled = events(logs, "opcua server refused to monitor, polling")
    assert [(e["tag"], e["status"]) for e in polled] == [("recipe", "BadTooManyMonitoredItems")]


# ---------------------------------------------------------------- poll mode


async def test_poll_mode_reads_with_timestamps_and_status() -> None:
    async with serving() as srv:
        tags = [tag("temp", scan="fast"), tag("count", scan="fast"), tag("recipe")]
        reads_before = metric("linepulse_edge_device_reads_total", "plc-poll")
        dev = device(srv.url, tags, mode="poll", name="plc-poll")
        async with running(dev) as (_, sink, _):
            await sink.wait_value("temp", 21.5)
            await sink.wait_value("recipe", "SKU-1")
            when = datetime(2024, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)
            await srv.write("count", 8, source_ts=when)
            assert (await sink.wait_value("count", 8)).ts == to_ms(when)
            await srv.write("temp", 1.0, status=ua.StatusCodes.BadSensorFailure)
            assert (await sink.wait_quality("temp", Quality.BAD)).value is None
            await srv.write("temp", 3.5, status=ua.StatusCodes.UncertainLastUsableValue)
            assert (await sink.wait_quality("temp", Quality.UNCERTAIN)).value == 3.5
            await srv.write("temp", 4.5)
            await sink.wait_value("temp", 4.5)
            # one sink call per scan of a scan class, with every tag of that class
            fast = [b for b in sink.batches if {s.tag for s in b} == {"temp", "count"}]
            assert len(fast) >= 5
        assert metric("linepulse_edge_device_reads_total", "plc-poll") - reads_before >= len(fast)
        scans = REGISTRY.get_sample_value(
            "linepulse_edge_scan_seconds_count", {"device": "plc-poll", "scan": "fast"}
        )
        assert scans is not None and scans >= len(fast)


# ---------------------------------------------------------------- security


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certs]:
    d = tmp_path_factory.mktemp("pki")
    return {
        "server": make_certs(d, name="server", app_uri="urn:linepulse:test:server", server=True),
        "client": make_certs(d, name="client", app_uri=CLIENT_URI, server=False),
    }


def secure(
    url: str, certs: dict[str, Certs], *, pin: dict[str, str] | None = None, **kw: Any
) -> OpcUaDevice:
    security = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(certs["client"].cert),
        "private_key": str(certs["client"].key),
        **(pin or {}),
    }
    return device(url, [tag("temp"), tag("count")], security=security, **kw)


async def test_basic256sha256_sign_and_encrypt_with_user_and_password(
    certs: dict[str, Certs], logs: list[MutableMapping[str, Any]]
) -> None:
    async with serving(certs=certs["server"], users={"operator": "s3cret"}) as srv:
        # the server certificate is pinned here; the other devices fetch it from the endpoints
        pinned = {"server_certificate": str(certs["server"].cert)}
        good = secure(srv.url, certs, username="operator", password="s3cret", pin=pinned)
        async with running(good) as (source, sink, _):
            await sink.wait_value("temp", 21.5)
            await srv.write("temp", 22.5)
            await sink.wait_value("temp", 22.5)
            assert source.connected

        wrong = secure(srv.url, certs, username="operator", password="guess", name="plc-wrong")
        plain = device(srv.url, [tag("temp")], name="plc-plain")
        async with running(wrong) as (w_source, w_sink, w_task), running(plain) as (_, p_sink, _):
            await w_sink.wait_quality("temp", Quality.BAD)
            await w_sink.wait_quality("count", Quality.BAD)
            await p_sink.wait_quality("temp", Quality.BAD)
            await asyncio.sleep(1.2)  # retries (backoff_max 0.5 s) stay quiet and keep running
            assert not w_task.done() and not w_source.connected
            assert all(s.quality is Quality.BAD for s in w_sink.samples)
            assert len(w_sink.batches) == 1  # marked BAD once, not on every retry
    failures = [e for e in events(logs, "opcua connection failed") if e["device"] == "plc-wrong"]
    assert len(failures) == 1 and e_has(failures[0], "rejected user 'operator'", "password")
    plain_failures = [
        e for e in events(logs, "opcua connection failed") if e["device"] == "plc-plain"
    ]
    assert len(plain_failures) == 1


def e_has(event: MutableMapping[str, Any], *parts: str) -> bool:
    return all(p in event["error"] for p in parts)


# ---------------------------------------------------------------- outage


async def test_server_outage_marks_bad_once_then_resubscribes(
    logs: list[MutableMapping[str, Any]],
) -> None:
    srv = await start_server()
    port = srv.port
    tags = [tag("temp"), tag("count")]
    async with running(device(srv.url, tags)) as (source, sink, task):
        await sink.wait_value("temp", 21.5)
        await srv.stop()
        await sink.wait_for(
            lambda c: any(
                len(b) == 2 and all(s.quality is Quality.BAD for s in b) for b in c.batches
            ),
            what="one batch marking both tags BAD",
        )
        assert not source.connected
        await asyncio.sleep(1.5)  # several failed reconnects: no more BAD batches, no crash
        assert not task.done()
        bad_batches = [b for b in sink.batches if all(s.quality is Quality.BAD for s in b)]
        assert len(bad_batches) == 1

        # the new server puts the namespace at another index: resolved again on reconnect
        srv = await start_server(port=port, extra_namespaces=["urn:x", "urn:y"])
        try:
            await srv.write("temp", 40.0)
            await sink.wait_value("temp", 40.0, timeout=10)
            await srv.write("count", 9)
            await sink.wait_value("count", 9)
            assert source.connected
        finally:
            await srv.stop()
    assert len(events(logs, "opcua connection failed")) == 1
    assert len(events(logs, "opcua connection recovered")) == 1
