"""Benchmark: samples a second through outbox -> MQTT broker (QoS 1, deleted on PUBACK).

Two runs against a private Mosquitto (or ``--broker mqtt://host:port``):

* live: a producer encodes batches of realistic samples and puts them into the outbox one
  batch per put() while the publisher drains to the broker; timed from the first put to
  the last PUBACK (the outbox is empty again).
* drain: the outbox is filled first, then a publisher with no replay limit drains it.

    .venv/bin/python bench/publish.py [--messages 400] [--batch 1000] [--broker URL]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.config import BrokerConfig, PublishConfig
from edge_agent.contract import (
    AssetPath,
    Kind,
    Quality,
    Sample,
    StatusMessage,
    encode,
    encode_body,
    machine_topic,
    status_topic,
)
from edge_agent.logs import setup_logging
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher

AGENT = "bench-gw"
TOPIC = machine_topic(
    "bench", AssetPath("plant1", "press-shop", "line-3", "press-07"), Kind.SAMPLES
)
TAGS = [f"press07.{name}" for name in ("temp_oil", "pressure", "speed", "current", "vibration")]


def make_batch(n: int, t0: int, rng: random.Random) -> list[Sample]:
    """n samples across a few dozen tags, 10 ms apart, mostly good floats, some ints/bools."""
    out = []
    for i in range(n):
        tag = f"{TAGS[i % len(TAGS)]}.{i % 40}"
        value: float | int | bool = round(rng.uniform(0, 250), 3)
        if i % 10 == 7:
            value = rng.randrange(0, 65535)
        elif i % 10 == 9:
            value = bool(i & 16)
        quality = Quality.UNCERTAIN if i % 97 == 0 else Quality.GOOD
        out.append(Sample(tag=tag, ts=t0 + i * 10, value=value, quality=quality))
    return out


def publisher(url: str, outbox: Outbox, *, max_inflight: int, replay_rate: float) -> Publisher:
    def birth() -> bytes:
        return encode(StatusMessage(agent=AGENT, status="online", ts=int(time.time() * 1000)))

    pub = Publisher(
        BrokerConfig(url=url, topic_prefix="bench"),
        agent_id=AGENT,
        outbox=outbox,
        publish=PublishConfig(max_inflight=max_inflight, replay_rate=replay_rate),
        birth=birth,
    )
    pub.start()
    deadline = time.monotonic() + 10
    while not pub.connected:
        if time.monotonic() > deadline:
            raise SystemExit(f"could not connect to {url}")
        time.sleep(0.01)
    return pub


def wait_empty(outbox: Outbox, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    while outbox.depth:
        if time.monotonic() > deadline:
            raise SystemExit(f"the outbox still holds {outbox.depth} messages")
        time.sleep(0.002)
    return time.monotonic()


def live_run(url: str, workdir: Path, args: argparse.Namespace) -> None:
    rng = random.Random(1)
    outbox = Outbox(workdir / "live.db", agent_id=AGENT, max_bytes=1 << 34)
    pub = publisher(url, outbox, max_inflight=args.max_inflight, replay_rate=200.0)
    latencies, build_s, encode_s, sizes = [], 0.0, 0.0, []
    t0 = int(time.time() * 1000)
    start = time.monotonic()
    for m in range(args.messages):
        b0 = time.perf_counter()
        batch = make_batch(args.batch, t0 + m * args.batch * 10, rng)
        e0 = time.perf_counter()
        body = encode_body(Kind.SAMPLES, batch)
        p0 = time.perf_counter()
        outbox.put([(TOPIC, Kind.SAMPLES, body)])
        p1 = time.perf_counter()
        pub.wake()
        build_s += e0 - b0
        encode_s += p0 - e0
        latencies.append(p1 - p0)
        sizes.append(len(body))
    produced = time.monotonic()
    end = wait_empty(outbox)
    pub.stop()
    outbox.close()
    took = end - start
    total = args.messages * args.batch
    print(f"live  ({args.messages} messages x {args.batch} samples, one put each)")
    print(f"  samples/s          {total / took:12,.0f}")
    print(f"  messages/s         {args.messages / took:12,.1f}")
    print(f"  payload            {statistics.mean(sizes) / 1024:10.1f} KiB/message")
    print(f"  producer done at   {produced - start:10.2f} s, last PUBACK at {took:.2f} s")
    print(f"  build Samples      {build_s / args.messages * 1000:10.2f} ms/batch (producer side)")
    print(f"  encode_body        {encode_s / args.messages * 1000:10.2f} ms/batch (producer side)")
    qs = statistics.quantiles(latencies, n=100)
    print(
        f"  put latency        p50 {qs[49] * 1000:.2f} ms  p99 {qs[98] * 1000:.2f} ms"
        f"  max {max(latencies) * 1000:.2f} ms"
    )


def drain_run(url: str, workdir: Path, args: argparse.Namespace) -> None:
    rng = random.Random(2)
    outbox = Outbox(workdir / "drain.db", agent_id=AGENT, max_bytes=1 << 34)
    t0 = int(time.time() * 1000)
    items = [
        (TOPIC, Kind.SAMPLES, encode_body(Kind.SAMPLES, make_batch(args.batch, t0 + m, rng)))
        for m in range(args.messages)
    ]
    for i in range(0, len(items), 50):
        outbox.put(items[i : i + 50])
    start = time.monotonic()
    pub = publisher(url, outbox, max_inflight=args.max_inflight, replay_rate=1e9)
    end = wait_empty(outbox)
    pub.stop()
    outbox.close()
    took = end - start
    print(f"drain ({args.messages} stored messages, replay not limited; includes the connect)")
    print(f"  samples/s          {args.messages * args.batch / took:12,.0f}")
    print(f"  messages/s         {args.messages / took:12,.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--batch", type=int, default=1000, help="samples per message")
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--broker", help="mqtt://host:port (default: a private Mosquitto)")
    args = parser.parse_args()
    setup_logging(json=False, level="warning")
    broker = None
    if args.broker is None:
        from tests.harness import Mosquitto

        broker = Mosquitto().start()
        url = broker.url
    else:
        url = args.broker
    try:
        with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
            print(f"broker {url}, max_inflight {args.max_inflight}")
            live_run(url, Path(tmp), args)
            drain_run(url, Path(tmp), args)
    finally:
        if broker is not None:
            broker.close()
        else:
            clear_status(url)


def clear_status(url: str) -> None:
    """Remove the retained status the runs left on a broker this script does not own."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    config = BrokerConfig(url=url, topic_prefix="bench")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(config.host, config.port)
    client.loop_start()
    client.publish(status_topic("bench", AGENT), b"", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
