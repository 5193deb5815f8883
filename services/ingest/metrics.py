"""Prometheus metrics of ingest (served at ``GET /metrics`` on the ingest app).

Labels are the configured source name (``mastodon-social``), or ``webhook`` for pushes.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from shared.events import RawMention

# Post time -> published to Kafka: seconds for streaming sources, minutes for polls,
# hours when a source was down.
LAG_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 86400)

INGEST_LAG = Histogram(
    "thirdring_ingest_lag_seconds",
    "Seconds from a post's own created_at to its publication on mentions.raw (backfill excluded)",
    ["source"],
    buckets=LAG_BUCKETS,
)
ITEMS = Counter(
    "thirdring_ingest_items",
    "Items a source produced, by outcome: published, duplicate, dead_lettered, filtered",
    ["source", "outcome"],
)
SOURCE_UP = Gauge(
    "thirdring_source_up", "1 when the source's last poll succeeded, 0 when it failed", ["source"]
)
CONSECUTIVE_FAILURES = Gauge(
    "thirdring_source_consecutive_failures", "Polls failed in a row", ["source"]
)
REQUESTS = Counter(
    "thirdring_source_requests",
    "HTTP requests to a source's API, by status code (or 'error' for network failures)",
    ["source", "status"],
)
QUOTA_REMAINING = Gauge(
    "thirdring_source_quota_remaining",
    "Requests left in the current rate-limit window, as the API last reported",
    ["source"],
)


def observe_lag(source: str, mentions: Iterable[RawMention]) -> None:
    hist = INGEST_LAG.labels(source)
    for m in mentions:
        if not m.backfill:
            hist.observe(max(0.0, (m.ingested_at - m.created_at).total_seconds()))
