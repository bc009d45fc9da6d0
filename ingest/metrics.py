"""Prometheus metrics of the ingest service (one set per process; workers have their own)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "linepulse_ingest_messages_received", "MQTT messages received from the broker"
)
MESSAGES_STORED = Counter(
    "linepulse_ingest_messages_stored", "New samples/events messages committed (ledger)"
)
DUPLICATES = Counter(
    "linepulse_ingest_duplicates", "Messages skipped because the ledger had their (agent, seq)"
)
SAMPLES_WRITTEN = Counter(
    "linepulse_ingest_samples_written", "Samples committed", ["table"]
)  # table: samples | samples_text
EVENTS_WRITTEN = Counter("linepulse_ingest_events_written", "Events committed", ["type"])
STATUS_WRITTEN = Counter(
    "linepulse_ingest_gateway_status_written", "Gateway births and deaths recorded"
)
DEAD_LETTERS = Counter(
    "linepulse_ingest_dead_letters",
    "Messages stored as dead letters, by reason class",
    ["reason"],  # oversize, topic, json, version, timestamp, invalid, mismatch, unstorable...
)
BATCHES = Counter("linepulse_ingest_batches", "Batches committed")
BATCHES_ISOLATED = Counter(
    "linepulse_ingest_batches_isolated", "Batches written message by message after a data error"
)
COMMIT_SECONDS = Histogram(
    "linepulse_ingest_commit_seconds",
    "From the start of a batch's transaction to its commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_MESSAGES = Histogram(
    "linepulse_ingest_batch_messages",
    "Messages per committed batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
DB_ERRORS = Counter(
    "linepulse_ingest_db_errors", "Failed attempts to store a batch (it is retried)"
)
HELD = Gauge(
    "linepulse_ingest_held_messages", "Messages received and not yet committed and acknowledged"
)
LAG = Gauge(
    "linepulse_ingest_lag_seconds", "Commit time minus the newest source timestamp of the batch"
)
BROKER_CONNECTED = Gauge("linepulse_ingest_broker_connected", "1 while connected to the broker")
DB_CONNECTED = Gauge("linepulse_ingest_database_connected", "1 while the database is reachable")
