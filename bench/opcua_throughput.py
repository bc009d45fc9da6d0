"""Benchmark: OPC UA data changes end to end through the agent to the broker.

    .venv/bin/python bench/opcua_throughput.py [--items 5000 --rate 2 --seconds 30 --servers 2]

What runs, each in its own process (2 cores: they all compete, so the table shows every
process's CPU and the load from processes outside the bench):

* ``--servers`` asyncua servers (bench/_opcua_server.py) share ``--items`` Double
  variables; each server writes each of its variables ``--rate`` times a second;
* a private Mosquitto (tests.harness.Mosquitto);
* a QoS 1 paho subscriber that decodes every message with ``contract.decode`` and counts
  samples, and measures latency from the source timestamp to the moment it decoded them;
* the agent, ``python -m edge_agent.cli edge run`` with a generated gateway YAML (one OPC UA
  device per server, every item a tag, subscribe mode, no deadband, queue sized so the
  server never coalesces changes), sampled with psutil every 0.5 s.

After the agent delivers a value of every item and a warm-up, it measures for ``--seconds``:
writes/s the servers achieved, samples/s the agent read (its /metrics), samples/s the
subscriber received, CPU % (of one core) per process, the agent's peak RSS, the outbox
depth at the end (its /health), latency p50/p99; then says which side is the limit.
``--profile FILE`` also records the agent with py-spy during the window (folded stacks)
and prints where its time goes; the figures of a profiled run carry py-spy's overhead.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

from _opcua_server import NS_URI, ServerSpec, node_name, serve  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.harness import Mosquitto, free_port, wait_port  # noqa: E402

PREFIX = "bench"
AGENT_ID = "bench-opcua"
SAMPLE_EVERY = 0.5  # seconds between psutil samples


# ---------------------------------------------------------------- the subscriber process


def subscribe(
    url: str,
    *,
    counters: Any,
    ready: Event,
    measuring: Event,
    stop: Event,
    result: Connection,
) -> None:
    """Process entry point: count decoded samples (counters[0]), messages (1), tags seen (2)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_agent import contract

    seen: set[str] = set()
    latencies: list[int] = []
    errors = Counter[str]()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            decoded = contract.decode(msg.payload)
        except contract.ContractError as err:
            errors[str(err)[:80]] += 1
            return
        if not isinstance(decoded, contract.SamplesMessage):
            return
        now = time.time_ns() // 1_000_000
        if measuring.is_set():
            latencies.extend(now - s.ts for s in decoded.samples)
        if counters[2] < counters[3]:  # until every item was seen once
            seen.update(s.tag for s in decoded.samples)
            counters[2] = len(seen)
        counters[0] += len(decoded.samples)
        counters[1] += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    client.on_connect = lambda c, *_a: c.subscribe(f"{PREFIX}/v1/+/+/+/+/samples", qos=1)
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    client.connect(host, int(port))
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    result.send({"latencies_ms": _percentiles(latencies), "errors": dict(errors)})


def _percentiles(values: list[int]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    qs = statistics.quantiles(values, n=100)
    return {"n": len(values), "p50": qs[49], "p99": qs[98], "max": max(values)}


# ---------------------------------------------------------------- setup


@dataclass
class Rig:
    """Everything the bench started, with what the figures are computed from."""

    ctx: SpawnContext
    workdir: Path
    args: argparse.Namespace
    stop: Event
    measuring: Event
    specs: list[ServerSpec] = field(default_factory=list)
    writes: list[Synchronized[int]] = field(default_factory=list)
    procs: dict[str, psutil.Process] = field(default_factory=dict)
    health_port: int = 0
    agent: subprocess.Popen[bytes] | None = None


def split_items(items: int, servers: int, rate: float) -> list[ServerSpec]:
    """Spread ``items`` over ``servers`` as evenly as possible."""
    base, extra = divmod(items, servers)
    specs, first = [], 0
    for k in range(servers):
        count = base + (1 if k < extra else 0)
        specs.append(ServerSpec(port=free_port(), first=first, count=count, rate=rate))
        first += count
    return specs


def start_servers(rig: Rig, stack: ExitStack) -> None:
    rig.specs = split_items(rig.args.items, rig.args.servers, rig.args.rate)
    readies = []
    for k, spec in enumerate(rig.specs):
        writes = rig.ctx.Value("q", 0)
        ready = rig.ctx.Event()
        proc = rig.ctx.Process(
            target=serve,
            args=(spec,),
            kwargs={"writes": writes, "ready": ready, "stop": rig.stop},
            name=f"opcua-{k}",
        )
        proc.start()
        stack.callback(_end_process, proc, rig.stop)
        rig.writes.append(writes)
        readies.append(ready)
        rig.procs[f"server {k}"] = psutil.Process(proc.pid)
    for k, ready in enumerate(readies):  # building the address space takes a while
        if not ready.wait(300):
            raise SystemExit(f"OPC UA server {k} did not start within 300 s")


def _end_process(proc: SpawnProcess, stop: Event) -> None:
    stop.set()
    proc.join(15)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def gateway_config(rig: Rig, broker_url: str) -> dict[str, Any]:
    """The gateway YAML: one device per server, every item a tag, no deadband."""
    a = rig.args
    # room for every change of a publishing interval: the server must not coalesce them
    queue = max(1, math.ceil(a.rate * a.publishing_interval) + 1)
    devices = [
        {
            "name": f"ua{k}",
            "protocol": "opcua",
            "endpoint": spec.endpoint,
            "machine": f"m{k}",
            "mode": "subscribe",
            "publishing_interval": a.publishing_interval,
            "max_items_per_subscription": a.per_subscription,
            "tags": [
                {
                    "name": node_name(i),
                    "node": f"nsu={NS_URI};s={node_name(i)}",
                    "sampling_interval": 1.0 / a.rate,
                    "queue_size": queue,
                }
                for i in range(spec.first, spec.first + spec.count)
            ],
        }
        for k, spec in enumerate(rig.specs)
    ]
    return {
        "agent": {
            "id": AGENT_ID,
            "data_dir": str(rig.workdir / "data"),
            "health_port": rig.health_port,
        },
        "broker": {"url": broker_url, "topic_prefix": PREFIX},
        "line": {"site": "bench", "area": "opcua", "line": "l1"},
        "publish": {"max_batch": 1000, "flush_interval": a.flush_interval},
        "heartbeat": 3600,
        "devices": devices,
    }


def start_agent(rig: Rig, broker_url: str, stack: ExitStack) -> None:
    rig.health_port = free_port()
    config = rig.workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(rig, broker_url), sort_keys=False))
    log = open(rig.workdir / "agent.log", "ab")  # noqa: SIM115 - closed with the process
    cmd = [sys.executable, "-m", "edge_agent.cli", "--log-json", "edge", "run", "-c", str(config)]
    rig.agent = subprocess.Popen(cmd, cwd=rig.workdir, stdout=log, stderr=log, env=_env())
    log.close()
    stack.callback(_end_agent, rig.agent)
    rig.procs["agent"] = psutil.Process(rig.agent.pid)
    wait_port(rig.health_port, timeout=120)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _end_agent(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------- agent endpoints


def health(port: int) -> dict[str, Any]:
    """The agent's /health JSON (also when it answers 503, degraded)."""
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:
        body = err.read()
    data: dict[str, Any] = json.loads(body)
    return data


def samples_read(port: int) -> float:
    """Values the agent's sources read so far (sum over devices), from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "linepulse_edge_samples_read":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, rig: Rig) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if rig.agent is not None and rig.agent.poll() is not None:
            raise SystemExit(f"the agent exited ({rig.agent.returncode}); see {rig.workdir}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Snap:
    """Counters at one instant."""

    t: float
    writes: int
    read: float
    received: int
    messages: int
    cpu: dict[str, float]  # process -> user + system seconds
    busy: float  # CPU seconds the whole machine was not idle


def snapshot(rig: Rig, counters: Any) -> Snap:
    cpu = {}
    for name, proc in rig.procs.items():
        times = proc.cpu_times()
        cpu[name] = times.user + times.system
    total = psutil.cpu_times()
    busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
    return Snap(
        t=time.monotonic(),
        writes=sum(int(w.value) for w in rig.writes),
        read=samples_read(rig.health_port),
        received=int(counters[0]),
        messages=int(counters[1]),
        cpu=cpu,
        busy=busy,
    )


class Sampler:
    """Samples the agent's RSS and the received counter every SAMPLE_EVERY seconds."""

    def __init__(self, agent: psutil.Process, counters: Any) -> None:
        import threading

        self.agent, self.counters = agent, counters
        self.peak_rss = 0
        self.series: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            try:
                self.peak_rss = max(self.peak_rss, self.agent.memory_info().rss)
            except psutil.Error:
                return
            self.series.append((time.monotonic(), int(self.counters[0])))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def rates(self, start: float, end: float) -> list[float]:
        """Received samples per second over consecutive 1 s spans of [start, end]."""
        pts = [(t, n) for t, n in self.series if start <= t <= end]
        out = []
        for (t0, n0), (t1, n1) in zip(pts[::2], pts[2::2], strict=False):
            out.append((n1 - n0) / (t1 - t0))
        return out


@contextmanager
def profiled(args: argparse.Namespace, pid: int) -> Iterator[None]:
    """py-spy record of the agent for the measurement window, when --profile is given."""
    if args.profile is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds))]
    # --gil: py-spy cannot tell idle threads here (they would show as busy in select)
    cmd += ["--rate", "100", "--gil", "--format", "raw", "--threads", "--output", str(args.profile)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        _, err = proc.communicate(timeout=args.seconds + 60)
        if proc.returncode != 0:
            print(f"py-spy failed: {err.decode(errors='replace').strip()}")


def measure(rig: Rig, counters: Any) -> tuple[Snap, Snap, dict[str, Any]]:
    """Counters at the start and the end of the window, and /health at the end."""
    start = snapshot(rig, counters)
    assert rig.agent is not None
    with profiled(rig.args, rig.agent.pid):
        deadline = start.t + rig.args.seconds
        while time.monotonic() < deadline:
            if rig.agent.poll() is not None:
                raise SystemExit(f"the agent exited during the run; see {rig.workdir}")
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        end = snapshot(rig, counters)  # before py-spy finishes writing its file
    return start, end, health(rig.health_port)


# ---------------------------------------------------------------- report


def report(
    rig: Rig,
    start: Snap,
    end: Snap,
    *,
    final: dict[str, Any],
    sampler: Sampler,
    sub: dict[str, Any],
) -> None:
    a = rig.args
    span = end.t - start.t
    offered = a.items * a.rate
    written = (end.writes - start.writes) / span
    read = (end.read - start.read) / span
    received = (end.received - start.received) / span
    cpu = {n: (end.cpu[n] - start.cpu[n]) / span * 100 for n in end.cpu}
    ours = sum((end.cpu[n] - start.cpu[n]) for n in end.cpu)
    others = max(0.0, (end.busy - start.busy) - ours) / span * 100
    machine = (end.busy - start.busy) / span * 100
    per_s = sampler.rates(start.t, end.t)
    lat = sub.get("latencies_ms", {})
    print(f"\n{a.items} items on {a.servers} server(s) at {a.rate:g} Hz, window {span:.1f} s")
    rows = [
        ("changes offered/s", f"{offered:,.0f}"),
        ("server writes achieved/s", f"{written:,.0f}"),
        ("agent samples read/s", f"{read:,.0f}"),
        ("samples received at broker/s", f"{received:,.0f}"),
        ("  per 1 s span min / max", _min_max(per_s)),
        ("messages received/s", f"{(end.messages - start.messages) / span:,.1f}"),
        ("latency source -> subscriber", _latency(lat)),
        ("agent CPU (% of one core)", f"{cpu['agent']:.0f} %"),
        ("agent peak RSS", f"{sampler.peak_rss / 2**20:.0f} MB"),
        ("outbox depth at the end", f"{final.get('outbox_messages')} messages"),
    ]
    rows += [(f"{n} CPU", f"{v:.0f} %") for n, v in cpu.items() if n != "agent"]
    rows += [
        ("machine CPU (2 cores = 200 %)", f"{machine:.0f} %"),
        ("  of which outside the bench", f"{others:.0f} %"),
        ("load average (1 min)", f"{os.getloadavg()[0]:.2f}"),
    ]
    for name, value in rows:
        print(f"  {name:<32}{value:>24}")
    if sub.get("errors"):
        print(f"  undecodable messages: {sub['errors']}")
    print("\n" + verdict(offered, written, read, received, cpu=cpu, machine=machine, final=final))


def _min_max(values: list[float]) -> str:
    return f"{min(values):,.0f} / {max(values):,.0f}" if values else "-"


def _latency(lat: dict[str, float]) -> str:
    if not lat:
        return "-"
    return f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms"


def verdict(
    offered: float,
    written: float,
    read: float,
    received: float,
    *,
    cpu: dict[str, float],
    machine: float,
    final: dict[str, Any],
) -> str:
    """Which side limits the figures, from the rates along the chain and the CPU use."""
    servers = max((v for n, v in cpu.items() if n.startswith("server")), default=0.0)
    notes = []
    if machine > 180:
        notes.append(f"both cores are nearly saturated ({machine:.0f} %): every figure is low")
    if written < 0.95 * offered:
        if servers > 85:
            why = f"the busiest server uses {servers:.0f} % of a core: use more --servers"
        elif machine > 180:
            why = f"they got only {servers:.0f} % CPU each on a saturated machine"
        else:
            why = f"their event loops stall (busiest server {servers:.0f} % CPU)"
        notes.append(
            f"SERVER-BOUND: the servers wrote {written:,.0f} of {offered:,.0f} changes/s; {why}"
        )
    if read < 0.95 * written:
        side = "the agent (receiving)" if cpu["agent"] > max(85.0, servers) else "the servers"
        notes.append(
            f"the agent read {read:,.0f} of {written:,.0f} changes/s written: {side} fall behind"
            f" (agent {cpu['agent']:.0f} %, busiest server {servers:.0f} % CPU)"
        )
    backlog = int(final.get("outbox_messages") or 0)
    if received < 0.95 * read or backlog > 20:
        side = "the subscriber" if cpu.get("subscriber", 0) > 85 else "the agent's publishing"
        notes.append(
            f"AGENT-BOUND toward the broker: {received:,.0f} of {read:,.0f} samples/s read arrived,"
            f" outbox {backlog} messages deep; likely {side}"
        )
    elif cpu["agent"] > 85:
        notes.append(f"AGENT-BOUND: the agent uses {cpu['agent']:.0f} % of a core")
    if not any(n.startswith("AGENT") for n in notes) and received >= 0.95 * written:
        ceiling = received / max(cpu["agent"], 1.0) * 100
        notes.append(
            f"the agent keeps up with what the servers send: {received:,.0f} samples/s at"
            f" {cpu['agent']:.0f} % of a core ({cpu['agent'] / max(received, 1) * 1e4:.1f} %"
            f" per 10,000/s; about {ceiling:,.0f}/s at 100 % if it scaled linearly)"
        )
    return "\n".join(f"- {n}" for n in notes)


# Frames every stack of a thread shares, or that only dispatch: they say nothing.
_PLUMBING = ("runpy>", "asyncio/", "threading.py", "edge_agent/cli.py", "selectors.py")


def summarize_profile(path: Path, *, seconds: float, rate: int = 100, top: int = 12) -> None:
    """Where the agent's time went, from py-spy's folded stacks (% of one core, GIL held)."""
    tables: dict[str, Counter[str]] = {
        name: Counter() for name in ("threads", "package", "self", "inclusive")
    }
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count, frames = int(count_text), stack.split(";")
        tables["threads"][frames[0].split(": ", 1)[-1]] += count
        tables["package"][_package(frames[-1])] += count
        tables["self"][frames[-1]] += count
        for frame in {f for f in frames[1:] if not any(p in f for p in _PLUMBING)}:
            tables["inclusive"][frame] += count
    one_percent = seconds * rate / 100  # samples that make 1 % of one core
    print(f"\nagent profile (py-spy --gil, {path}), % of one core:")
    for title, table in tables.items():
        print(f"  {title}:")
        for name, count in table.most_common(top):
            print(f"    {count / one_percent:6.1f} %  {name[:140]}")


def _package(frame: str) -> str:
    """The package of a folded frame ``func (path/file.py:line)``."""
    where = frame.rpartition(" (")[2]
    if "/" not in where:
        return where.split(".py")[0].split(":")[0]
    return where.split("/")[0]


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace) -> None:
    ctx = mp.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="lp-bench-opcua-"))
    rig = Rig(ctx=ctx, workdir=workdir, args=args, stop=ctx.Event(), measuring=ctx.Event())
    counters = ctx.Array("q", 4, lock=False)  # received, messages, items seen, items
    counters[3] = args.items
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        broker = Mosquitto(workdir=workdir / "mosquitto").start()
        stack.callback(broker.stop)
        assert broker.proc is not None
        rig.procs["mosquitto"] = psutil.Process(broker.proc.pid)
        rig.procs["bench (this script)"] = psutil.Process()
        result, sub_stop = start_subscriber(rig, broker.url, counters, stack)
        t0 = time.monotonic()
        start_servers(rig, stack)
        print(f"{args.servers} OPC UA server(s) up in {time.monotonic() - t0:.1f} s")
        start_agent(rig, broker.url, stack)
        sampler = Sampler(rig.procs["agent"], counters).start()
        stack.callback(sampler.stop)
        wait_for(
            lambda: counters[2] >= args.items,
            timeout=300,
            what="a value of every item at the subscriber",
            rig=rig,
        )
        print(f"every item delivered {time.monotonic() - t0:.1f} s after start; warming up")
        time.sleep(args.warmup)
        rig.measuring.set()
        start, end, final = measure(rig, counters)
        rig.measuring.clear()
        sub_stop.set()
        sub = result.recv() if result.poll(60) else {}
        report(rig, start, end, final=final, sampler=sampler, sub=sub)
        if args.profile is not None and args.profile.exists():
            summarize_profile(args.profile, seconds=args.seconds)
        if args.keep:
            print(f"\nfiles kept in {workdir}")


def start_subscriber(
    rig: Rig, url: str, counters: Any, stack: ExitStack
) -> tuple[Connection, Event]:
    """The subscriber process, subscribed; returns its result pipe and its stop event."""
    ready, stop = rig.ctx.Event(), rig.ctx.Event()
    receiver, sender = rig.ctx.Pipe(duplex=False)
    proc = rig.ctx.Process(
        target=subscribe,
        args=(url,),
        kwargs={
            "counters": counters,
            "ready": ready,
            "measuring": rig.measuring,
            "stop": stop,
            "result": sender,
        },
        name="subscriber",
    )
    proc.start()
    stack.callback(_end_process, proc, stop)
    rig.procs["subscriber"] = psutil.Process(proc.pid)
    if not ready.wait(60):
        raise SystemExit("the subscriber did not subscribe within 60 s")
    return receiver, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000, help="monitored items in total")
    parser.add_argument("--rate", type=float, default=2.0, help="changes a second per item")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--servers", type=int, default=2, help="OPC UA server processes")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--publishing-interval", type=float, default=0.25, help="seconds")
    parser.add_argument("--flush-interval", type=float, default=0.25, help="agent flush, s")
    parser.add_argument("--per-subscription", type=int, default=1000, help="items per sub")
    parser.add_argument("--profile", type=Path, help="py-spy the agent into this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    if args.items < 1 or args.servers < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--items, --servers, --rate and --seconds must be positive")
    if args.servers > args.items:
        parser.error("more servers than items")
    run(args)


if __name__ == "__main__":
    main()
