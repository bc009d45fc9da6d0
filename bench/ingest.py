"""Benchmark: samples through a real Mosquitto into PostgreSQL by the ingest service (issue 3).

    .venv/bin/python bench/ingest.py [--samples 3000000 --batch 1000 --publishers 2
        --workers 1 --tags 1000 --latency-rate 50000 --latency-seconds 20 --timescale
        --set LINEPULSE_X=value --profile DIR --json FILE]

The rig: a fresh database (on the shared PostgreSQL, or with ``--timescale`` on a private
TimescaleDB cluster) migrated by ``ingest.migrate.upgrade``; a private Mosquitto (the
test harness's, autosave every 1800 s, Mosquitto's default, instead of the tests' 1 s:
the broker must not rewrite its whole store every second); the service, ``python -m
ingest.service --workers N`` with its defaults (``--set`` overrides any setting). Each
publisher is a process (bench/_ingest_publisher.py) acting as one gateway of two machines.

1. Throughput: the publishers pre-encode contract messages (``--batch`` samples each,
   ``--tags`` tags, every (tag, time) once, the newest at about now), then publish them
   at QoS 1 as fast as the broker takes them. Measured from the first publish to the last
   commit: the ledger count polled every 25 ms reaches the messages sent (the commit time
   is at most one poll late). Then the rows are checked: as many as published, no (tag,
   time) twice, the sum of the values and the uncertain count as generated, no dead letter.
2. Raw COPY, the ceiling: the same rows, from this one Python process, into ``samples``
   itself after TRUNCATE (same partitions, index, server): (a) pre-built binary buffers
   (the rows as PostgreSQL dumped them, ``COPY ... TO STDOUT (FORMAT BINARY)``), only
   socket writes on the Python side; (b) packed here from columns with ``struct`` (what the
   service's writer does) while copying. The ratio is taken against the faster one.
3. Latency: one publisher at ``--latency-rate`` samples/s for ``--latency-seconds``. The
   commit time of each message comes from PostgreSQL itself: for the phase a statement
   trigger on ``ingest_ledger`` calls ``pg_notify`` with the seqs it inserted; a NOTIFY is
   delivered only when its transaction commits, so the time a listener here receives it is
   the commit time (plus a fraction of a millisecond). Latency = that - the wall-clock time
   the publisher stamped just before encoding and publishing the message (same host clock).
   For comparison: the ledger's ``received_at`` (``now()``, the transaction's start).

Sampled every 0.5 s: the service's RSS with psutil (the largest process, which the target
applies to, and all of them together) and the messages a worker holds unacked (/health).
CPU per phase (% of one core, psutil) of the service, Mosquitto, the publishers, PostgreSQL
by role (the service's writer backends, the raw COPY backend, the other backends of the
bench's database, the server's own processes) and everything else on the host. Other work
on the host skews every figure: before each phase the bench waits (``--quiet-wait``) for
the host to be idle, and the report warns when something else ran during a phase.
``--profile DIR`` records the service's workers during the throughput phase with py-spy
(folded stacks, wall clock per thread, idle included) and prints where each thread spends
its time: computing, or waiting on the database, the broker or another thread. A profiled
run carries py-spy's cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the repository's ingest package, not this file

import _ingest_publisher as gen  # noqa: E402

from tests.harness import (  # noqa: E402
    SHARED_PG,
    Mosquitto,
    PgCluster,
    free_port,
    pg_database,
    timescale_installed,
)

TARGET_RATE = 200_000  # samples/s end to end
TARGET_RATIO = 0.5  # of the raw COPY figure
TARGET_P99 = 1.0  # seconds, at --latency-rate
TARGET_RSS = 300 * 2**20
SAMPLE_EVERY = 0.5  # psutil RSS sampling
POLL_EVERY = 0.025  # ledger polling
STALL_AFTER = 60.0  # seconds without a commit before the run is declared stuck
QUIET_BUSY = 30.0  # % of one core: the host counts as idle below this
LATENCY_AGENT = "bench-lat"
OTHER_DBS = "postgres, other databases"  # other work on a shared server: outside the bench
PG_GROUPS = (
    "postgres: ingest writers",
    "postgres: raw COPY",
    "postgres: other backends",  # maintenance, autovacuum, the bench's monitor and listener
    "postgres: server processes",  # WAL writer, checkpointer, ...
    OTHER_DBS,
)
EPOCH_2000_MS = 946_684_800_000
COPY_IN = "COPY samples (time, tag_id, value, quality) FROM STDIN (FORMAT BINARY)"
COPY_OUT = "COPY (SELECT time, tag_id, value, quality FROM samples) TO STDOUT (FORMAT BINARY)"
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
COPY_TRAILER = b"\xff\xff"
ROW = struct.Struct(">hiqiiidih").pack
NOTIFY_SQL = f"""
CREATE FUNCTION bench_notify_commit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE seqs text;
BEGIN
    SELECT string_agg(seq::text, ',') INTO seqs FROM bench_new WHERE agent = '{LATENCY_AGENT}';
    IF seqs IS NOT NULL THEN
        PERFORM pg_notify('bench_commit', left(seqs, 7900));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_notify_commit AFTER INSERT ON ingest_ledger
    REFERENCING NEW TABLE AS bench_new FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_commit();
"""
UNNOTIFY_SQL = """
DROP TRIGGER bench_notify_commit ON ingest_ledger;
DROP FUNCTION bench_notify_commit();
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=3_000_000, help="throughput phase total")
    p.add_argument("--batch", type=int, default=1000, help="samples per message")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--workers", type=int, default=1, help="ingest worker processes")
    p.add_argument("--tags", type=int, default=1000, help="distinct tags")
    p.add_argument("--latency-rate", type=float, default=50_000, help="samples/s")
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--latency-batch", type=int, default=None, help="default: --batch")
    p.add_argument("--timescale", action="store_true", help="a private TimescaleDB cluster")
    p.add_argument("--inflight", type=int, default=1000, help="publisher QoS 1 window")
    p.add_argument(
        "--set", action="append", default=[], metavar="LINEPULSE_X=V", help="service setting"
    )
    p.add_argument("--copy-repeats", type=int, default=2, help="raw COPY runs (best counts)")
    p.add_argument("--profile", type=Path, default=None, help="py-spy output directory")
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=600.0,
        help="before each phase, wait up to this many seconds for the host to be idle",
    )
    a = p.parse_args(argv)
    if a.publishers < 1 or a.batch < 1 or a.samples < a.batch * a.publishers:
        p.error("need --publishers >= 1, --batch >= 1 and --samples >= batch x publishers")
    if a.copy_repeats < 1 or a.workers < 1 or a.latency_rate <= 0:
        p.error("need --copy-repeats >= 1, --workers >= 1 and --latency-rate > 0")
    if a.tags < 2 * a.publishers:
        p.error("need at least two --tags per machine (two machines per publisher)")
    for kv in a.set:
        if not kv.startswith("LINEPULSE_") or "=" not in kv:
            p.error(f"--set {kv!r}: expected LINEPULSE_NAME=value")
    return a


# ---------------------------------------------------------------- the rig


@dataclass
class Rig:
    args: argparse.Namespace
    workdir: Path
    url: str = ""
    dbname: str = ""
    label: str = ""
    broker: Mosquitto | None = None
    service: subprocess.Popen[bytes] | None = None
    health_ports: list[int] = field(default_factory=list)
    monitor: psycopg.Connection[Any] | None = None
    postmaster: psutil.Process | None = None
    machines: list[str] = field(default_factory=list)
    tags_per_machine: int = 0
    publishers: list[gen.Child] = field(default_factory=list)

    @property
    def db(self) -> psycopg.Connection[Any]:
        assert self.monitor is not None
        return self.monitor

    def scalar(self, query: str, *params: Any) -> Any:
        row = self.db.execute(query, params or None).fetchone()
        return None if row is None else row[0]


def setup_database(rig: Rig, stack: ExitStack) -> None:
    """A fresh database, migrated; the monitor connection; the postmaster process."""
    from ingest.migrate import upgrade

    if rig.args.timescale:
        if not timescale_installed():
            raise SystemExit("TimescaleDB is not installed (../shared/timescaledb/install.sh)")
        cluster = PgCluster(timescale=True).start()
        stack.callback(cluster.close)
        admin, rig.label = cluster.admin_url, "TimescaleDB 2.28 (private PostgreSQL 15 cluster)"
    else:
        admin, rig.label = SHARED_PG, "PostgreSQL 15 (the shared server, a fresh database)"
    rig.url, drop = pg_database(admin, prefix="lp_bench")
    stack.callback(drop)
    rig.dbname = rig.url.rsplit("/", 1)[1]
    upgrade(rig.url)
    rig.monitor = psycopg.connect(rig.url, autocommit=True, application_name="bench-monitor")
    stack.callback(rig.monitor.close)
    rig.postmaster = psutil.Process(rig.scalar("SELECT pg_backend_pid()")).parent()


def start_broker(rig: Rig, stack: ExitStack) -> None:
    broker = Mosquitto(workdir=rig.workdir / "mosquitto")
    conf = broker.conf.read_text().replace("autosave_interval 1\n", "autosave_interval 1800\n")
    broker.conf.write_text(conf)
    broker.start()
    stack.callback(broker.close)
    rig.broker = broker


def _free_ports(n: int) -> int:
    """A port p with p .. p + n - 1 all free (worker i serves health on p + i)."""
    for _ in range(50):
        base = free_port()
        if all(_port_free(base + i) for i in range(1, n)):
            return base
    raise SystemExit(f"no {n} consecutive free ports")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_service(rig: Rig, stack: ExitStack) -> None:
    """``python -m ingest.service`` with the bench's database, broker and health port."""
    assert rig.broker is not None
    base = _free_ports(rig.args.workers)
    rig.health_ports = [base + i for i in range(rig.args.workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEPULSE_")}
    env |= {
        "LINEPULSE_DATABASE_URL": rig.url,
        "LINEPULSE_MQTT_URL": rig.broker.url,
        "LINEPULSE_HEALTH_PORT": str(base),
        "LINEPULSE_MQTT_CLIENT_ID": f"bench-ingest-{os.getpid()}",
        "PYTHONPATH": str(ROOT),
    }
    env |= dict(kv.split("=", 1) for kv in rig.args.set)
    cmd = [sys.executable, "-m", "ingest.service", "--workers", str(rig.args.workers)]
    with open(rig.workdir / "ingest.log", "wb") as log:
        rig.service = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop_service, rig)
    wait_for(lambda: all(_ready(p) for p in rig.health_ports), rig, 60, "the service's /health")
    if not rig.args.timescale:
        today = f"samples_p{datetime.now(UTC):%Y%m%d}"
        wait_for(
            lambda: rig.scalar("SELECT to_regclass(%s)", today) is not None,
            rig,
            60,
            f"partition {today} (the service's maintenance)",
        )


def _ready(port: int) -> bool:
    h = health(port)
    return bool(h.get("subscribed") and h.get("database"))


def health(port: int) -> dict[str, Any]:
    """The /health JSON (also when it says 503), or {} when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return dict(json.load(r))
    except urllib.error.HTTPError as err:
        return dict(json.load(err))
    except (OSError, ValueError):
        return {}


def stop_service(rig: Rig) -> None:
    proc = rig.service
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def wait_for(check: Callable[[], bool], rig: Rig, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if rig.service is not None and rig.service.poll() is not None:
            raise SystemExit(f"the service exited ({rig.service.returncode}): {log_tail(rig)}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def log_tail(rig: Rig, lines: int = 15) -> str:
    path = rig.workdir / "ingest.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n" + "\n".join(text.splitlines()[-lines:])


def service_procs(rig: Rig) -> list[psutil.Process]:
    """The service's processes (the supervisor and its workers), alive now."""
    if rig.service is None:
        return []
    try:
        top = psutil.Process(rig.service.pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def worker_pids(rig: Rig) -> list[int]:
    """The processes that run an ingest worker (the top one when there is one worker)."""
    procs = service_procs(rig)
    if rig.args.workers == 1:
        return [p.pid for p in procs[:1]]
    return [p.pid for p in procs[1:] if "spawn_main" in " ".join(_cmdline(p))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


# ---------------------------------------------------------------- publisher children


def burst_specs(rig: Rig) -> list[gen.Spec]:
    assert rig.broker is not None
    a = rig.args
    return gen.burst_specs(
        port=rig.broker.port,
        machines=rig.machines,
        tags_per_machine=rig.tags_per_machine,
        samples=a.samples,
        batch=a.batch,
        inflight=a.inflight,
    )


def start_publishers(rig: Rig, specs: list[gen.Spec]) -> list[dict[str, Any]]:
    rig.publishers = [gen.Child(s, rig.workdir) for s in specs]
    return [c.line(timeout=600) for c in rig.publishers]


def close_publishers(rig: Rig) -> None:
    for c in rig.publishers:
        c.close()
    rig.publishers = []


# ---------------------------------------------------------------- measuring


class RssSampler:
    """Every SAMPLE_EVERY seconds: the service's RSS (all its processes, and the largest),
    and the messages its workers hold (received, not yet acked: what the RSS is made of)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.series: list[tuple[float, int, int]] = []  # time, all processes, largest
        self.held_peak = 0  # of one worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            sizes = [0]
            for p in service_procs(self.rig):
                with contextlib.suppress(psutil.Error):
                    sizes.append(p.memory_info().rss)
            self.series.append((time.monotonic(), sum(sizes), max(sizes)))
            for port in self.rig.health_ports:
                self.held_peak = max(self.held_peak, int(health(port).get("held_messages") or 0))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> tuple[int, int]:
        """The peak RSS of all the processes together, and of the largest one."""
        inside = [(total, one) for t, total, one in self.series if start <= t <= end]
        return max((x[0] for x in inside), default=0), max((x[1] for x in inside), default=0)


@dataclass
class Cpu:
    """CPU seconds per group of processes (pid -> seconds), and the machine's busy time."""

    t: float
    groups: dict[str, dict[int, float]]
    busy: float


def _seconds(p: psutil.Process) -> float:
    try:
        c = p.cpu_times()
        return float(c.user + c.system)
    except psutil.Error:
        return 0.0


def cpu_snapshot(rig: Rig) -> Cpu:
    groups: dict[str, list[psutil.Process]] = {
        "ingest": service_procs(rig),
        "mosquitto": [psutil.Process(rig.broker.proc.pid)]
        if rig.broker and rig.broker.proc
        else [],
        "publishers": [c.ps for c in rig.publishers],
        "bench (this process)": [psutil.Process()],
    }
    groups |= postgres_procs(rig)
    total = psutil.cpu_times()
    busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
    return Cpu(
        t=time.monotonic(),
        groups={g: {p.pid: _seconds(p) for p in ps} for g, ps in groups.items()},
        busy=busy,
    )


def postgres_procs(rig: Rig) -> dict[str, list[psutil.Process]]:
    """The server's processes by role: the service's writer backends, the raw COPY's, the
    other backends of our database (maintenance, autovacuum, the bench's monitor), the
    server's own (WAL, checkpoints), and the backends of other databases (other work)."""
    assert rig.postmaster is not None
    roles = {
        pid: (db, app or "")
        for pid, db, app in rig.db.execute(
            "SELECT pid, datname, application_name FROM pg_stat_activity"
        )
    }
    groups: dict[str, list[psutil.Process]] = {g: [] for g in PG_GROUPS}
    groups[PG_GROUPS[3]].append(rig.postmaster)
    for p in rig.postmaster.children():
        db, app = roles.get(p.pid, (None, ""))
        if db is None:
            group = PG_GROUPS[3]
        elif db != rig.dbname:
            group = OTHER_DBS
        elif app.startswith("linepulse-ingest"):
            group = PG_GROUPS[0]
        else:
            group = PG_GROUPS[1] if app == "bench-raw-copy" else PG_GROUPS[2]
        groups[group].append(p)
    return groups


def cpu_percent(a: Cpu, b: Cpu) -> dict[str, float]:
    """% of one core per group between two snapshots, and what the rest of the host used."""
    span = b.t - a.t
    out = {}
    ours = 0.0
    for g, pids in b.groups.items():
        used = sum(max(0.0, s - a.groups.get(g, {}).get(pid, 0.0)) for pid, s in pids.items())
        out[g] = used / span * 100
        if g != OTHER_DBS:
            ours += used
    out["postgres, all of ours"] = sum(out[g] for g in PG_GROUPS[:4])
    out["machine (2 cores = 200 %)"] = (b.busy - a.busy) / span * 100
    out["outside the bench"] = max(0.0, b.busy - a.busy - ours) / span * 100
    return out


def wait_committed(rig: Rig, target: int, *, agent: str | None = None) -> list[tuple[float, int]]:
    """Poll the ledger until it holds ``target`` messages; (wall time of the poll, count)."""
    query = "SELECT count(*) FROM ingest_ledger" + (" WHERE agent = %s" if agent else "")
    params = (agent,) if agent else ()
    series: list[tuple[float, int]] = []
    last_change = time.monotonic()
    while True:
        t = time.time()  # before the query: every commit it sees happened before this
        n = int(rig.scalar(query, *params))
        if not series or n != series[-1][1]:
            last_change = time.monotonic()
        series.append((t, n))
        if n >= target:
            return series
        if rig.service is not None and rig.service.poll() is not None:
            raise SystemExit(f"the service exited during the run: {log_tail(rig)}")
        if time.monotonic() - last_change > STALL_AFTER:
            states = [health(p) for p in rig.health_ports]
            raise SystemExit(f"stuck at {n} of {target} messages; health: {states}")
        time.sleep(POLL_EVERY)


@contextmanager
def profiled(rig: Rig, name: str) -> Iterator[list[Path]]:
    """py-spy record of every worker while the block runs (with --profile)."""
    outs: list[Path] = []
    if rig.args.profile is None:
        yield outs
        return
    rig.args.profile.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    procs = []
    for pid in worker_pids(rig):
        out = rig.args.profile / f"{name}-{pid}.txt"
        # --idle: wall clock per thread, so a thread waiting on the database or on another
        # thread shows where it waits, not only where it computes
        cmd = [spy, "record", "--pid", str(pid), "--rate", "100", "--idle", "--threads"]
        cmd += ["--nonblocking", "--format", "raw", "--output", str(out)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        outs.append(out)
    time.sleep(0.5)  # py-spy attaches
    try:
        yield outs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            if proc.returncode not in (0, -signal.SIGINT):
                print(f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}")


def settle(rig: Rig, what: str) -> None:
    """Wait (up to --quiet-wait) until the host is idle: other work skews every figure."""
    deadline = time.monotonic() + rig.args.quiet_wait
    said = False
    while True:
        busy = _busy_percent(2.0)
        if busy < QUIET_BUSY or time.monotonic() > deadline:
            break
        if not said:
            print(f"waiting for the host to be idle before {what} (busy {busy:.0f} %)")
            said = True
    if busy >= QUIET_BUSY:
        print(f"WARNING: the host is still busy ({busy:.0f} % of 200 %): figures are skewed")


def _busy_percent(seconds: float) -> float:
    """CPU the whole machine used over ``seconds`` (% of one core)."""
    a = psutil.cpu_times()
    time.sleep(seconds)
    b = psutil.cpu_times()
    idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
    return max(0.0, (sum(b) - sum(a)) - idle) / seconds * 100


# ---------------------------------------------------------------- phase 1: throughput


def throughput(rig: Rig, rss: RssSampler, specs: list[gen.Spec]) -> dict[str, Any]:
    ready = start_publishers(rig, specs)
    messages = sum(s.messages for s in specs)
    samples = messages * rig.args.batch
    print(
        f"throughput: {len(specs)} publishers pre-encoded {messages:,} messages"
        f" ({sum(r['bytes'] for r in ready) / 2**20:,.0f} MiB) in"
        f" {max(r['encode_s'] for r in ready):.1f} s; publishing"
    )
    rig.db.execute("CHECKPOINT")
    settle(rig, "the throughput phase")
    with profiled(rig, "throughput") as profiles:
        before = cpu_snapshot(rig)
        for c in rig.publishers:
            c.send("go")
        series = wait_committed(rig, messages)
        after = cpu_snapshot(rig)
    results = [c.line(timeout=120) for c in rig.publishers]
    close_publishers(rig)
    first = min(r["first_publish"] for r in results)
    end = series[-1][0]
    out = {
        "messages": messages,
        "samples": samples,
        "seconds": end - first,
        "rate": samples / (end - first),
        "steady_rate": steady_rate(series, per_message=rig.args.batch),
        "publish_seconds": max(r["last_publish"] for r in results) - first,
        "acked_seconds": max(r["last_ack"] for r in results) - first,
        "cpu": cpu_percent(before, after),
        "rss_peak": rss.peak(before.t, after.t),
        "profiles": [str(p) for p in profiles],
    }
    return out


def steady_rate(series: list[tuple[float, int]], *, per_message: int) -> float:
    """Samples/s between the polls that saw 10 % and 90 % of the messages committed."""
    total = series[-1][1]
    t10, n10 = next(x for x in series if x[1] >= total * 0.1)
    t90, n90 = next(x for x in series if x[1] >= total * 0.9)
    return (n90 - n10) * per_message / (t90 - t10) if t90 > t10 else float("nan")


@dataclass
class Rows:
    """The rows the publishers sent, as the writer's columns (per message), with tag ids."""

    columns: list[tuple[list[int], list[int], list[float], list[int]]]
    total: float  # sum of the values
    uncertain: int


def generated_rows(rig: Rig, specs: list[gen.Spec]) -> Rows:
    """Regenerate what the publishers sent (the data is deterministic), tags as their ids."""
    ids = {
        (path, name): tag_id
        for path, name, tag_id in rig.db.execute(
            "SELECT a.path, t.name, t.id FROM tags t JOIN assets a ON a.id = t.asset_id"
        )
    }
    rows = Rows([], 0.0, 0)
    for spec in specs:
        for b in gen.stream(spec):
            tags = [ids[(b.machine, gen.tag_name(b.machine, t))] for t in b.tags]
            quality = [1 if u else 0 for u in b.uncertain]
            rows.columns.append((b.times, tags, b.values, quality))
            rows.total += sum(b.values)
            rows.uncertain += sum(quality)
    return rows


def verify(rig: Rig, rows: Rows, samples: int) -> dict[str, Any]:
    """Rows as published: count, no (tag, time) twice, values, qualities, no dead letter."""
    count, total, uncertain = rig.db.execute(
        "SELECT count(*), sum(value), count(*) FILTER (WHERE quality = 1) FROM samples"
    ).fetchone() or (0, 0.0, 0)
    with rig.db.transaction():
        # Without statistics and with the default 4 MB the planner picks a hash aggregate
        # that spills for minutes; sorted in memory it takes a second or two.
        rig.db.execute("SET LOCAL work_mem = '1GB'")
        rig.db.execute("SET LOCAL enable_hashagg = off")
        distinct = rig.scalar("SELECT count(*) FROM (SELECT DISTINCT tag_id, time FROM samples) d")
    check = {
        "rows": count,
        "published": samples,
        "distinct_tag_time": distinct,
        "values_match": abs(total - rows.total) <= 1e-9 * abs(rows.total) + 1e-6,
        "uncertain": uncertain,
        "uncertain_published": rows.uncertain,
        "dead_letters": rig.scalar("SELECT count(*) FROM dead_letters"),
        "text_rows": rig.scalar("SELECT count(*) FROM samples_text"),
    }
    check["ok"] = (
        count == samples == distinct
        and check["values_match"]
        and uncertain == rows.uncertain
        and check["dead_letters"] == 0
        and check["text_rows"] == 0
    )
    return check


# ---------------------------------------------------------------- phase 2: raw COPY


def raw_copy(rig: Rig, rows: Rows, samples: int) -> dict[str, Any]:
    """The same rows by binary COPY from this process: pre-built buffers, then packed here."""
    dump = bytearray()
    with rig.db.cursor() as cur, cur.copy(COPY_OUT) as copy:
        for chunk in copy:
            dump += chunk
    out: dict[str, Any] = {"bytes": len(dump)}
    ways: dict[str, Callable[[psycopg.Copy], None]] = {
        "prebuilt": lambda c: _write_buffer(c, dump),
        "packed": lambda c: _write_packed(c, rows),
    }
    # Interleaved, best of --copy-repeats: the order and the host's noise otherwise decide.
    for _ in range(rig.args.copy_repeats):
        for name, write in ways.items():
            run = timed_copy(rig, write, samples)
            print(f"raw COPY ({name}): {run['rate']:,.0f} rows/s")
            if name not in out or run["rate"] > out[name]["rate"]:
                out[name] = run
    return out


def _write_buffer(copy: psycopg.Copy, dump: bytearray) -> None:
    view = memoryview(dump)
    for i in range(0, len(view), 1 << 20):
        copy.write(view[i : i + (1 << 20)])


def _write_packed(copy: psycopg.Copy, rows: Rows) -> None:
    """One write per message, rows packed with struct as the service's writer packs them."""
    copy.write(COPY_HEADER)
    off, row = EPOCH_2000_MS, ROW
    for times, tags, values, quality in rows.columns:
        copy.write(
            b"".join(
                [
                    row(4, 8, (t - off) * 1000, 4, i, 8, v, 2, q)
                    for t, i, v, q in zip(times, tags, values, quality, strict=True)
                ]
            )
        )
    copy.write(COPY_TRAILER)


def timed_copy(rig: Rig, write: Callable[[psycopg.Copy], None], samples: int) -> dict[str, Any]:
    """TRUNCATE samples, CHECKPOINT, then one COPY in one transaction, timed to the commit."""
    rig.db.execute("TRUNCATE samples")
    rig.db.execute("CHECKPOINT")
    settle(rig, "a raw COPY")
    with psycopg.connect(rig.url, application_name="bench-raw-copy") as conn:
        before = cpu_snapshot(rig)
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(COPY_IN) as copy:
            write(copy)
        conn.commit()
        took = time.perf_counter() - started
        after = cpu_snapshot(rig)
    rows = rig.scalar("SELECT count(*) FROM samples")
    if rows != samples:
        raise SystemExit(f"raw COPY stored {rows} rows, expected {samples}")
    return {"seconds": took, "rate": samples / took, "cpu": cpu_percent(before, after)}


# ---------------------------------------------------------------- phase 3: latency


class Listener:
    """LISTEN bench_commit: the wall-clock time each latency seq's commit was announced."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, application_name="bench-listener")
        self.conn.execute("LISTEN bench_commit")
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for n in self.conn.notifies(timeout=0.2):
                t = time.time()
                for seq in n.payload.split(","):
                    with contextlib.suppress(ValueError):
                        self.seen.setdefault(int(seq), t)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def latency(rig: Rig) -> dict[str, Any]:
    a = rig.args
    assert rig.broker is not None
    spec = gen.Spec(
        mode="rate",
        port=rig.broker.port,
        agent=LATENCY_AGENT,
        machines=tuple(rig.machines),
        tags_per_machine=rig.tags_per_machine,
        batch=a.latency_batch or a.batch,
        seed=7,
        rate=a.latency_rate,
        seconds=a.latency_seconds,
        max_inflight=a.inflight,
    )
    (ready,) = start_publishers(rig, [spec])
    rig.db.execute(NOTIFY_SQL)
    listener = Listener(rig.url)
    settle(rig, "the latency phase")
    try:
        before = cpu_snapshot(rig)
        rig.publishers[0].send("go")
        wait_committed(rig, int(ready["messages"]), agent=LATENCY_AGENT)
        after = cpu_snapshot(rig)
        time.sleep(0.2)  # the last notification
    finally:
        listener.close()
        rig.db.execute(UNNOTIFY_SQL)
    result = rig.publishers[0].line(timeout=60)
    close_publishers(rig)
    return summarize_latency(rig, result, listener.seen, cpu_percent(before, after))


def summarize_latency(
    rig: Rig, result: dict[str, Any], seen: dict[int, float], cpu: dict[str, float]
) -> dict[str, Any]:
    published = {int(seq): t for seq, t in result["published"]}
    started = dict(
        rig.db.execute(
            "SELECT seq, extract(epoch FROM received_at)::float8 FROM ingest_ledger"
            " WHERE agent = %s",
            (LATENCY_AGENT,),
        ).fetchall()
    )
    commit = sorted(seen[s] - t for s, t in published.items() if s in seen)
    begin = sorted(started[s] - t for s, t in published.items() if s in started)
    span = result["last_publish"] - result["first_publish"]
    per_message = result["samples"] / len(published)
    return {
        "messages": len(published),
        "rate": (len(published) - 1) * per_message / span if span > 0 else float("nan"),
        "behind_max_s": result["behind_max_s"],
        "unannounced": len(published) - len(commit),
        "commit": percentiles(commit),
        "tx_start": percentiles(begin),
        "cpu": cpu,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"p50": q[49], "p99": q[98], "max": values[-1], "min": values[0]}


# ---------------------------------------------------------------- report


def report(rig: Rig, res: dict[str, Any], rss: RssSampler) -> list[str]:
    a = rig.args
    tp, cp, lat = res["throughput"], res["copy"], res["latency"]
    ratio = tp["rate"] / max(cp["prebuilt"]["rate"], cp["packed"]["rate"])
    total, single = rss.peak()
    p99 = lat["commit"].get("p99", float("inf"))
    ok = tp["check"]["ok"]
    lines = [
        "",
        f"ingest benchmark: {rig.label}",
        f"  {a.workers} worker(s), {a.publishers} publisher(s), {tp['messages']:,} messages x"
        f" {a.batch:,} samples, {rig.tags_per_machine * len(rig.machines):,} tags on"
        f" {len(rig.machines)} machines; load average before: {res['load_before']:.2f}",
        "",
        f"  {'':<46}{'measured':>18}  {'target':>12}",
    ]

    def row(name: str, value: str, target: str = "", passed: bool | None = None) -> None:
        mark = "" if passed is None else ("PASS" if passed else "FAIL")
        lines.append(f"  {name:<46}{value:>18}  {target:>12}  {mark}")

    row("end to end samples/s, first pub -> last commit", f"{tp['rate']:,.0f}",
        f">= {TARGET_RATE:,}", tp["rate"] >= TARGET_RATE)  # fmt: skip
    row("  steady, 10 % -> 90 % of messages committed", f"{tp['steady_rate']:,.0f}")
    spans = (tp["seconds"], tp["publish_seconds"], tp["acked_seconds"])
    row("  s: all committed / publishing / PUBACKs", " / ".join(f"{x:.1f}" for x in spans))
    row("  rows: count, no doubles, values, quality", f"{tp['check']['rows']:,} "
        f"{'ok' if ok else 'WRONG'}", "as sent", ok)  # fmt: skip
    row("raw COPY rows/s, pre-built buffers", f"{cp['prebuilt']['rate']:,.0f}")
    row("raw COPY rows/s, packed in Python", f"{cp['packed']['rate']:,.0f}")
    row("ratio end to end / best raw COPY", f"{ratio:.2f}", f">= {TARGET_RATIO}",
        ratio >= TARGET_RATIO)  # fmt: skip
    row(f"latency at {lat['rate']:,.0f} samples/s: p50", _ms(lat["commit"].get("p50")))
    row("  p99", _ms(p99), f"<= {TARGET_P99 * 1000:.0f} ms",
        p99 <= TARGET_P99 and not lat["unannounced"])  # fmt: skip
    row("  max", _ms(lat["commit"].get("max")))
    row("  transaction start (lower bound) p50 / p99",
        f"{_ms(lat['tx_start'].get('p50'))} / {_ms(lat['tx_start'].get('p99'))}")  # fmt: skip
    row("ingest peak RSS, one process", f"{single / 2**20:,.0f} MB",
        f"<= {TARGET_RSS // 2**20} MB", single <= TARGET_RSS)  # fmt: skip
    row("  all its processes together", f"{total / 2**20:,.0f} MB")
    row("  peak messages held by a worker (unacked)", f"{rss.held_peak:,}")
    lines += ["", "  CPU, % of one core          throughput  raw COPY prebuilt / packed  latency"]
    for g in tp["cpu"]:
        lines.append(
            f"  {g:<28}{tp['cpu'][g]:>10.0f}{cp['prebuilt']['cpu'][g]:>18.0f}"
            f"{cp['packed']['cpu'][g]:>9.0f}{lat['cpu'][g]:>9.0f}"
        )
    return lines + warnings(res)


def warnings(res: dict[str, Any]) -> list[str]:
    lat, out = res["latency"], []
    if lat["unannounced"]:
        out.append(f"  WARNING: {lat['unannounced']} latency messages had no commit notice")
    busy = {n: r["cpu"]["outside the bench"] for n, r in phases(res).items()}
    if max(busy.values()) > QUIET_BUSY:
        noisy = ", ".join(f"{n} {v:.0f} %" for n, v in busy.items())
        out.append(f"  WARNING: other work on the host during the run ({noisy}): figures skewed")
    if lat["behind_max_s"] > 0.1:
        out.append(f"  note: the latency publisher fell up to {lat['behind_max_s']:.2f} s behind")
    return out


def phases(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "throughput": res["throughput"],
        "raw COPY prebuilt": res["copy"]["prebuilt"],
        "raw COPY packed": res["copy"]["packed"],
        "latency": res["latency"],
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or seconds == float("inf") else f"{seconds * 1000:,.0f} ms"


def summarize_profile(path: Path, *, top: int = 8) -> list[str]:
    """Per thread of a worker (wall clock, from py-spy's folded stacks): where it spends
    its time, by the innermost frame of our own code and by the innermost frame of all."""
    threads: dict[str, Counter[str]] = {}
    leaves: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack:
            continue
        n, frames = int(n_text), stack.split(";")
        name = frames[0]
        ours = [f for f in frames[1:] if "ingest/" in f or "edge_agent/" in f]
        threads.setdefault(name, Counter())[ours[-1] if ours else frames[-1]] += n
        leaves.setdefault(name, Counter())[frames[-1]] += n
    out = [f"\nprofile {path} (wall clock per thread, 100 samples/s):"]
    for name, table in sorted(threads.items(), key=lambda kv: -kv[1].total()):
        total = table.total()
        if total < 100:  # under a second: the health endpoint's request threads
            continue
        out.append(f"  {name} ({total / 100:.1f} s sampled)")
        out.append("    innermost frame in ingest/ or edge_agent/:")
        out += [f"      {c / total * 100:5.1f} %  {k[:120]}" for k, c in table.most_common(top)]
        out.append("    innermost frame:")
        out += [
            f"      {c / total * 100:5.1f} %  {k[:120]}"
            for k, c in leaves[name].most_common(top // 2)
        ]
    return out


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="lp-bench-ingest-"))
    rig = Rig(args=args, workdir=workdir)
    res: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, True)
        stack.callback(close_publishers, rig)
        setup_database(rig, stack)
        start_broker(rig, stack)
        rig.machines = gen.machines(args.publishers)
        rig.tags_per_machine = args.tags // len(rig.machines)
        start_service(rig, stack)
        rss = RssSampler(rig).start()
        stack.callback(rss.stop)
        print(f"rig ready: {rig.label}; service pid {rig.service.pid if rig.service else '-'}")
        specs = burst_specs(rig)
        res["throughput"] = tp = throughput(rig, rss, specs)
        print(f"throughput: {tp['rate']:,.0f} samples/s; checking the rows")
        rows = generated_rows(rig, specs)
        tp["check"] = verify(rig, rows, tp["samples"])
        res["copy"] = raw_copy(rig, rows, tp["samples"])
        del rows
        res["latency"] = latency(rig)
        lines = report(rig, res, rss)
        res["rss_peak"], res["held_peak"] = rss.peak(), rss.held_peak
        for path in res["throughput"]["profiles"]:
            lines += summarize_profile(Path(path))
        print("\n".join(lines))
        if args.keep:
            print(f"work directory kept: {workdir}")
    return res


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds: service, broker, database


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    res = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
