"""The MQTT publisher against real Mosquitto brokers: acks, status, outages, versions, TLS, auth."""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from edge_agent.config import BrokerConfig, PublishConfig, TLSConfig
from edge_agent.contract import (
    Kind,
    Sample,
    SamplesMessage,
    StatusMessage,
    decode,
    encode,
    encode_body,
    status_topic,
)
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from tests.harness import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "lp"
TOPIC = f"{PREFIX}/v1/site/area/line/m1/samples"
TS = 1_700_000_000_000


# ------------------------------------------------------------------ helpers


def wait_until(cond: Callable[[], bool], *, timeout: float = 10.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def body(i: int) -> bytes:
    return encode_body(Kind.SAMPLES, [Sample(tag="temp", ts=TS + i, value=i)])


def birth_of(agent: str) -> Callable[[], bytes]:
    return lambda: encode(StatusMessage(agent=agent, status="online", ts=int(time.time() * 1000)))


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class Subscriber:
    """A paho MQTT 5 subscriber at QoS 1 that records what arrives (optionally durable)."""

    def __init__(
        self,
        port: int,
        *,
        topics: tuple[str, ...] = (f"{PREFIX}/v1/#",),
        durable: bool = False,
        tls_ca: Path | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.arrived: list[float] = []  # monotonic arrival time of each message
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.reconnect_delay_set(1, 1)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300 if durable else 0
        self.client.connect(
            "127.0.0.1", port, keepalive=5, clean_start=not durable, properties=props
        )
        self.client.loop_start()
        assert self._subscribed.wait(10), "the subscriber did not get its SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)
            self.arrived.append(time.monotonic())

    def data(self) -> list[SamplesMessage]:
        with self._lock:
            msgs = list(self.messages)
        return [m for m in (decode(x.payload) for x in msgs) if isinstance(m, SamplesMessage)]

    def seqs(self) -> list[int]:
        return [m.seq for m in self.data()]

    def deliveries(self) -> list[tuple[int, bool]]:
        """(seq, DUP flag) of every data message, in arrival order."""
        with self._lock:
            msgs = list(self.messages)
        out = []
        for msg in msgs:
            decoded = decode(msg.payload)
            if isinstance(decoded, SamplesMessage):
                out.append((decoded.seq, bool(msg.dup)))
        return out

    def seq_times(self) -> dict[int, float]:
        """seq -> arrival time (of the last copy)."""
        with self._lock:
            pairs = list(zip(self.messages, self.arrived, strict=True))
        out = {}
        for msg, at in pairs:
            decoded = decode(msg.payload)
            if isinstance(decoded, SamplesMessage):
                out[decoded.seq] = at
        return out

    def statuses(self) -> list[tuple[StatusMessage, bool]]:
        with self._lock:
            msgs = list(self.messages)
        out = []
        for m in msgs:
            decoded = decode(m.payload)
            if isinstance(decoded, StatusMessage):
                out.append((decoded, m.retain))
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", agent_id="gw-1", max_bytes=1 << 30)
    yield box
    box.close()


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    """Things to close at the end, last first, even when the test fails."""
    todo: list[Callable[[], None]] = []
    yield todo
    for close in reversed(todo):
        close()


def start_publisher(
    url: str,
    outbox: Outbox,
    cleanup: list[Callable[[], None]],
    *,
    publish: PublishConfig | None = None,
    **broker: Any,
) -> Publisher:
    pub = Publisher(
        BrokerConfig(url=url, topic_prefix=PREFIX, **broker),
        agent_id=outbox.agent_id,
        outbox=outbox,
        publish=publish or PublishConfig(),
        birth=birth_of(outbox.agent_id),
        reconnect_max_delay=2,
    )
    pub.start()
    cleanup.append(lambda: pub.stop(timeout=3))
    return pub


def kill(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()


def cut_the_link(pub: Publisher) -> None:
    """Shut the publisher's TCP connection down under paho (the test reaches inside)."""
    sock = pub._client.socket() if pub._client else None
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


def put(outbox: Outbox, n: int, start: int = 0) -> list[int]:
    return outbox.put([(TOPIC, Kind.SAMPLES, body(start + i)) for i in range(n)])


# ------------------------------------------------------------------ publishing and acks


def test_messages_are_published_and_deleted_after_puback(
    mosquitto: Mosquitto, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    sub = Subscriber(mosquitto.port)
    cleanup.append(sub.close)
    published_before = metric("linepulse_edge_published_messages_total")
    queued = put(outbox, 30)  # there before the publisher starts: the backlog
    pub = start_publisher(mosquitto.url, outbox, cleanup)
    wait_until(lambda: outbox.depth == 0, what="the backlog to be acknowledged")
    live = put(outbox, 5, start=30)
    pub.wake()
    wait_until(lambda: outbox.depth == 0, timeout=2, what="live messages to be acknowledged")
    wait_until(lambda: len(sub.seqs()) == 35, what="35 messages at the subscriber")
    assert sub.seqs() == queued + live
    data = sub.data()
    assert {m.agent for m in data} == {"gw-1"}
    assert [m.samples[0].value for m in data] == list(range(35))
    assert metric("linepulse_edge_published_messages_total") - published_before == 35
    assert metric("linepulse_edge_broker_connected") == 1
    assert pub.connected and pub.inflight == 0 and pub.protocol == "5"


@pytest.mark.parametrize(
    ("drop", "least", "limit"), [(("max_inflight_messages",), 2, 19), ((), 20, 200)]
)
def test_window_follows_the_brokers_receive_maximum(
    tmp_path: Path,
    outbox: Outbox,
    cleanup: list[Callable[[], None]],
    drop: tuple[str, ...],
    least: int,
    limit: int,
) -> None:
    """Mosquitto's default Receive Maximum is 20: the window shrinks to it, keeping one slot
    for the status message; a broker without a limit gets max_inflight."""
    broker = custom_broker(tmp_path, drop=drop)
    cleanup.append(broker.close)
    sub = Subscriber(broker.port)
    cleanup.append(sub.close)
    pub = start_publisher(broker.url, outbox, cleanup, publish=PublishConfig(max_inflight=200))
    wait_until(lambda: pub.connected, what="the connection")
    seqs = put(outbox, 2000)
    pub.wake()
    most = 0

    def drained() -> bool:
        nonlocal most
        most = max(most, pub.inflight)
        return outbox.depth == 0

    wait_until(drained, timeout=20, what="2000 messages acknowledged")
    assert least <= most <= limit
    wait_until(lambda: len(sub.seqs()) == 2000, what="2000 messages at the subscriber")
    assert sub.seqs() == seqs


def test_birth_is_retained_and_the_will_says_offline_when_the_agent_dies(
    mosquitto: Mosquitto, tmp_path: Path, cleanup: list[Callable[[], None]]
) -> None:
    agent = "gw-dies"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mosquitto.url, agent, str(tmp_path / "o.db")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    cleanup.append(lambda: kill(child))
    assert child.stdout is not None
    for line in child.stdout:  # the child's logs come first
        if line.strip() == "up":
            break
    else:
        raise AssertionError("the child publisher exited before connecting")
    topic = status_topic(PREFIX, agent)
    sub = Subscriber(mosquitto.port, topics=(topic,))  # subscribes after the birth
    cleanup.append(sub.close)
    wait_until(lambda: len(sub.statuses()) == 1, what="the retained birth")
    status, retained = sub.statuses()[0]
    assert (status.agent, status.status, retained) == (agent, "online", True)
    child.send_signal(signal.SIGKILL)
    wait_until(lambda: len(sub.statuses()) == 2, what="the last will")
    assert sub.statuses()[1][0].status == "offline"
    late = Subscriber(mosquitto.port, topics=(topic,))
    cleanup.append(late.close)
    wait_until(lambda: len(late.statuses()) == 1, what="the retained will")
    assert late.statuses()[0][0].status == "offline" and late.statuses()[0][1]


CHILD = """
import sys, time
from pathlib import Path
from edge_agent.config import BrokerConfig, PublishConfig
from edge_agent.contract import StatusMessage, encode
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
url, agent, path = sys.argv[1:4]
box = Outbox(Path(path), agent_id=agent, max_bytes=1 << 20)
birth = lambda: encode(StatusMessage(agent=agent, status="online", ts=int(time.time() * 1000)))
pub = Publisher(BrokerConfig(url=url, topic_prefix="lp"), agent_id=agent, outbox=box,
                publish=PublishConfig(), birth=birth)
pub.start()
while not pub.connected:
    time.sleep(0.02)
print("up", flush=True)
time.sleep(120)
"""


def test_clean_stop_waits_for_acks_and_publishes_offline_not_the_will(
    mosquitto: Mosquitto, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    sub = Subscriber(mosquitto.port)
    cleanup.append(sub.close)
    pub = Publisher(
        BrokerConfig(url=mosquitto.url, topic_prefix=PREFIX),
        agent_id="gw-1",
        outbox=outbox,
        publish=PublishConfig(max_inflight=16),
        birth=birth_of("gw-1"),
    )
    pub.start()
    wait_until(lambda: pub.connected and len(sub.statuses()) == 1, what="the birth")
    seqs = put(outbox, 2000)
    pub.wake()
    wait_until(lambda: pub.inflight > 0, what="messages in flight")
    before_stop = int(time.time() * 1000)
    pub.stop(timeout=5)
    assert pub.inflight == 0 and not pub.connected  # stop waited for the acks in flight
    kept = {m.seq for m in outbox.pending(limit=5000)}
    deleted = [s for s in seqs if s not in kept]
    assert 0 < len(deleted) < len(seqs)  # it stopped part way, sending nothing new
    wait_until(lambda: len(sub.statuses()) == 2, what="the offline status")
    assert set(deleted) <= set(sub.seqs())  # nothing deleted that the broker did not take
    offline = sub.statuses()[1][0]
    assert offline.status == "offline" and offline.ts >= before_stop  # ours, not the will
    # Would the broker also send the will, it would come right after the disconnect.
    time.sleep(0.5)
    assert [s.status for s, _ in sub.statuses()] == ["online", "offline"]
    late = Subscriber(mosquitto.port, topics=(status_topic(PREFIX, "gw-1"),))
    cleanup.append(late.close)
    wait_until(lambda: len(late.statuses()) == 1, what="the retained offline")
    assert late.statuses()[0][0].status == "offline"


def test_a_killed_connection_reconnects_resends_and_republishes_the_birth(
    mosquitto: Mosquitto, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    sub = Subscriber(mosquitto.port)
    cleanup.append(sub.close)
    pub = start_publisher(mosquitto.url, outbox, cleanup)
    wait_until(lambda: pub.connected, what="the connection")
    first = put(outbox, 5)
    pub.wake()
    wait_until(lambda: outbox.depth == 0, what="the first acks")
    cut_the_link(pub)
    wait_until(lambda: not pub.connected, what="the disconnect")
    second = put(outbox, 5, start=5)  # stored while the link is down
    pub.wake()
    wait_until(lambda: outbox.depth == 0, what="the resend after the reconnect")
    wait_until(lambda: len(sub.seqs()) == 10, what="10 messages")
    assert sub.seqs() == first + second
    statuses = [s.status for s, _ in sub.statuses()]
    assert statuses == ["online", "offline", "online"]  # birth, will, birth again


def test_messages_in_flight_when_the_link_drops_are_sent_again_once(
    tmp_path: Path, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    """The outbox resends what was unacknowledged; paho must not resend it as well."""
    broker = custom_broker(tmp_path, extra=("allow_anonymous true", "log_type all"))
    cleanup.append(broker.close)
    sub = Subscriber(broker.port)
    cleanup.append(sub.close)
    publish = PublishConfig(max_inflight=32, replay_rate=1e6)
    pub = start_publisher(broker.url, outbox, cleanup, publish=publish)
    wait_until(lambda: pub.connected, what="the connection")
    seqs = put(outbox, 3000)
    pub.wake()
    wait_until(lambda: len(sub.seqs()) > 200 and pub.inflight > 0, what="a busy link")
    cut_the_link(pub)
    wait_until(lambda: outbox.depth == 0, timeout=20, what="the outbox to drain")
    wait_until(lambda: set(sub.seqs()) == set(seqs), what="every seq")
    copies = collections.Counter(sub.seqs())
    assert max(copies.values()) <= 2  # once, plus at most one resend after the reconnect
    assert sum(c - 1 for c in copies.values()) <= publish.max_inflight
    # paho marks its own resends DUP; the pump's resends are fresh publishes.
    log = (broker.dir / "mosquitto.log").read_text()
    assert "Received PUBLISH from gw-1 (d0, q1" in log
    assert "Received PUBLISH from gw-1 (d1" not in log


# ------------------------------------------------------------------ outages and replay


@pytest.mark.slow
def test_broker_outage_loses_nothing_and_publishes_each_seq_once(
    mosquitto: Mosquitto, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    sub = Subscriber(mosquitto.port, durable=True)
    cleanup.append(sub.close)
    pub = start_publisher(mosquitto.url, outbox, cleanup)
    wait_until(lambda: pub.connected, what="the connection")
    phases: dict[str, list[int]] = {"before": [], "down": [], "after": []}
    phase = ["before"]
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            phases[phase[0]] += put(outbox, 1, start=i)
            pub.wake()
            i += 1
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    cleanup.append(stop.set)
    time.sleep(1.0)
    phase[0] = "down"
    mosquitto.stop()
    time.sleep(5.0)
    mosquitto.start()
    phase[0] = "after"
    wait_until(lambda: pub.connected, timeout=10, what="the reconnect")
    time.sleep(1.0)
    stop.set()
    producer.join()
    every = phases["before"] + phases["down"] + phases["after"]
    assert len(phases["down"]) > 50
    wait_until(lambda: outbox.depth == 0, timeout=15, what="the outbox to drain")
    wait_until(lambda: len(sub.seqs()) >= len(every), timeout=15, what="every seq")
    time.sleep(0.3)  # a late duplicate would arrive now
    deliveries = sub.deliveries()
    assert sorted({seq for seq, _ in deliveries}) == every  # nothing lost
    # The publisher sent each seq once: any second copy is the broker redelivering to the
    # subscriber (DUP set) a message whose PUBACK the shutdown cut off; the ingest dedups it.
    fresh = [seq for seq, dup in deliveries if not dup]
    assert len(fresh) == len(set(fresh)), "a seq was published twice"
    first_seen = list(dict.fromkeys(seq for seq, _ in deliveries))
    assert [s for s in first_seen if s <= phases["before"][-1]] == phases["before"]
    # After the reconnect the backlog (everything stored up to the reconnect, so every seq of
    # the outage) and the live messages are two increasing streams, interleaved.
    later = [s for s in first_seen if s > phases["before"][-1]]
    assert any(
        _increasing([s for s in later if s <= end]) and _increasing([s for s in later if s > end])
        for end in range(phases["down"][-1], later[-1] + 1)
    ), f"the backlog or the live messages were reordered: {later}"


def _increasing(seqs: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(seqs))


def test_replay_is_paced_while_live_messages_go_at_once(
    mosquitto: Mosquitto, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    sub = Subscriber(mosquitto.port)
    cleanup.append(sub.close)
    backlog = put(outbox, 60)  # stored before the connect: replayed at the rate
    rate = 30.0
    pub = start_publisher(mosquitto.url, outbox, cleanup, publish=PublishConfig(replay_rate=rate))
    wait_until(lambda: pub.connected and len(sub.seqs()) >= 5, what="the replay to start")
    live = put(outbox, 3, start=100)
    pub.wake()
    live_put_at = time.monotonic()
    wait_until(lambda: len(sub.seqs()) == 63, timeout=10, what="every message")
    got, at = sub.seqs(), sub.seq_times()
    assert [s for s in got if s in backlog] == backlog
    assert [s for s in got if s in live] == live
    replay_took = at[backlog[-1]] - at[backlog[0]]
    bucket = rate / 10  # the burst the token bucket allows
    assert (len(backlog) - bucket - 1) / rate * 0.9 <= replay_took < len(backlog) / rate + 2
    assert max(at[s] for s in live) - live_put_at < 0.5  # not queued behind the backlog
    assert max(at[s] for s in live) < at[backlog[-1]]


# ------------------------------------------------------------------ protocol versions


class ProtocolProxy:
    """A TCP relay to a real broker that records CONNECT protocol levels and can refuse MQTT 5
    the way a 3.1.1-only broker does (CONNACK return code 1, then close)."""

    def __init__(self, upstream: int, *, refuse_v5: bool) -> None:
        self.upstream, self.refuse_v5 = upstream, refuse_v5
        self.levels: list[int] = []
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        first = conn.recv(4096)  # the CONNECT: 0x10, length, 00 04 "MQTT", level
        level = first[first.index(b"MQTT") + 4]
        self.levels.append(level)
        if level == 5 and self.refuse_v5:
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream))
        up.sendall(first)
        threading.Thread(target=_pipe, args=(up, conn), daemon=True).start()
        _pipe(conn, up)

    def close(self) -> None:
        self._closing = True
        self._server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize(
    ("setting", "refuse_v5", "levels", "used"),
    [
        ("3.1.1", False, [4], "3.1.1"),
        ("auto", True, [5, 4], "3.1.1"),
        ("auto", False, [5], "5"),
    ],
)
def test_protocol_versions_and_fallback(
    mosquitto: Mosquitto,
    outbox: Outbox,
    cleanup: list[Callable[[], None]],
    setting: str,
    refuse_v5: bool,
    levels: list[int],
    used: str,
) -> None:
    proxy = ProtocolProxy(mosquitto.port, refuse_v5=refuse_v5)
    cleanup.append(proxy.close)
    sub = Subscriber(mosquitto.port)
    cleanup.append(sub.close)
    seqs = put(outbox, 5)
    pub = start_publisher(f"mqtt://127.0.0.1:{proxy.port}", outbox, cleanup, protocol=setting)
    wait_until(lambda: outbox.depth == 0, what="the messages to be acknowledged")
    wait_until(lambda: len(sub.seqs()) == 5, what="the messages at the subscriber")
    assert sub.seqs() == seqs
    assert [s.status for s, _ in sub.statuses()] == ["online"]
    assert proxy.levels == levels
    assert pub.protocol == used


# ------------------------------------------------------------------ TLS and credentials


def custom_broker(
    tmp_path: Path, *, extra: tuple[str, ...] = (), drop: tuple[str, ...] = ()
) -> Mosquitto:
    """A private Mosquitto whose config is the harness's plus listener options, minus some."""
    broker = Mosquitto(workdir=tmp_path / f"mosq-{uuid.uuid4().hex[:6]}")
    lines = [
        line
        for line in broker.conf.read_text().splitlines()
        if not line.startswith(drop) and not (extra and line.startswith("allow_anonymous"))
    ]
    listener = next(i for i, line in enumerate(lines) if line.startswith("listener"))
    lines[listener + 1 : listener + 1] = list(extra)
    broker.conf.write_text("\n".join(lines) + "\n")
    return broker.start()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files)."""
    now = datetime.now(UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name) -> Any:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "linepulse test CA")])
    ca = (
        build("linepulse test CA", ca_key, ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        build("localhost", key, ca_name)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_with_a_private_ca(
    tmp_path: Path, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    ca, cert, key = make_certificates(tmp_path / "pki")
    broker = custom_broker(
        tmp_path,
        extra=(f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "allow_anonymous true"),
    )
    cleanup.append(broker.close)
    sub = Subscriber(broker.port, tls_ca=ca)
    cleanup.append(sub.close)
    seqs = put(outbox, 3)
    pub = start_publisher(
        f"mqtts://127.0.0.1:{broker.port}", outbox, cleanup, tls=TLSConfig(ca_file=ca)
    )
    wait_until(lambda: outbox.depth == 0, what="acks over TLS")
    wait_until(lambda: len(sub.seqs()) == 3, what="the messages over TLS")
    assert sub.seqs() == seqs and pub.connected


def test_tls_with_the_wrong_ca_is_a_logged_failure(
    tmp_path: Path, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    ca, cert, key = make_certificates(tmp_path / "pki")
    other_ca, _, _ = make_certificates(tmp_path / "other")
    broker = custom_broker(
        tmp_path,
        extra=(f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "allow_anonymous true"),
    )
    cleanup.append(broker.close)
    put(outbox, 1)
    with capture_logs() as logs:
        pub = start_publisher(
            f"mqtts://127.0.0.1:{broker.port}", outbox, cleanup, tls=TLSConfig(ca_file=other_ca)
        )
        wait_until(lambda: any("failed" in e["event"] for e in logs), what="a logged failure")
    failure = next(e for e in logs if "failed" in e["event"])
    assert "certificate verify failed" in failure["error"]
    assert not pub.connected and outbox.depth == 1


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "gateway", "s3cret-pw"],
        check=True,
        capture_output=True,
    )
    broker = custom_broker(tmp_path, extra=(f"password_file {passwords}", "allow_anonymous false"))
    yield broker
    broker.close()


def test_username_and_password(
    password_broker: Mosquitto, outbox: Outbox, cleanup: list[Callable[[], None]]
) -> None:
    sub = Subscriber(password_broker.port, auth=("gateway", "s3cret-pw"))
    cleanup.append(sub.close)
    seqs = put(outbox, 2)
    start_publisher(password_broker.url, outbox, cleanup, username="gateway", password="s3cret-pw")
    wait_until(lambda: len(sub.seqs()) == 2, what="messages with credentials")
    assert sub.seqs() == seqs


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_wrong_password_is_logged_clearly_and_nothing_crashes(
    password_broker: Mosquitto, outbox: Outbox, cleanup: list[Callable[[], None]], protocol: str
) -> None:
    put(outbox, 1)
    with capture_logs() as logs:
        pub = start_publisher(
            password_broker.url,
            outbox,
            cleanup,
            username="gateway",
            password="wrong-pw-123",
            protocol=protocol,
        )
        wait_until(lambda: any(e["log_level"] == "warning" for e in logs), what="the warning")
        time.sleep(1.5)  # paho retries after a second: still one loud line
        pub.stop(timeout=2)
    warnings = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert len(warnings) == 1, warnings
    assert warnings[0]["event"] == "broker connection failed"
    assert "refused the connection" in warnings[0]["error"]
    assert "not authori" in warnings[0]["error"].lower() or "password" in warnings[0]["error"]
    assert "username" in warnings[0]["hint"]
    assert "wrong-pw-123" not in repr(logs)
    assert outbox.depth == 1 and not pub.connected
