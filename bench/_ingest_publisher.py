"""Publisher child process of bench/ingest.py, and the sample data both of them generate.

    python bench/_ingest_publisher.py '<spec as JSON>'

The child connects (MQTT 5, QoS 1), prepares its messages, prints ``{"ready": ...}`` on
stdout and waits for a line on stdin; then publishes, waits for every PUBACK, prints the
result as one JSON line and waits for another line (or EOF) before it disconnects, so its
CPU time can still be read after the measurement.

Two modes:

* ``burst``: ``messages`` samples messages pre-encoded before the go, published as fast
  as paho and the broker take them;
* ``rate``: one message every ``batch / rate`` seconds for ``seconds``, each built and
  encoded just before its publish, its newest samples stamped with the publish time; the
  result lists the wall-clock publish time of every seq (for publish-to-commit latency).

The data (``stream``) is deterministic: the parent regenerates exactly the rows a burst
publisher sent, for the raw COPY comparison. ``Child`` is the parent's side of the
protocol; ``machines`` and ``burst_specs`` lay the data out over gateways and machines.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_agent.contract import (  # noqa: E402
    AssetPath,
    Kind,
    Quality,
    Sample,
    SamplesMessage,
    encode,
    machine_topic,
)

SIGNALS = ("temp", "pressure", "speed", "current", "vibration", "flow", "level", "torque")
UNCERTAIN_EVERY = 997  # one sample in this many is uncertain (a sensor out of range)


@dataclass(frozen=True)
class Spec:
    """What one publisher child does (JSON on its command line)."""

    mode: str  # burst | rate
    port: int
    agent: str
    machines: tuple[str, ...]  # asset paths site/area/line/machine
    tags_per_machine: int
    batch: int
    seed: int
    prefix: str = "linepulse"
    messages: int = 0  # burst
    t0_ms: int = 0  # burst: timestamp of the first scan
    scan_ms: int = 100  # burst: time between two scans of a machine's tags
    rate: float = 0.0  # rate: samples per second
    seconds: float = 0.0  # rate
    max_inflight: int = 1000

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        data = json.loads(text)
        data["machines"] = tuple(data["machines"])
        return cls(**data)


def tag_name(machine: str, index: int) -> str:
    """``press-01.temp.003``: the index-th tag of a machine (machine = last path segment)."""
    return (
        f"{machine.rsplit('/', 1)[-1]}.{SIGNALS[index % len(SIGNALS)]}.{index // len(SIGNALS):03d}"
    )


@dataclass(slots=True)
class Batch:
    """One message's samples as columns (tag as the index within its machine)."""

    seq: int
    machine: str
    times: list[int]
    tags: list[int]
    values: list[float]
    uncertain: list[bool]


def stream(spec: Spec) -> Iterator[Batch]:
    """The burst messages of a publisher: machines in turn, each scanning all its tags.

    Sample k of a machine is tag ``k % tags_per_machine`` of scan ``k // tags_per_machine``
    at ``t0_ms + scan * scan_ms``: every (tag, time) appears once.
    """
    rng = random.Random(spec.seed)
    n_tags = spec.tags_per_machine
    base = [rng.uniform(10.0, 200.0) for _ in range(n_tags)]
    done = dict.fromkeys(spec.machines, 0)  # samples sent per machine so far
    for seq in range(1, spec.messages + 1):
        machine = spec.machines[(seq - 1) % len(spec.machines)]
        k0 = done[machine]
        ks = range(k0, k0 + spec.batch)
        done[machine] = k0 + spec.batch
        tags = [k % n_tags for k in ks]
        yield Batch(
            seq=seq,
            machine=machine,
            times=[spec.t0_ms + (k // n_tags) * spec.scan_ms for k in ks],
            tags=tags,
            values=[round(base[t] + rng.uniform(-5.0, 5.0), 3) for t in tags],
            uncertain=[k % UNCERTAIN_EVERY == 0 for k in ks],
        )


def topic_of(spec: Spec, machine: str) -> str:
    return machine_topic(spec.prefix, AssetPath.parse(machine), Kind.SAMPLES)


def encode_batch(spec: Spec, b: Batch) -> bytes:
    """The contract payload of a batch (through ``contract.encode``, as an agent sends it)."""
    samples = tuple(
        Sample(
            tag=tag_name(b.machine, t),
            ts=ts,
            value=v,
            quality=Quality.UNCERTAIN if u else Quality.GOOD,
        )
        for ts, t, v, u in zip(b.times, b.tags, b.values, b.uncertain, strict=True)
    )
    return encode(SamplesMessage(agent=spec.agent, seq=b.seq, samples=samples))


def stamped(spec: Spec, *, seq: int, now_ms: int, rng: random.Random) -> Batch:
    """A rate-mode message: its newest scan at ``now_ms``, earlier scans 1 ms apart."""
    machine = spec.machines[(seq - 1) % len(spec.machines)]
    n_tags = spec.tags_per_machine
    scans = -(-spec.batch // n_tags)
    ks = range(spec.batch)
    return Batch(
        seq=seq,
        machine=machine,
        times=[now_ms - (scans - 1 - k // n_tags) for k in ks],
        tags=[k % n_tags for k in ks],
        values=[round(rng.uniform(10.0, 200.0), 3) for _ in ks],
        uncertain=[False] * spec.batch,
    )


def machines(publishers: int) -> list[str]:
    """Asset paths: two machines per publisher (a gateway), two machines per line."""
    areas = ("press-shop", "paint-shop", "assembly", "packing")
    return [
        f"plant1/{areas[(m // 2) % len(areas)]}/line-{m // 2 + 1}/machine-{m + 1:02d}"
        for m in range(2 * publishers)
    ]


def burst_specs(
    *,
    port: int,
    machines: list[str],
    tags_per_machine: int,
    samples: int,
    batch: int,
    inflight: int,
) -> list[Spec]:
    """One burst spec per publisher (machines in pairs): its own agent and machines; the
    data ends at about now, and stays within today (UTC), one partition on plain PostgreSQL."""
    publishers = len(machines) // 2
    messages = samples // publishers // batch
    scans = -(-messages * batch // 2 // tags_per_machine) + 1
    now = int(time.time() * 1000)
    span = min(300_000, max(scans, now % 86_400_000 - 1000))
    scan_ms = max(1, span // scans)
    return [
        Spec(
            mode="burst",
            port=port,
            agent=f"bench-gw-{i + 1}",
            machines=tuple(machines[2 * i : 2 * i + 2]),
            tags_per_machine=tags_per_machine,
            batch=batch,
            seed=1000 + i,
            messages=messages,
            t0_ms=now - scans * scan_ms,
            scan_ms=scan_ms,
            max_inflight=inflight,
        )
        for i in range(publishers)
    ]


# ---------------------------------------------------------------- the parent's handle


class Child:
    """A publisher process seen from the parent: ready line, go, result line, quit."""

    def __init__(self, spec: Spec, workdir: Path) -> None:
        self.spec = spec
        with open(workdir / f"{spec.agent}.err", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, spec.to_json()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.ps = psutil.Process(self.proc.pid)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def line(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child prints; SystemExit when it says nothing or dies."""
        try:
            text = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(f"publisher {self.spec.agent}: nothing for {timeout:.0f}s") from None
        if not text:
            raise SystemExit(f"publisher {self.spec.agent} exited ({self.proc.wait()})")
        return dict(json.loads(text))

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        self.send("quit")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the child process


class Link:
    """A paho QoS 1 publisher that counts PUBACKs."""

    def __init__(self, spec: Spec) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=spec.agent, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(spec.max_inflight)
        self.client.max_queued_messages_set(0)
        self.acked = 0
        self.last_ack = 0.0
        self._cv = threading.Condition()
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", spec.port, keepalive=60)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise SystemExit(f"publisher {spec.agent}: cannot connect to 127.0.0.1:{spec.port}")

    def _on_publish(self, *_a: Any) -> None:
        with self._cv:
            self.acked += 1
            self.last_ack = time.time()
            self._cv.notify_all()

    def wait_acked(self, n: int, *, timeout: float = 600.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: self.acked >= n, timeout):
                raise SystemExit(f"only {self.acked} of {n} PUBACKs after {timeout}s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def burst(spec: Spec, link: Link) -> dict[str, Any]:
    started = time.perf_counter()
    messages = [(topic_of(spec, b.machine), encode_batch(spec, b)) for b in stream(spec)]
    size = sum(len(p) for _, p in messages)
    _say({"ready": True, "encode_s": time.perf_counter() - started, "bytes": size})
    sys.stdin.readline()
    first = time.time()
    for topic, payload in messages:
        link.client.publish(topic, payload, qos=1)
    last = time.time()
    link.wait_acked(len(messages))
    return {
        "first_publish": first,
        "last_publish": last,
        "last_ack": link.last_ack,
        "messages": len(messages),
        "samples": len(messages) * spec.batch,
        "bytes": size,
    }


def paced(spec: Spec, link: Link) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    interval = spec.batch / spec.rate
    count = max(1, round(spec.seconds / interval))
    topics = {m: topic_of(spec, m) for m in spec.machines}
    _say({"ready": True, "interval_s": interval, "messages": count})
    sys.stdin.readline()
    start = time.monotonic()
    published: list[tuple[int, float]] = []
    behind = 0.0
    size = 0
    for seq in range(1, count + 1):
        due = start + (seq - 1) * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        behind = max(behind, -delay)
        t = time.time()
        b = stamped(spec, seq=seq, now_ms=int(t * 1000), rng=rng)
        payload = encode_batch(spec, b)
        link.client.publish(topics[b.machine], payload, qos=1)
        published.append((seq, t))  # stamped before encoding: the latency includes it
        size += len(payload)
    link.wait_acked(count)
    return {
        "first_publish": published[0][1],
        "last_publish": published[-1][1],
        "last_ack": link.last_ack,
        "messages": count,
        "samples": count * spec.batch,
        "bytes": size,
        "behind_max_s": behind,
        "published": published,
    }


def main(argv: list[str]) -> int:
    spec = Spec.from_json(argv[0])
    link = Link(spec)
    try:
        result = burst(spec, link) if spec.mode == "burst" else paced(spec, link)
        _say(result)
        sys.stdin.readline()  # the parent reads our CPU time first
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
