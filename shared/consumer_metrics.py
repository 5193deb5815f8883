"""Prometheus metrics of the Kafka consumer loop (``shared/kafka.py``), per process.

They live in a registry of their own, so a service can serve them next to metrics of its
own without a clash of names (alert's ``/metrics`` has database-wide figures too). Each
process counts what it consumed: sum across replicas. ``consumer`` is the loop's name
(``classify``, ``alert``).

What each one means, and how to alert on it: docs/operations.md ("Metrics").
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

LAG = Gauge(
    "thirdring_consumer_lag",
    "Records behind the end of the log on the partitions this process holds",
    ["consumer", "topic"],
    registry=REGISTRY,
)
ASSIGNED = Gauge(
    "thirdring_consumer_assigned_partitions",
    "Partitions of the topic this process holds now",
    ["consumer"],
    registry=REGISTRY,
)
RECORDS = Counter(
    "thirdring_consumer_records",
    "Records consumed, bad ones included",
    ["consumer"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "thirdring_consumer_batch_size",
    "Records per consumed batch",
    ["consumer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "thirdring_consumer_batch_seconds",
    "Seconds from a batch's arrival to its commit: parse, effects, dead letters, retries",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "thirdring_consumer_dead_letters",
    "Records sent to the dead-letter topic, by cause: parse (not a valid event) or handler",
    ["consumer", "cause"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "thirdring_consumer_errors",
    "Errors by kind: batch (a batch failed and was retried record by record), transient "
    "(broker or database unavailable; retried after a pause), commit (offsets not committed, "
    "the records are delivered again)",
    ["consumer", "kind"],
    registry=REGISTRY,
)


def render() -> bytes:
    """The Prometheus text exposition of the consumer metrics."""
    return generate_latest(REGISTRY)


def render_with_process() -> bytes:
    """The consumer metrics and the process's own (CPU, memory, open files, GC): what a
    service's ``/metrics`` serves when it has nothing else to say."""
    return render() + generate_latest(prometheus_client.REGISTRY)
