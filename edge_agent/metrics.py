"""Prometheus metrics of the edge agent (one set per process, labelled per device)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DEVICE_READS = Counter(
    "linepulse_edge_device_reads", "Successful read requests (or subscription batches)", ["device"]
)
DEVICE_ERRORS = Counter(
    "linepulse_edge_device_errors", "Failed reads, timeouts and exception responses", ["device"]
)
DEVICE_CONNECTED = Gauge(
    "linepulse_edge_device_connected", "1 while the device link is up", ["device"]
)
SCAN_SECONDS = Histogram(
    "linepulse_edge_scan_seconds",
    "Duration of one scan of a scan class",
    ["device", "scan"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SAMPLES_READ = Counter("linepulse_edge_samples_read", "Values read from devices", ["device"])
SAMPLES_REPORTED = Counter(
    "linepulse_edge_samples_reported", "Samples that passed report-by-exception"
)
EVENTS_EMITTED = Counter("linepulse_edge_events", "Machine events emitted", ["type"])
OUTBOX_DEPTH = Gauge("linepulse_edge_outbox_messages", "Messages waiting in the outbox")
OUTBOX_BYTES = Gauge("linepulse_edge_outbox_bytes", "Payload bytes waiting in the outbox")
OUTBOX_DROPPED = Counter(
    "linepulse_edge_outbox_dropped", "Messages dropped because the outbox was full", ["kind"]
)
PUBLISHED = Counter("linepulse_edge_published_messages", "Messages acknowledged by the broker")
PUBLISH_LATENCY = Histogram(
    "linepulse_edge_publish_latency_seconds",
    "From publish to broker acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BROKER_CONNECTED = Gauge("linepulse_edge_broker_connected", "1 while connected to the broker")
