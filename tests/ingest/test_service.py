"""The ingest service end to end: real Mosquitto, real PostgreSQL, real faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import contract as c
from ingest.config import IngestSettings
from ingest.migrate import upgrade
from ingest.service import IngestService
from tests.harness import Mosquitto, PgCluster, free_port, pg_database

PATHS = [c.AssetPath("plant", "press", f"line-{i % 2}", f"m{i}") for i in range(4)]
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers


@pytest.fixture
def db(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


def make_settings(db: str, broker: Mosquitto, **kw: Any) -> IngestSettings:
    base: dict[str, Any] = {
        "database_url": db,
        "mqtt_url": broker.url,
        "mqtt_client_id": f"ingest-test-{os.getpid()}-{time.monotonic_ns()}",
        "health_port": None,
        "maintenance_interval": 0,
        "receive_maximum": 200,
        "batch_max_messages": 100,
        "max_held_messages": 400,
        "session_expiry": 600,
    }
    base.update(kw)
    return IngestSettings(**base)


class Running:
    """An IngestService in a thread of the test process."""

    def __init__(self, settings: IngestSettings) -> None:
        self.service = IngestService(settings)
        self.thread = threading.Thread(target=self.service.run, daemon=True)

    def start(self) -> Running:
        self.thread.start()
        wait_until(lambda: self.service.subscriber.subscribed, what="the service to subscribe")
        return self

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the service did not stop"


@pytest.fixture
def running() -> Iterator[Callable[[IngestSettings], Running]]:
    started: list[Running] = []

    def start(settings: IngestSettings) -> Running:
        r = Running(settings).start()
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class Publisher:
    """A QoS 1 paho publisher that waits for every PUBACK."""

    def __init__(self, broker: Mosquitto, client_id: str = "") -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0, 1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def send_all(self, items: list[tuple[str, bytes]], timeout: float = 30.0) -> None:
        infos = [self.send(t, p) for t, p in items]
        for info in infos:
            info.wait_for_publish(timeout)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def samples_payload(agent: str, seq: int, n: int, *, base: int | None = None) -> tuple[str, bytes]:
    """``n`` samples whose values encode (agent, seq) so a lost or doubled one shows."""
    path = PATHS[seq % len(PATHS)]
    base = base if base is not None else time.time_ns() // 1_000_000 - 60_000
    samples = tuple(c.Sample(f"t{i}", base + seq, float(seq * 1000 + i)) for i in range(n))
    msg = c.SamplesMessage(agent=agent, seq=seq, samples=samples)
    return c.machine_topic("linepulse", path, c.Kind.SAMPLES), c.encode(msg)


def count(db: str, query: str = "SELECT count(*) FROM samples") -> int:
    with psycopg.connect(db, connect_timeout=3) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def assert_exactly(db: str, expected: int) -> None:
    """``expected`` samples, each (tag, value) exactly once."""
    with psycopg.connect(db) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (tag_id, value)) FROM samples"
        ).fetchone()  # type: ignore[misc]
    assert (total, distinct) == (expected, expected)


# ---------------------------------------------------------------- end to end


def test_published_messages_are_stored_exactly(
    db: str, mosquitto: Mosquitto, running: Callable[[IngestSettings], Running]
) -> None:
    r = running(make_settings(db, mosquitto, health_port=0))
    pub = Publisher(mosquitto)
    now = time.time_ns() // 1_000_000
    birth = c.StatusMessage(
        agent="gw-1",
        status="online",
        ts=now - 120_000,
        tags=(c.TagInfo(PATHS[0], "t0", "float32", "degC"),),
    )
    events = c.EventsMessage(
        agent="gw-1",
        seq=10_000,
        events=(c.StateEvent(now - 5000, "running"), c.CountEvent(now - 4000, 4, 3, 1, "SKU")),
    )
    items = [(c.status_topic("linepulse", "gw-1"), c.encode(birth))]
    items += [samples_payload("gw-1", seq, 50) for seq in range(40)]
    items.append((c.machine_topic("linepulse", PATHS[1], c.Kind.EVENTS), c.encode(events)))
    items.append(("linepulse/v1/nowhere", b"junk"))
    items.append(samples_payload("gw-1", 3, 50))  # a replay: skipped
    pub.send_all(items)
    wait_until(lambda: count(db) >= 2000 and count(db, "SELECT count(*) FROM dead_letters"))
    wait_until(lambda: r.service.totals.messages == len(items), what="every message handled")
    assert_exactly(db, 2000)
    with psycopg.connect(db) as conn:
        values = {v for (v,) in conn.execute("SELECT value FROM samples")}
        assert values == {float(s * 1000 + i) for s in range(40) for i in range(50)}
        meta = conn.execute(
            "SELECT a.path, t.datatype, t.unit FROM tags t JOIN assets a ON a.id = t.asset_id"
            " WHERE t.name = 't0' ORDER BY 1"
        ).fetchall()
        assert sorted(meta) == sorted(
            [(str(PATHS[0]), "float32", "degC")] + [(str(p), "variant", None) for p in PATHS[1:]]
        )
        assert conn.execute("SELECT total, product FROM production_counts").fetchall() == [
            (4, "SKU")
        ]
        assert conn.execute("SELECT state FROM state_intervals").fetchall() == [("running",)]
        assert conn.execute("SELECT status FROM gateways").fetchall() == [("online",)]
        assert conn.execute("SELECT topic FROM dead_letters").fetchall() == [
            ("linepulse/v1/nowhere",)
        ]
    assert r.service.totals.duplicates == 1
    port = r.service.health_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["broker"] and health["database"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "linepulse_ingest_samples_written_total" in text
    assert 'linepulse_ingest_dead_letters_total{reason="topic"}' in text
    pub.close()


def test_stop_acks_everything_it_committed(
    db: str, mosquitto: Mosquitto, running: Callable[[IngestSettings], Running]
) -> None:
    """After a clean stop nothing comes back: every stored message was acked."""
    settings = make_settings(db, mosquitto)
    first = running(settings)
    pub = Publisher(mosquitto)
    pub.send_all([samples_payload("gw-1", seq, 20) for seq in range(100)])
    wait_until(lambda: count(db) == 2000, what="2000 samples")
    first.stop()
    second = running(settings)  # same client id: the same broker session
    pub.send_all([samples_payload("gw-1", seq, 20) for seq in range(100, 110)])
    wait_until(lambda: count(db) == 2200, what="2200 samples")
    time.sleep(0.5)
    assert second.service.totals.duplicates == 0
    assert second.service.totals.messages == 10
    pub.close()


def test_messages_published_while_the_service_is_down_are_stored(
    db: str, mosquitto: Mosquitto, running: Callable[[IngestSettings], Running]
) -> None:
    settings = make_settings(db, mosquitto)
    running(settings).stop()  # creates the durable session and its shared subscription
    pub = Publisher(mosquitto)
    pub.send_all([samples_payload("gw-1", seq, 10) for seq in range(50)])
    running(settings)
    wait_until(lambda: count(db) == 500, what="the queued messages")
    assert_exactly(db, 500)
    pub.close()


@pytest.mark.slow
def test_broker_restart_resubscribes_and_loses_nothing(
    db: str, mosquitto: Mosquitto, running: Callable[[IngestSettings], Running]
) -> None:
    r = running(make_settings(db, mosquitto))
    pub = Publisher(mosquitto)
    pub.send_all([samples_payload("gw-1", seq, 10) for seq in range(50)])
    wait_until(lambda: count(db) == 500)
    mosquitto.stop()
    wait_until(lambda: not r.service.subscriber.connected, what="the disconnect")
    mosquitto.start()
    wait_until(lambda: r.service.subscriber.connected, what="the reconnect", timeout=30)
    pub2 = Publisher(mosquitto)
    pub2.send_all([samples_payload("gw-1", seq, 10) for seq in range(50, 100)])
    wait_until(lambda: count(db) == 1000, what="messages after the restart")
    assert_exactly(db, 1000)
    pub.close()
    pub2.close()


# ---------------------------------------------------------------- scale-out


def test_two_workers_share_the_subscription_and_store_each_sample_once(
    db: str, mosquitto: Mosquitto, running: Callable[[IngestSettings], Running]
) -> None:
    a = running(make_settings(db, mosquitto, mqtt_client_id="worker-a"))
    b = running(make_settings(db, mosquitto, mqtt_client_id="worker-b"))
    pub = Publisher(mosquitto)
    items = [samples_payload(f"gw-{seq % 3}", seq, 25) for seq in range(300)]
    pub.send_all(items)
    wait_until(lambda: count(db) == 300 * 25, what="all samples")
    wait_until(lambda: a.service.totals.messages + b.service.totals.messages >= 300)
    assert_exactly(db, 300 * 25)
    assert a.service.totals.new > 0 and b.service.totals.new > 0
    assert a.service.totals.new + b.service.totals.new == 300
    pub.close()


# ---------------------------------------------------------------- malformed input


def _invalid(raw: bytes) -> bool:
    try:
        c.decode(raw, now_ms=time.time_ns() // 1_000_000)
    except c.ContractError:
        return True
    return False


_valid_raw = c.encode(
    c.SamplesMessage(agent="gw-9", seq=1, samples=(c.Sample("t", 1_700_000_000_000, 1.5),))
)
malformed = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda pos, junk: _valid_raw[:pos] + junk + _valid_raw[pos + 1 :],
        st.integers(0, len(_valid_raw) - 1),
        st.binary(max_size=3),
    ),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(["v", "agent", "seq", "samples", "events", "status", "ts"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers())),
        ),
    ),
).filter(_invalid)
topics = st.sampled_from(
    [
        c.machine_topic("linepulse", PATHS[0], c.Kind.SAMPLES),
        c.machine_topic("linepulse", PATHS[1], c.Kind.EVENTS),
        c.status_topic("linepulse", "gw-9"),
        "linepulse/v1/x",
        "linepulse/v1/a/b/c/d/e/f/g",
    ]
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(bad=st.lists(st.tuples(topics, malformed), min_size=1, max_size=15))
def test_malformed_payloads_are_dead_lettered_and_the_service_keeps_going(
    db: str,
    mosquitto: Mosquitto,
    running: Callable[[IngestSettings], Running],
    bad: list[tuple[str, bytes]],
) -> None:
    # One service for all the examples (hypothesis reuses the fixtures): counts accumulate.
    if _SHARED.get("db") != db:
        _SHARED.update(db=db, service=running(make_settings(db, mosquitto)), seen=[0, 0])
        _SHARED["pub"] = Publisher(mosquitto)
    pub, seen = _SHARED["pub"], _SHARED["seen"]
    seq = seen[1]
    items = [samples_payload("gw-ok", seq, 3), *bad, samples_payload("gw-ok", seq + 1, 3)]
    pub.send_all(items)
    seen[0] += len(bad)
    seen[1] += 2
    wait_until(
        lambda: count(db, "SELECT count(*) FROM dead_letters") == seen[0], what="dead letters"
    )
    wait_until(lambda: count(db) == seen[1] * 3, what="the valid messages beside them")
    with psycopg.connect(db) as conn:
        reasons = conn.execute("SELECT reason FROM dead_letters WHERE reason = ''").fetchall()
    assert reasons == []


_SHARED: dict[str, Any] = {}


# ---------------------------------------------------------------- faults in other processes


def _service_env(db: str, broker: Mosquitto, client_id: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEPULSE_")}
    env.update(
        {
            "LINEPULSE_DATABASE_URL": db,
            "LINEPULSE_MQTT_URL": broker.url,
            "LINEPULSE_MQTT_CLIENT_ID": client_id,
            "LINEPULSE_HEALTH_PORT": "0",
            "LINEPULSE_RECEIVE_MAXIMUM": "100",
            "LINEPULSE_BATCH_MAX_MESSAGES": "50",
            "LINEPULSE_MAINTENANCE_INTERVAL": "0",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _probe(db: str, broker: Mosquitto) -> None:
    """Publish a status message until it is stored: the service is subscribed and writing."""
    pub = Publisher(broker)
    try:
        deadline = time.monotonic() + 60
        while count(db, "SELECT count(*) FROM gateway_status WHERE agent = 'probe'") == 0:
            assert time.monotonic() < deadline, "the service never stored the probe"
            msg = c.StatusMessage(agent="probe", status="online", ts=time.time_ns() // 1_000_000)
            pub.send(c.status_topic("linepulse", "probe"), c.encode(msg))
            time.sleep(0.3)
    finally:
        pub.close()


def _start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest.service", "--log-level", "info"],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=out,
    )
    out.close()
    return proc


class Stream:
    """Publishes samples messages in a thread until stopped; knows what it published."""

    def __init__(self, broker: Mosquitto, *, per_message: int = 20, rate: float = 200) -> None:
        self.pub = Publisher(broker)
        self.per_message = per_message
        self.rate = rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            info = self.pub.send(*samples_payload("gw-s", self.sent, self.per_message))
            info.wait_for_publish(30)
            self.sent += 1
            time.sleep(1 / self.rate)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        self.pub.close()
        return self.sent * self.per_message


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_stores_everything_exactly_once(
    db: str, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    env = _service_env(db, mosquitto, "ingest-kill")
    log = tmp_path / "service.log"
    proc = _start_service(env, log)
    try:
        _probe(db, mosquitto)  # messages published before the subscription exists are not kept
        stream = Stream(mosquitto).start()
        wait_until(lambda: count(db) > 2000, what="ingest running", timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = count(db)
        time.sleep(1.0)  # messages pile up at the broker meanwhile
        proc = _start_service(env, log)
        wait_until(lambda: count(db) > killed_at + 2000, what="ingest running again", timeout=60)
        expected = stream.stop()
        wait_until(lambda: count(db) >= expected, what=f"{expected} samples", timeout=60)
        time.sleep(1.0)
        assert_exactly(db, expected)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print(log.read_text()[-3000:])


@pytest.mark.slow
def test_database_outage_holds_messages_and_loses_nothing(
    mosquitto: Mosquitto, running: Callable[[IngestSettings], Running]
) -> None:
    cluster = PgCluster().start()
    try:
        url, _drop = pg_database(cluster.admin_url)
        upgrade(url)
        r = running(make_settings(url, mosquitto, db_reconnect_max_delay=1.0, receive_maximum=200))
        stream = Stream(mosquitto, rate=100).start()
        wait_until(lambda: count(url) > 1000, what="ingest running")
        cluster.stop()
        wait_until(lambda: not r.service.health()[0], what="the outage noticed", timeout=20)
        time.sleep(10)
        held = r.service.subscriber.held
        assert 0 < held <= 400  # bounded: receive_maximum/max_held_messages
        cluster.start()
        wait_until(lambda: r.service.health()[0], what="recovery", timeout=60)
        expected = stream.stop()
        wait_until(lambda: count(url) >= expected, what=f"{expected} samples", timeout=60)
        time.sleep(0.5)
        assert_exactly(url, expected)
        r.stop()
    finally:
        cluster.close()


@pytest.mark.slow
def test_held_messages_are_bounded_and_left_to_the_broker_when_the_database_is_down(
    db: str, mosquitto: Mosquitto, running: Callable[[IngestSettings], Running]
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    down = make_settings(
        nowhere,
        mosquitto,
        mqtt_client_id="ingest-held",
        receive_maximum=50,
        batch_max_messages=20,
        max_held_messages=60,
        shutdown_timeout=1.0,
        db_reconnect_max_delay=0.5,
    )
    r = running(down)
    pub = Publisher(mosquitto)
    pub.send_all([samples_payload("gw-1", seq, 5) for seq in range(200)])
    # ReceiveMaximum: the broker stops at 50 unacknowledged messages.
    wait_until(lambda: r.service.subscriber.held == 50, what="50 held messages")
    time.sleep(1.0)
    assert r.service.subscriber.held == 50
    assert not r.service.health()[0]
    # After a broker restart the 50 come again (not acked on the old connection) on top of
    # the ones still held: reading pauses at max_held_messages.
    mosquitto.stop()
    mosquitto.start()
    wait_until(lambda: r.service.subscriber.held == 60, what="the pause at 60", timeout=30)
    time.sleep(1.0)
    assert r.service.subscriber.held == 60
    r.stop()  # cannot commit: gives up after shutdown_timeout, acks nothing
    good = running(make_settings(db, mosquitto, mqtt_client_id="ingest-held"))
    wait_until(lambda: count(db) == 1000, what="every message from the broker's session")
    time.sleep(0.5)
    assert_exactly(db, 1000)
    assert good.service.totals.duplicates == 0
    pub.close()


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


@pytest.mark.slow
def test_worker_processes_split_the_load(db: str, mosquitto: Mosquitto, tmp_path: Path) -> None:
    env = _service_env(db, mosquitto, "ingest-pool")
    port = free_port()
    env["LINEPULSE_HEALTH_PORT"] = str(port)
    log = tmp_path / "service.log"
    out = open(log, "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest.service", "--workers", "2", "--log-level", "warning"],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=out,
    )
    out.close()
    try:
        _probe(db, mosquitto)
        pub = Publisher(mosquitto)
        pub.send_all([samples_payload(f"gw-{seq % 4}", seq, 10) for seq in range(400)])
        wait_until(lambda: count(db) == 4000, what="4000 samples")
        assert_exactly(db, 4000)
        name = "linepulse_ingest_messages_stored_total"
        wait_until(lambda: _metric(port, name) + _metric(port + 1, name) == 400)
        assert _metric(port, name) > 0 and _metric(port + 1, name) > 0
        pub.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print(log.read_text()[-3000:])
