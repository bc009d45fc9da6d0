"""``linepulse ingest run``: MQTT -> PostgreSQL, exactly once, until SIGTERM.

Threads, one job each:

- paho's network thread (``Subscriber``) appends received messages to an inbox;
- the pump (the caller of ``IngestService.run``) decodes them, packs their COPY rows
  (``Writer.prepare``) and batches by size and age (``Batcher``), and hands each batch to
  the writer (one batch in the hand-over, so this work overlaps the database work of the
  batch before);
- the writer thread stores a batch in one transaction (``Writer``), then acks its
  messages in arrival order. When the database is unavailable it keeps the batch and
  retries with capped backoff; meanwhile the pump blocks on the hand-over, the inbox
  fills up and paho stops reading at ``max_held_messages`` (see ingest/subscriber.py);
- storage maintenance (``ingest.maintenance.Maintainer``) and the health endpoint.

Stopping (SIGTERM, SIGINT): stop taking messages in, flush what was received, commit, ack,
disconnect. What cannot be committed within ``shutdown_timeout`` stays unacked and comes
back with the next session; the ledger makes that safe.

``workers > 1`` runs that many processes on the same shared subscription, each with its
own client id (``<client id>-<n>``), database connection and health port (port + n).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from edge_agent.health import HealthServer
from edge_agent.logs import FailureGate, setup_logging
from ingest import metrics
from ingest.batcher import Batcher
from ingest.config import IngestSettings
from ingest.db import describe_url
from ingest.decode import Decoder, Pending
from ingest.errors import ConfigError, DatabaseUnavailable, IngestError
from ingest.subscriber import Subscriber
from ingest.writer import Writer, WriteResult

log = structlog.get_logger("ingest.service")

_IDLE_PING = 5.0  # seconds without a batch before the writer checks the database
_MIN_BACKOFF = 0.2


class IngestService:
    """One ingest worker: a subscriber, a batcher, a writer, maintenance and health."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.subscriber = Subscriber(settings)
        self.decoder = Decoder(prefix=settings.topic_prefix, max_bytes=settings.max_message_bytes)
        self.writer = Writer(
            settings.database_url,
            dead_letter_max_bytes=settings.dead_letter_max_bytes,
            application_name=f"linepulse-ingest {settings.mqtt_client_id}"[:63],
        )
        self._log = log.bind(client_id=settings.mqtt_client_id)
        self._db_gate = FailureGate(self._log, what="database")
        self._stop = threading.Event()
        self._abandon = threading.Event()  # the shutdown deadline passed: stop retrying
        self._deadline = float("inf")  # monotonic time the shutdown must finish by
        self._handoff: queue.Queue[list[Pending] | None] = queue.Queue(maxsize=1)
        self._db_ok = False
        self._last_commit: float | None = None
        self._health: HealthServer | None = None
        self._writer_thread: threading.Thread | None = None
        self.totals = WriteResult()  # what this worker committed so far (tests, logs)

    # ---------------------------------------------------------------- public

    def stop(self) -> None:
        """Ask ``run`` to flush, commit, ack and return (safe from a signal handler)."""
        self._stop.set()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while both the broker and the database are connected."""
        broker = self.subscriber.connected
        details = {
            "broker": broker,
            "subscribed": self.subscriber.subscribed,
            "database": self._db_ok,
            "held_messages": self.subscriber.held,
            "last_commit_age_s": (
                None if self._last_commit is None else round(time.time() - self._last_commit, 1)
            ),
        }
        return broker and self._db_ok, details

    @property
    def health_port(self) -> int | None:
        return self._health.port if self._health else None

    def run(self) -> None:
        """Run until ``stop()``; then shut down cleanly. Blocks the calling thread."""
        s = self.settings
        self._log.info(
            "ingest starting",
            database=describe_url(s.database_url),
            broker=f"{s.mqtt_host}:{s.mqtt_port}",
            subscription=s.subscription,
        )
        self._start_threads()
        try:
            self._pump()
        finally:
            self._shutdown()

    # ---------------------------------------------------------------- threads

    def _start_threads(self) -> None:
        s = self.settings
        if s.health_port is not None:
            try:
                self._health = HealthServer(
                    host=s.health_host, port=s.health_port, health=self.health
                )
            except OSError as err:
                raise ConfigError(
                    f"cannot serve health on {s.health_host}:{s.health_port}: {err.strerror}"
                    " (set LINEPULSE_HEALTH_PORT to a free port, or 0 for any)"
                ) from None
            self._health.start()
            self._log.info(
                "health endpoint", url=f"http://{s.health_host}:{self._health.port}/health"
            )
        self._writer_thread = threading.Thread(
            target=self._write_loop, name="ingest-writer", daemon=True
        )
        self._writer_thread.start()
        if s.maintenance_interval > 0:
            thread = threading.Thread(target=self._maintain, name="ingest-maintenance", daemon=True)
            thread.start()
        self.subscriber.start()

    def _maintain(self) -> None:
        """Partitions, rollups and retention every ``maintenance_interval`` (never raises)."""
        from ingest.maintenance import Maintainer

        while not self._stop.is_set():
            maintainer = Maintainer(self.settings.database_url)
            try:
                maintainer.run(self._stop, interval=self.settings.maintenance_interval)
            except Exception:  # a bug there must not end maintenance for good
                self._log.exception("storage maintenance crashed; restarting it")
                maintainer.close()
                self._stop.wait(self.settings.maintenance_interval)

    def _pump(self) -> None:
        """Decode and batch until stopped; then flush what was received."""
        s = self.settings
        batcher: Batcher[Pending] = Batcher(
            max_items=s.batch_max_messages,
            max_weight=s.batch_max_samples,
            max_age=s.flush_interval,
        )
        while not self._stop.is_set():
            wait = batcher.time_left() if len(batcher) else s.flush_interval
            self._take(batcher, self.subscriber.get(wait))
            if batcher.due():
                self._hand_over(batcher.take())
        self._begin_shutdown()
        self.subscriber.close_intake()
        self._take(batcher, self.subscriber.get(0))
        if len(batcher):
            self._hand_over(batcher.take())
        self._hand_over(None)

    def _take(self, batcher: Batcher[Pending], messages: list[Any]) -> None:
        now_ms = time.time_ns() // 1_000_000
        for m in messages:
            p = Pending(m, self.decoder.decode(m.topic, m.payload, now_ms=now_ms))
            self.writer.prepare(p.decoded)
            if batcher.add(p, p.weight):
                self._hand_over(batcher.take())

    def _hand_over(self, batch: list[Pending] | None) -> None:
        while True:
            try:
                self._handoff.put(batch, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set() and time.monotonic() > self._begin_shutdown():
                    self._give_up()
                if self._abandon.is_set():
                    if batch is not None:
                        self.subscriber.finish([p.msg for p in batch], ack=False)
                    return

    def _begin_shutdown(self) -> float:
        """The monotonic time the shutdown must be over by (fixed by the first call)."""
        if self._deadline == float("inf"):
            self._deadline = time.monotonic() + self.settings.shutdown_timeout
        return self._deadline

    def _give_up(self) -> None:
        if not self._abandon.is_set():
            self._log.warning(
                "shutdown timeout: leaving the held messages unacked for the next session",
                held=self.subscriber.held,
            )
            self._abandon.set()

    def _write_loop(self) -> None:
        self._set_db(self.writer.ping())
        while True:
            try:
                batch = self._handoff.get(timeout=0.1 if self._abandon.is_set() else _IDLE_PING)
            except queue.Empty:
                if self._abandon.is_set():
                    return
                self._set_db(self.writer.ping())
                continue
            if batch is None:
                return
            if self._abandon.is_set():
                self.subscriber.finish([p.msg for p in batch], ack=False)
            else:
                self._store(batch)

    def _store(self, batch: list[Pending]) -> None:
        """Write until it works (or the shutdown deadline passes), then ack."""
        delay = _MIN_BACKOFF
        while True:
            started = time.perf_counter()
            try:
                result = self.writer.write(batch)
            except DatabaseUnavailable as err:
                self._failed(err)
            except Exception as err:  # a bug must not stop the service: log it, retry later
                self._log.exception("unexpected error writing a batch")
                self._failed(err)
            else:
                metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
                self.subscriber.finish([p.msg for p in batch])
                self._committed(result)
                return
            if self._abandon.wait(delay):
                self.subscriber.finish([p.msg for p in batch], ack=False)
                return
            delay = min(delay * 2, self.settings.db_reconnect_max_delay)

    def _failed(self, err: BaseException) -> None:
        metrics.DB_ERRORS.inc()
        self._set_db(False)
        self._db_gate.failed(err, held=self.subscriber.held)

    def _set_db(self, ok: bool) -> None:
        self._db_ok = ok
        metrics.DB_CONNECTED.set(1 if ok else 0)
        if ok:
            self._db_gate.ok()

    def _committed(self, r: WriteResult) -> None:
        self._set_db(True)
        self._last_commit = time.time()
        self.totals.merge(r)
        metrics.BATCHES.inc()
        metrics.BATCH_MESSAGES.observe(r.messages)
        metrics.MESSAGES_STORED.inc(r.new)
        metrics.DUPLICATES.inc(r.duplicates)
        metrics.SAMPLES_WRITTEN.labels("samples").inc(r.samples)
        metrics.SAMPLES_WRITTEN.labels("samples_text").inc(r.text_samples)
        metrics.EVENTS_WRITTEN.labels("state").inc(r.states)
        metrics.EVENTS_WRITTEN.labels("count").inc(r.counts)
        metrics.STATUS_WRITTEN.inc(r.statuses)
        for kind in r.dead_letters:
            metrics.DEAD_LETTERS.labels(kind).inc()
        if r.isolated:
            metrics.BATCHES_ISOLATED.inc()
        if r.newest_ms:
            metrics.LAG.set(max(0.0, time.time() - r.newest_ms / 1000))
        if r.dead_letters:
            self._log.warning("dead letters stored", count=len(r.dead_letters))

    def _shutdown(self) -> None:
        """Wait (bounded) for the writer to commit and ack, then disconnect."""
        self._stop.set()
        deadline = self._begin_shutdown()
        writer = self._writer_thread
        if writer is not None:
            writer.join(max(0.0, deadline - time.monotonic()))
            if writer.is_alive():
                self._give_up()
                writer.join(5.0)
        self.subscriber.stop()
        self.writer.close()
        if self._health is not None:
            self._health.stop()
        self._log.info(
            "ingest stopped",
            messages=self.totals.messages,
            samples=self.totals.samples + self.totals.text_samples,
            duplicates=self.totals.duplicates,
            dead_letters=len(self.totals.dead_letters),
        )


# ---------------------------------------------------------------- entry points


def run(settings: IngestSettings, *, log_level: str = "info", log_json: bool | None = None) -> None:
    """Run the ingest (``settings.workers`` processes) until SIGTERM or SIGINT.

    ``log_level`` and ``log_json`` configure the logging of worker processes.
    """
    if settings.workers > 1:
        _supervise(settings, log_level=log_level, log_json=log_json)
        return
    service = IngestService(settings)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stop())
    service.run()


def worker_settings(settings: IngestSettings, index: int) -> IngestSettings:
    """The settings of worker ``index``: its own client id and health port."""
    port = settings.health_port
    return settings.model_copy(
        update={
            "workers": 1,
            "mqtt_client_id": f"{settings.mqtt_client_id}-{index}",
            "health_port": port + index if port else port,
        }
    )


def _worker_main(settings: IngestSettings, log_json: bool | None, log_level: str) -> None:
    setup_logging(json=log_json, level=log_level)
    run(settings)


def _supervise(settings: IngestSettings, *, log_level: str, log_json: bool | None) -> None:
    """Start the workers, restart one that dies, stop them all on SIGTERM/SIGINT."""
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    procs: dict[int, Any] = {}

    def spawn(i: int) -> None:
        p = ctx.Process(
            target=_worker_main,
            args=(worker_settings(settings, i), log_json, log_level),
            name=f"ingest-worker-{i}",
        )
        p.start()
        procs[i] = p
        log.info("worker started", worker=i, pid=p.pid)

    for i in range(settings.workers):
        spawn(i)
    while not stop.wait(1.0):
        for i, p in list(procs.items()):
            if not p.is_alive():
                log.warning("worker exited; restarting it", worker=i, exitcode=p.exitcode)
                spawn(i)
    for p in procs.values():
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.shutdown_timeout + 10
    for p in procs.values():
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``linepulse ingest run`` (for the CLI to reuse)."""
    parser.add_argument(
        "--config", "-c", type=Path, default=None, help="YAML settings file (env overrides it)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes on the shared subscription"
    )


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """``linepulse ingest run [--config file.yaml] [--workers N]``; returns the exit code."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="linepulse ingest run")
        add_arguments(parser)
        parser.add_argument("--log-level", default="info")
        args = parser.parse_args(args)
        setup_logging(level=args.log_level)
    overrides = {} if getattr(args, "workers", None) is None else {"workers": args.workers}
    try:
        settings = IngestSettings.load(getattr(args, "config", None), **overrides)
        run(
            settings,
            log_level=getattr(args, "log_level", "info"),
            log_json=getattr(args, "log_json", None),
        )
    except ConfigError as err:
        print(f"config error:\n{err}", file=sys.stderr)
        return 2
    except IngestError as err:
        print(f"ingest error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
