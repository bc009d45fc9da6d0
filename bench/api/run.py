"""Benchmark: OEE through the real HTTP API on a seeded plant of 100 machines × 1 year (issue 4).

    .venv/bin/python -m bench.api [--machines 100 --days 365 --seed 4
        --database-url postgresql://postgres@127.0.0.1:5432/lp_bench_api
        --reuse --keep --jobs 2 --requests 100 --site-requests 10 --clients 16 --seconds 20
        --results FILE --profile --json FILE --api-workers 1]

1. The database: the bench's own (``--database-url`` names it; never a test database),
   created at the latest schema and filled by :mod:`bench.api.load` (the plant is
   :mod:`bench.api.plant`), dropped at the end unless ``--keep``. ``--reuse`` keeps a
   database that already holds the same spec (and upgrades its schema if it is older).
2. The server: ``linepulse api run`` in a subprocess (uvicorn, its default settings), an
   API key with the viewer role, requests over keep-alive HTTP connections.
3. The figures, each after a warm-up, one request at a time:
   * one machine over 30 days by shift (a random machine and a random 30 local days);
   * the whole site over the whole data (one year) by day;
   * throughput: ``--clients`` threads sending the 30-day query for ``--seconds``.
4. ``--results FILE``: a fixed set of responses written to FILE on the first run and
   compared with it on later ones (an optimisation must not change any figure).
   ``--profile``: the two queries in-process under cProfile, the top functions printed.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import json
import math
import os
import pstats
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as bench/api/run.py rather than python -m bench.api
    sys.path.insert(0, str(ROOT))

from api.auth import keys  # noqa: E402
from api.config import ApiSettings  # noqa: E402
from api.db import make_engine  # noqa: E402
from bench.api import load, plant  # noqa: E402
from tests.harness import free_port, wait_port  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/lp_bench_api"
TARGET_MACHINE_P95 = 0.050
TARGET_SITE_P95 = 1.0
OEE = "/api/v1/oee"


@dataclass(frozen=True)
class Plant:
    """Asset ids of the loaded plant."""

    site: int
    lines: list[int]
    machines: list[int]


def _plant(url: str) -> Plant:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, level FROM assets ORDER BY id").fetchall()
    by_level: dict[str, list[int]] = {}
    for asset_id, level in rows:
        by_level.setdefault(level, []).append(asset_id)
    return Plant(by_level["site"][0], by_level["line"], by_level["machine"])


def _viewer_key(url: str) -> str:
    engine = make_engine(ApiSettings(database_url=url, pool_size=1, max_overflow=0))
    try:
        with Session(engine) as session:
            return keys.create_key(session, name=f"bench-{os.getpid()}", role="viewer").secret
    finally:
        engine.dispose()


@contextmanager
def api_server(url: str, port: int, workers: int = 1) -> Iterator[None]:
    """``linepulse api run`` against the bench database, stopped (SIGTERM) afterwards."""
    env = {
        **os.environ,
        "LINEPULSE_DATABASE_URL": url,
        "LINEPULSE_API_PORT": str(port),
        "LINEPULSE_API_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "api", "run", "--workers", str(workers)],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_port(port, timeout=30)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """One keep-alive HTTP connection with the key (one per thread)."""

    def __init__(self, port: int, key: str, *, timeout: float = 600.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, params: dict[str, Any]) -> tuple[float, int, bytes]:
        """(seconds, status, body) of GET /api/v1/oee?params."""
        t0 = time.perf_counter()
        self.conn.request("GET", f"{OEE}?{urlencode(params)}", headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        return time.perf_counter() - t0, response.status, body


def _local_midnight(spec: plant.Spec, day: int) -> datetime:
    local = datetime.combine(plant.FIRST_DAY + timedelta(days=day), datetime.min.time())
    return local.replace(tzinfo=plant.TZ).astimezone(UTC)


def machine_query(spec: plant.Spec, p: Plant, rng: random.Random) -> dict[str, Any]:
    """A random machine over a random 30 local days, by shift."""
    span = min(30, spec.days)
    first = rng.randrange(spec.days - span + 1)
    return {
        "asset_id": rng.choice(p.machines),
        "start": _local_midnight(spec, first).isoformat(),
        "end": _local_midnight(spec, first + span).isoformat(),
        "bucket": "shift",
    }


def site_query(spec: plant.Spec, p: Plant) -> dict[str, Any]:
    """The whole site over the whole data, by day."""
    return {
        "asset_id": p.site,
        "start": spec.start.isoformat(),
        "end": spec.end.isoformat(),
        "bucket": "day",
    }


@dataclass
class Figures:
    """Latencies of one scenario, in seconds."""

    name: str
    n: int
    p50: float
    p95: float
    max: float
    mean: float
    errors: int
    bytes: int
    rate: float | None = None  # requests/s (throughput runs)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _figures(name: str, lat: list[float], errors: int, size: int, rate: float | None) -> Figures:
    if not lat:
        return Figures(name, 0, math.nan, math.nan, math.nan, math.nan, errors, size, rate)
    mean = sum(lat) / len(lat)
    return Figures(
        name, len(lat), _pct(lat, 0.5), _pct(lat, 0.95), max(lat), mean, errors, size, rate
    )


def sequential(name: str, client: Client, queries: list[dict[str, Any]], *, warmup: int) -> Figures:
    """Each query once, one at a time, after ``warmup`` unmeasured ones."""
    for q in queries[:warmup]:
        _checked(client.get(q), q)
    lat, size = [], 0
    for q in queries[warmup:]:
        seconds, _status, body = _checked(client.get(q), q)
        lat.append(seconds)
        size = max(size, len(body))
    return _figures(name, lat, 0, size, None)


def _checked(result: tuple[float, int, bytes], query: dict[str, Any]) -> tuple[float, int, bytes]:
    if result[1] != 200:
        raise SystemExit(f"HTTP {result[1]} for {query}: {result[2][:500]!r}")
    return result


def throughput(
    make: Callable[[random.Random], dict[str, Any]],
    *,
    port: int,
    key: str,
    clients: int,
    seconds: float,
) -> Figures:
    """``clients`` threads sending queries for ``seconds``: requests/s and latencies."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        client, rng = Client(port, key), random.Random(f"client:{i}")
        mine: list[float] = []
        start.wait()
        while time.perf_counter() < deadline[0]:
            t, status, _body = client.get(make(rng))
            if status == 200:
                mine.append(t)
            else:
                with lock:
                    errors[0] += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return _figures(f"throughput, {clients} clients", lat, errors[0], 0, len(lat) / elapsed)


# ---------------------------------------------------------------------------------------
# Results: the same responses before and after an optimisation


def result_queries(spec: plant.Spec, p: Plant) -> dict[str, dict[str, Any]]:
    """A fixed set of queries covering every bucket kind and level."""
    rng = random.Random(f"{spec.seed}:results")
    out = {f"machine-30d-shift-{i}": machine_query(spec, p, rng) for i in range(4)}
    start, end = spec.start.isoformat(), spec.end.isoformat()
    week = _local_midnight(spec, min(7, spec.days)).isoformat()
    out["machine-all-week"] = {
        "asset_id": p.machines[-1],
        "start": start,
        "end": end,
        "bucket": "week",
    }
    out["machine-all-none"] = {"asset_id": p.machines[0], "start": start, "end": end}
    out["line-7d-hour"] = {"asset_id": p.lines[0], "start": start, "end": week, "bucket": "hour"}
    odd = (spec.start + timedelta(days=min(3, spec.days - 1), minutes=7, seconds=13)).isoformat()
    out["line-odd-edges"] = {"asset_id": p.lines[-1], "start": odd, "end": end, "bucket": "day"}
    out["site-all-day"] = site_query(spec, p)
    return out


def check_results(client: Client, path: Path, spec: plant.Spec, p: Plant) -> str:
    """Write the responses to ``path`` (first run) or compare them with it."""
    got = {}
    for name, q in result_queries(spec, p).items():
        _t, _status, body = _checked(client.get(q), q)
        got[name] = json.loads(body)
    if not path.exists():
        path.write_text(json.dumps(got, indent=1, sort_keys=True))
        return f"results written to {path} ({len(got)} responses)"
    want = json.loads(path.read_text())
    diffs = [d for name in want for d in _diff(want[name], got.get(name), name)]
    if not diffs:
        return f"results identical to {path} ({len(want)} responses)"
    return f"RESULTS DIFFER from {path}: {len(diffs)} values, e.g. " + "; ".join(diffs[:8])


def _diff(a: Any, b: Any, where: str) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            yield from _diff(a.get(k), b.get(k), f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{where}[{i}]")
    elif a != b:
        yield f"{where}: {a!r} != {b!r}"


# ---------------------------------------------------------------------------------------
# Profile: the two queries in-process


def profile(url: str, spec: plant.Spec, p: Plant, *, top: int = 25) -> None:
    """cProfile of the service call of each scenario (no HTTP), top functions by own time."""
    from api.oee import service

    engine = make_engine(ApiSettings(database_url=url, pool_size=1, max_overflow=0))
    queries = {
        "machine 30 days by shift": machine_query(spec, p, random.Random(1)),
        "site by day": site_query(spec, p),
    }
    try:
        for name, q in queries.items():
            args = {
                "asset_id": q["asset_id"],
                "start": datetime.fromisoformat(q["start"]),
                "end": datetime.fromisoformat(q["end"]),
                "bucket": q.get("bucket", "none"),
                "max_range_days": 3660,
            }
            with Session(engine) as session:
                service.oee(session, **args)  # warm
                prof = cProfile.Profile()
                t0 = time.perf_counter()
                prof.enable()
                service.oee(session, **args)
                prof.disable()
                print(f"\n--- profile: {name} ({time.perf_counter() - t0:.3f} s)")
                pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=100)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--database-url", default=DEFAULT_URL)
    ap.add_argument("--reuse", action="store_true", help="keep a database with the same spec")
    ap.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    ap.add_argument("--jobs", type=int, default=2, help="generator processes")
    ap.add_argument("--requests", type=int, default=100, help="30-day machine queries")
    ap.add_argument("--site-requests", type=int, default=10, help="site-year queries")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0, help="throughput phase length")
    ap.add_argument("--results", type=Path, help="write or compare a fixed set of responses")
    ap.add_argument("--profile", action="store_true", help="cProfile the two queries")
    ap.add_argument("--api-workers", type=int, default=1, help="linepulse api run --workers")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)
    if args.machines < 1 or args.days < 30 or args.days > 366:
        ap.error("--machines must be >= 1 and --days within 30..366")
    return args


def main(argv: list[str] | None = None) -> int:
    """Load (or reuse) the plant, serve it, measure, print."""
    args = _args(argv)
    spec = plant.Spec(args.machines, args.days, args.seed)
    url = args.database_url
    load.database_name(url)
    print(f"plant: {spec.machines} machines × {spec.days} days, seed {spec.seed} → {url}")
    report = load.prepare(url, spec, reuse=args.reuse, jobs=args.jobs)
    _print_load(report)
    try:
        figures = _measure(args, spec, url)
    finally:
        if not (args.keep or args.reuse):
            load.drop(url)
            print(f"dropped {load.database_name(url)}")
    if args.json:
        args.json.write_text(
            json.dumps({"load": asdict(report), "figures": [asdict(f) for f in figures]}, indent=1)
        )
    return 0


def _measure(args: argparse.Namespace, spec: plant.Spec, url: str) -> list[Figures]:
    p = _plant(url)
    if args.profile:
        profile(url, spec, p)
    key, port = _viewer_key(url), free_port()
    rng = random.Random(f"{spec.seed}:bench")
    with api_server(url, port, args.api_workers):
        client = Client(port, key)
        if args.results:
            print(check_results(client, args.results, spec, p))
        machine = [machine_query(spec, p, rng) for _ in range(args.requests + 5)]
        figures = [sequential("machine, 30 days by shift", client, machine, warmup=5)]
        site = [site_query(spec, p)] * (args.site_requests + 1)
        figures.append(sequential(f"site, {spec.days} days by day", client, site, warmup=1))
        figures.append(
            throughput(
                lambda r: machine_query(spec, p, r),
                port=port,
                key=key,
                clients=args.clients,
                seconds=args.seconds,
            )
        )
    _print_figures(figures, spec)
    return figures


def _print_load(r: load.LoadReport) -> None:
    rows = ", ".join(f"{k} {v:,}" for k, v in (r.rows or {}).items())
    print(f"database: {r.size_mb:,.0f} MB; rows: {rows}")
    how = "reused" if r.reused else "loaded"
    print(
        f"{how}: config {r.config_s:.1f} s, generate + COPY + keys {r.copy_s:.1f} s,"
        f" VACUUM ANALYZE {r.vacuum_s:.1f} s, schema upgrade {r.upgrade_s:.1f} s"
    )


def _print_figures(figures: list[Figures], spec: plant.Spec) -> None:
    print(f"\n{'scenario':34} {'n':>6} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'req/s':>8}")
    for f in figures:
        rate = f"{f.rate:8.1f}" if f.rate is not None else " " * 8
        print(
            f"{f.name:34} {f.n:6d} {f.p50 * 1e3:9.1f} {f.p95 * 1e3:9.1f} {f.max * 1e3:9.1f} {rate}"
            + (f"  errors {f.errors}" if f.errors else "")
        )
    machine, site = figures[0], figures[1]
    if spec != plant.Spec():
        print("(the targets are for the default plant: 100 machines × 365 days)")
    for name, f, target in (
        ("machine", machine, TARGET_MACHINE_P95),
        ("site", site, TARGET_SITE_P95),
    ):
        verdict = "met" if f.p95 <= target else "MISSED"
        print(f"target {name} p95 ≤ {target * 1e3:.0f} ms: {verdict} ({f.p95 * 1e3:.1f} ms)")
    print(f"largest responses: machine {machine.bytes:,} B, site {site.bytes:,} B")


if __name__ == "__main__":
    sys.exit(main())
