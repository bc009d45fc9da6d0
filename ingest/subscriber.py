"""The MQTT side of the ingest: a durable MQTT 5 session, manual acks after the commit.

Session. ``clean_start=False`` with a ``SessionExpiryInterval``: the broker keeps the
subscription and queues messages while the service is away, and redelivers what it sent
and never got a PUBACK for. ``ReceiveMaximum`` asks the broker to send at most that many
messages before an ack (see Bounds for how far Mosquitto follows it).

Subscription. ``$share/<group>/<prefix>/v1/#`` at QoS 1, sent again in *every* on_connect
(Mosquitto 2.0.11 does not restore a durable client's shared subscription after a broker
restart). paho never matches a ``$share/`` filter against a topic, so the message callback
is registered on the plain filter; ``on_message`` catches anything else a persistent
session may still deliver (say, from an earlier prefix).

Acks. ``finish(messages)`` acks them in the order given (arrival order), and only those
that came on the current connection: after a reconnect the broker redelivers what was not
acked, and an old packet id may name a different message in a new session. Each message
carries the connection ``generation`` it came on; the generation changes on every connect
and disconnect, under the same lock ``finish`` holds while acking.

Threads. paho's network thread runs the callbacks; they only append to the inbox.
``get`` and ``finish`` may be called from any thread.

Bounds. ``ReceiveMaximum`` is meant to cap what the broker sends before an ack, but
Mosquitto 2.0.11 honours it only until the first PUBACK: each ack lets up to another
``receive_maximum`` messages out (measured: 100 in flight, one ack, 200 received). What
holds is ``max_held``: when that many messages are held (received, not finished) the
message callback waits, paho stops reading the socket and TCP pushes back on the broker.
A wait longer than the keepalive ends the connection; the broker then redelivers what was
not acked, which the ledger skips.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.logs import FailureGate
from ingest import metrics
from ingest.config import IngestSettings
from ingest.decode import Incoming
from ingest.errors import ConfigError

log = structlog.get_logger("ingest.subscriber")


class Subscriber:
    """One durable MQTT 5 session on the ingest's (shared) subscription."""

    def __init__(self, settings: IngestSettings, *, client_id: str | None = None) -> None:
        self._s = settings
        self.client_id = client_id or settings.mqtt_client_id
        self._log = log.bind(
            broker=f"{settings.mqtt_host}:{settings.mqtt_port}", client_id=self.client_id
        )
        self._gate = FailureGate(self._log, what="broker connection")
        self._lock = threading.Lock()  # generation, connected, acks
        self._generation = 0
        self._connected = False
        self._subscribed = False
        self._cv = threading.Condition()  # inbox and held count
        self._inbox: deque[Incoming] = deque()
        self._held = 0
        self._intake = True
        self._stopping = False
        self.session_present: bool | None = None
        self.connects = 0
        self._client = self._make_client()

    # ---------------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the current connection."""
        return self._connected

    @property
    def subscribed(self) -> bool:
        """True once the broker granted the subscription on the current connection."""
        return self._connected and self._subscribed

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def held(self) -> int:
        """Messages received and not yet finished (acked or dropped)."""
        return self._held

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Connect in the background (retrying until it works) and start receiving."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self._s.session_expiry)
        props.ReceiveMaximum = self._s.receive_maximum
        self._client.connect_async(
            self._s.mqtt_host,
            self._s.mqtt_port,
            self._s.mqtt_keepalive,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        self._log.info(
            "connecting to broker", subscription=self._s.subscription, tls=self._s.mqtt_tls
        )

    def close_intake(self) -> None:
        """Stop taking messages in (shutdown): later ones stay unacked for the next session."""
        with self._cv:
            self._intake = False
            self._cv.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (queued acks go out first) and stop the network thread."""
        with self._cv:
            self._stopping = True
            self._intake = False
            self._cv.notify_all()
        self._client.disconnect()
        thread = threading.Thread(target=self._client.loop_stop, daemon=True)
        thread.start()
        thread.join(timeout)
        self._connected = False
        metrics.BROKER_CONNECTED.set(0)

    # ---------------------------------------------------------------- messages

    def get(self, timeout: float) -> list[Incoming]:
        """Everything in the inbox; waits up to ``timeout`` seconds for the first message."""
        with self._cv:
            if not self._inbox and timeout > 0:
                self._cv.wait(timeout)
            out = list(self._inbox)
            self._inbox.clear()
        return out

    def finish(self, messages: Sequence[Incoming], *, ack: bool = True) -> int:
        """Ack (in the order given) those of the current connection; release all of them.

        Returns how many were acked; the others will be redelivered (or were QoS 0).
        """
        acked = 0
        if ack:
            with self._lock:
                generation = self._generation if self._connected else -1
                for m in messages:
                    if m.qos > 0 and m.generation == generation:
                        self._client.ack(m.mid, m.qos)
                        acked += 1
        with self._cv:
            self._held = max(0, self._held - len(messages))
            metrics.HELD.set(self._held)
            self._cv.notify_all()
        return acked

    # ---------------------------------------------------------------- paho

    def _make_client(self) -> mqtt.Client:
        s = self._s
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.reconnect_delay_set(1, s.mqtt_reconnect_max_delay)
        client.max_queued_messages_set(0)
        if s.mqtt_username is not None:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password else None
            client.username_pw_set(s.mqtt_username, password)
        if s.mqtt_tls:
            try:
                client.tls_set(
                    ca_certs=str(s.mqtt_ca_file) if s.mqtt_ca_file else None,
                    certfile=str(s.mqtt_cert_file) if s.mqtt_cert_file else None,
                    keyfile=str(s.mqtt_key_file) if s.mqtt_key_file else None,
                )
            except (OSError, ssl.SSLError, ValueError) as err:
                raise ConfigError(
                    f"cannot load the MQTT TLS files: {err} (check mqtt_ca_file,"
                    " mqtt_cert_file and mqtt_key_file)"
                ) from err
            if s.mqtt_tls_insecure:
                client.tls_insecure_set(True)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.message_callback_add(s.topic_filter, self._on_message)
        client.on_message = self._on_message
        return client

    def _new_generation(self, *, connected: bool) -> int:
        with self._lock:
            self._generation += 1
            self._connected = connected
            return self._generation

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._new_generation(connected=False)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._gate.failed(f"the broker refused the connection: {reason}")
            return
        self._subscribed = False
        generation = self._new_generation(connected=True)
        self.session_present = bool(flags.session_present)
        self.connects += 1
        client.subscribe(self._s.subscription, qos=1)
        metrics.BROKER_CONNECTED.set(1)
        self._gate.ok()
        self._log.info(
            "connected to broker",
            session_present=self.session_present,
            generation=generation,
            subscription=self._s.subscription,
        )

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._gate.failed("cannot reach the broker")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._new_generation(connected=False)
        metrics.BROKER_CONNECTED.set(0)
        if not self._stopping:
            self._gate.failed(f"disconnected from the broker: {reason}")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        for reason in reasons:
            if reason.is_failure:
                self._log.error(
                    "the broker refused the subscription",
                    subscription=self._s.subscription,
                    reason=str(reason),
                )
                return
        self._subscribed = True

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the decoder dead-letters it: outside the namespace
            topic = bytes(message._topic).decode("utf-8", "backslashreplace")
        incoming = Incoming(
            topic=topic,
            payload=bytes(message.payload),  # already bytes: no copy
            mid=message.mid,
            qos=message.qos,
            generation=self._generation,
            received=time.time(),
        )
        metrics.MESSAGES_RECEIVED.inc()
        with self._cv:
            # The last resort behind ReceiveMaximum: stop reading while too much is held.
            while self._held >= self._s.max_held_messages and self._intake:
                self._cv.wait(0.5)
            if not self._intake:
                return  # shutting down: not acked, so the broker delivers it again later
            self._held += 1
            self._inbox.append(incoming)
            self._cv.notify_all()
