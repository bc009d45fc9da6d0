"""The MQTT publisher: drains the outbox to the broker at QoS 1, deleting each message on PUBACK.

Threads. paho's network loop runs in its own thread (``loop_start``) and only turns its
callbacks into events on a queue. One pump thread owns all the bookkeeping (the in-flight
window, cursors, the replay rate) and is the only thread that reads and acks the outbox
for the publisher; ``wake()`` may be called from any thread.

Session. Every connection starts clean (``clean_start`` / ``clean_session``) and paho's own
copy of unacknowledged messages is dropped in ``on_connect``: the outbox is the truth, and
after a reconnect the pump resends from the oldest unacknowledged message. ``clean_start``
alone would not do: paho resends what it still holds on every reconnect.

Window. At most ``publish.max_inflight`` data messages are unacknowledged at once, and
never more than the broker's MQTT 5 Receive Maximum minus one (a slot is kept for the
status message; Mosquitto announces 20 by default, and MQTT 5 lets a broker disconnect a
client that exceeds it). paho's ``max_inflight_messages`` is the same window plus that slot.

Replay. On every connect, the messages already in the outbox (seq <= the last seq assigned
at that moment) are the backlog: they go out oldest first at most ``publish.replay_rate``
messages a second (a token bucket holding a tenth of a second). Messages put after the
connect are live and go out at once, before any backlog message competing for the window.

Order the broker sees. PUBLISH packets reach the broker in the order ``publish()`` is
called on one connection. That is two increasing seq streams interleaved: the backlog
(oldest first) and the live messages (oldest first); a subscriber may see live seq 900 before
backlog seq 120. Messages in flight when a connection drops (sent, no PUBACK) are sent again
after the reconnect, so the broker may see such a seq twice, the second time out of place.
The ingest orders by source timestamp and deduplicates by ``(agent, seq)``.

Status. The last will is a retained ``offline`` status (QoS 1); on every connect the birth
(retained ``online``, built by the caller) is published before any data; ``stop()`` publishes
a retained ``offline`` itself and disconnects cleanly so the broker discards the will.

Protocol. ``protocol: auto`` tries MQTT 5; a broker that refuses it (CONNACK "unsupported
protocol version", which is also how a 3.1.1 broker's "unacceptable protocol version" reads)
makes the publisher fall back to 3.1.1 for the rest of its life.

A PUBACK with an MQTT 5 failure reason (quota exceeded, not authorized...) leaves the message
in the outbox: it is logged and sent again after the next reconnect.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent import metrics
from edge_agent.config import BrokerConfig, PublishConfig
from edge_agent.contract import StatusMessage, encode, status_topic
from edge_agent.errors import ConfigError, OutboxError
from edge_agent.logs import FailureGate
from edge_agent.outbox import Outbox, OutboxMessage

log = structlog.get_logger("edge_agent.publisher")

_UNSUPPORTED_PROTOCOL: Final = 0x84
_HINTS: Final = {
    0x85: "the broker rejected the client id: set broker.client_id",
    0x86: "check broker.username and broker.password",
    0x87: "not authorized: check broker.username, broker.password and the broker's ACL",
    0x8A: "the broker says it is banned: check the broker's configuration",
}
_IDLE_POLL: Final = 0.5  # seconds; a safety net for a missed wake()


# ------------------------------------------------------------------ events from paho's thread


@dataclass(frozen=True, slots=True)
class _Connected:
    receive_maximum: int | None


@dataclass(frozen=True, slots=True)
class _Disconnected:
    pass


@dataclass(frozen=True, slots=True)
class _Acked:
    mid: int
    failure: str | None  # the MQTT 5 reason when the broker refused the message
    at: float


@dataclass(frozen=True, slots=True)
class _Fallback:
    pass


_Event = _Connected | _Disconnected | _Acked | _Fallback


class _Client(mqtt.Client):
    """A paho client that remembers why the last connection attempt failed (paho drops it)."""

    last_error: BaseException | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as err:
            self.last_error = err
            raise
        self.last_error = None
        return rc


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Publisher:
    """Publishes the outbox to one broker and deletes what the broker acknowledges."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        agent_id: str,
        outbox: Outbox,
        publish: PublishConfig,
        birth: Callable[[], bytes],
        reconnect_max_delay: int = 30,
    ) -> None:
        """``birth()`` runs on paho's network thread at every connect: keep it quick."""
        self._broker = broker
        self._agent_id = agent_id
        self._outbox = outbox
        self._config = publish
        self._birth = birth
        self._reconnect_max_delay = reconnect_max_delay
        self._status_topic = status_topic(broker.topic_prefix, agent_id)
        self._protocol = (
            MQTTProtocolVersion.MQTTv311
            if broker.protocol == "3.1.1"
            else MQTTProtocolVersion.MQTTv5
        )
        self._log = log.bind(broker=f"{broker.host}:{broker.port}", agent=agent_id)
        self._gate = FailureGate(self._log, what="broker connection")
        self._pump_gate = FailureGate(self._log, what="publishing from the outbox")
        self._reject_gate = FailureGate(self._log, what="broker accepting messages")
        # shared with paho's thread: a queue, events and plain flags
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Event()
        self._exit = False
        self._link_up = False
        self._falling_back = False  # the next close is the refused MQTT 5 attempt: no warning
        self._client_lock = threading.Lock()
        self._client: _Client | None = None
        self._pump: threading.Thread | None = None
        # pump-thread state
        self._ready = False
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, sent at)
        self._acked: list[int] = []
        self._window = publish.max_inflight
        self._live_cursor = 0
        self._backlog_cursor = 0
        self._backlog_end = 0
        self._backlog_active = False
        self._cursors_stale = True
        self._bucket = max(1.0, publish.replay_rate / 10)
        self._tokens = self._bucket
        self._tokens_at = time.monotonic()

    # ------------------------------------------------------------------ public interface

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection."""
        return self._link_up

    @property
    def inflight(self) -> int:
        """Data messages published and not yet acknowledged."""
        return len(self._inflight)

    @property
    def protocol(self) -> str:
        """The MQTT version in use: "5" or "3.1.1" (after a fallback, "3.1.1")."""
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    def start(self) -> None:
        """Connect in the background and start publishing; returns at once."""
        if self._pump is not None:
            raise RuntimeError("the publisher was already started")
        client = self._make_client()
        with self._client_lock:
            self._client = client
        self._connect(client)
        self._pump = threading.Thread(target=self._run, name=f"publisher-{self._agent_id}")
        self._pump.daemon = True
        self._pump.start()

    def wake(self) -> None:
        """Tell the pump new messages are in the outbox (thread-safe, cheap)."""
        self._wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for in-flight acks, publish the retained offline, disconnect."""
        if self._pump is None or self._exit:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wakeup.set()
        self._drained.wait(timeout * 0.7)
        with self._client_lock:
            client = self._client
        offline_sent = False
        if client is not None:
            offline_sent = self._publish_offline(client, deadline)
            client.disconnect()
            client.loop_stop()
        self._exit = True
        self._wakeup.set()
        self._pump.join(max(1.0, deadline - time.monotonic()))
        self._link_up = False
        metrics.BROKER_CONNECTED.set(0)
        self._log.info(
            "publisher stopped", offline_published=offline_sent, unacked=len(self._inflight)
        )

    # ------------------------------------------------------------------ the paho client

    def _make_client(self) -> _Client:
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._broker.client_id or self._agent_id,
            protocol=self._protocol,
            clean_session=None if v5 else True,
        )
        client.max_inflight_messages_set(self._config.max_inflight + 1)  # + the status message
        client.max_queued_messages_set(0)  # unlimited: the window bounds what paho holds
        client.reconnect_delay_set(1, self._reconnect_max_delay)
        if self._broker.username is not None:
            client.username_pw_set(self._broker.username, self._broker.password)
        if self._broker.use_tls:
            self._setup_tls(client)
        self._set_will(client, None)
        client.on_pre_connect = self._set_will
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _setup_tls(self, client: mqtt.Client) -> None:
        tls = self._broker.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
                certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                keyfile=str(tls.key_file) if tls and tls.key_file else None,
            )
        except (OSError, ssl.SSLError, ValueError) as err:
            raise ConfigError(
                f"broker.tls: cannot load the CA, certificate or key file: {err}"
                " (check broker.tls.ca_file, cert_file and key_file)"
            ) from err
        if tls is not None and tls.insecure:
            client.tls_insecure_set(True)

    def _connect(self, client: mqtt.Client) -> None:
        keepalive = max(1, round(self._broker.keepalive))
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            client.connect_async(self._broker.host, self._broker.port, keepalive, clean_start=True)
        else:
            client.connect_async(self._broker.host, self._broker.port, keepalive)
        client.loop_start()
        self._log.info("connecting to broker", protocol=self.protocol, tls=self._broker.use_tls)

    def _status(self, status: Literal["online", "offline"]) -> bytes:
        return encode(StatusMessage(agent=self._agent_id, status=status, ts=_now_ms()))

    def _set_will(self, client: mqtt.Client, userdata: Any) -> None:
        """Set the offline will; also before each reconnect, so its ts is fresh."""
        client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)

    def _publish_offline(self, client: mqtt.Client, deadline: float) -> bool:
        if not self._link_up:
            return False
        info = client.publish(self._status_topic, self._status("offline"), qos=1, retain=True)
        try:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            return info.is_published()
        except (RuntimeError, ValueError) as err:
            self._log.warning("could not publish the offline status", error=str(err))
            return False

    # ------------------------------------------------------------------ paho callbacks
    # (paho's thread: no outbox access, no blocking; hand events to the pump)

    def _post(self, event: _Event) -> None:
        self._events.put(event)
        self._wakeup.set()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused(reason)
            return
        client.drop_out_messages()  # the pump resends from the outbox; paho must not too
        self._publish_birth(client)
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        self._link_up = True
        metrics.BROKER_CONNECTED.set(1)
        self._gate.ok()
        self._log.info(
            "connected to broker", protocol=self.protocol, receive_maximum=receive_maximum
        )
        self._post(_Connected(receive_maximum))

    def _refused(self, reason: ReasonCode) -> None:
        if (
            reason.value == _UNSUPPORTED_PROTOCOL
            and self._broker.protocol == "auto"
            and self._protocol == MQTTProtocolVersion.MQTTv5
        ):
            self._falling_back = True
            self._post(_Fallback())
            return
        hint = _HINTS.get(reason.value, "see the broker's log")
        self._gate.failed(f"the broker refused the connection: {reason}", hint=hint)

    def _publish_birth(self, client: mqtt.Client) -> None:
        try:
            payload = self._birth()
        except Exception as err:  # a broken birth must not stop the data
            self._log.error(
                "cannot build the birth message; publishing without it", error=repr(err)
            )
            return
        client.publish(self._status_topic, payload, qos=1, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        err = getattr(client, "last_error", None)
        self._gate.failed(f"cannot connect: {err or 'connection failed'}")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_up, self._link_up = self._link_up, False
        metrics.BROKER_CONNECTED.set(0)
        if self._falling_back:
            self._falling_back = False
        elif not self._stopping.is_set():
            what = "connection lost" if was_up else "the broker closed the connection"
            self._gate.failed(f"{what}: {reason}")
        self._post(_Disconnected())

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        failure = str(reason) if reason.is_failure else None
        self._post(_Acked(mid, failure, time.monotonic()))

    # ------------------------------------------------------------------ the pump thread

    def _run(self) -> None:
        while True:
            self._wakeup.wait(self._idle_timeout())
            self._wakeup.clear()
            try:
                self._drain_events()
                self._flush_acks()
                if self._exit:
                    return
                if self._stopping.is_set():
                    if not self._inflight or not self._ready:
                        self._drained.set()
                elif self._ready:
                    self._fill()
                self._pump_gate.ok()
            except OutboxError as err:
                self._pump_gate.failed(err)
                time.sleep(1.0)
            except Exception as err:  # never let the pump die; the outbox keeps the data
                self._pump_gate.failed(repr(err))
                self._log.debug("pump error", exc_info=True)
                time.sleep(1.0)

    def _idle_timeout(self) -> float:
        if self._ready and self._backlog_active and len(self._inflight) < self._window:
            missing = 1.0 - self._tokens
            if missing > 0:
                return min(_IDLE_POLL, missing / self._config.replay_rate)
        return _IDLE_POLL

    def _drain_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, _Acked):
                self._acked_event(event)
            elif isinstance(event, _Connected):
                self._connected_event(event)
            elif isinstance(event, _Disconnected):
                self._ready = False
                self._inflight.clear()
            elif not self._stopping.is_set() and self._protocol == MQTTProtocolVersion.MQTTv5:
                self._fall_back()

    def _acked_event(self, event: _Acked) -> None:
        entry = self._inflight.pop(event.mid, None)
        if entry is None:
            return  # a status message, or sent on a connection that is gone
        seq, sent_at = entry
        if event.failure is not None:
            self._reject_gate.failed(f"the broker refused message seq {seq}: {event.failure}")
            return
        self._reject_gate.ok()
        self._acked.append(seq)
        metrics.PUBLISHED.inc()
        metrics.PUBLISH_LATENCY.observe(event.at - sent_at)

    def _connected_event(self, event: _Connected) -> None:
        self._inflight.clear()
        window = self._config.max_inflight
        if event.receive_maximum:
            window = min(window, max(1, event.receive_maximum - 1))
        self._window = window
        self._cursors_stale = True  # reset in _fill, where an outbox error is retried
        self._ready = True

    def _reset_cursors(self) -> None:
        """Everything stored so far is the backlog; resend it from the oldest."""
        self._backlog_end = self._outbox.last_seq
        self._backlog_cursor = 0
        self._live_cursor = self._backlog_end
        self._backlog_active = True
        self._tokens, self._tokens_at = self._bucket, time.monotonic()
        self._cursors_stale = False

    def _fall_back(self) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one (the broker refused 5)."""
        self._log.warning("the broker refused MQTT 5; falling back to MQTT 3.1.1")
        with self._client_lock:
            if self._stopping.is_set() or self._client is None:
                return
            self._client.loop_stop()
            self._protocol = MQTTProtocolVersion.MQTTv311
            self._client = self._make_client()
            self._connect(self._client)

    def _flush_acks(self) -> None:
        if self._acked:
            self._outbox.ack(self._acked)  # on OutboxError the list is kept and retried
            self._acked = []

    def _fill(self) -> None:
        """Top the window up: live messages first, then the backlog at the replay rate."""
        if self._cursors_stale:
            self._reset_cursors()
        free = self._window - len(self._inflight)
        if free <= 0:
            return
        for msg in self._outbox.pending(after=self._live_cursor, limit=free):
            if not self._send(msg):
                return
            self._live_cursor = msg.seq
            free -= 1
        if self._backlog_active and free > 0:
            self._send_backlog(free)

    def _send_backlog(self, free: int) -> None:
        now = time.monotonic()
        rate = self._config.replay_rate
        self._tokens = min(self._bucket, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        count = min(free, int(self._tokens))
        if count < 1:
            return
        batch = self._outbox.pending(
            after=self._backlog_cursor, upto=self._backlog_end, limit=count
        )
        if not batch:
            self._backlog_active = False
            return
        for msg in batch:
            if not self._send(msg):
                return
            self._backlog_cursor = msg.seq
            self._tokens -= 1

    def _send(self, msg: OutboxMessage) -> bool:
        """Publish one message; False when the link is down (it stays in the outbox)."""
        if not self._link_up or self._client is None:
            return False
        sent_at = time.monotonic()
        try:
            info = self._client.publish(msg.topic, msg.payload, qos=1)
        except ValueError as err:  # a topic MQTT cannot carry: it would block the queue forever
            self._log.error("dropping an unpublishable message", seq=msg.seq, error=str(err))
            self._acked.append(msg.seq)
            return True
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False  # paho keeps it until the reconnect, where on_connect drops it
        self._inflight[info.mid] = (msg.seq, sent_at)
        return True
