"""Prometheus metrics of delivery (SPEC §8), on the default registry that /metrics serves.

Lag is not kept up to date by the senders: a collector asks the running engines at scrape time,
so an idle or paused subscription costs nothing between scrapes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

DELIVERED = Counter("leadstream_delivered_events", "Events delivered with a 2xx answer", ["subscription"])
FAILED_ATTEMPTS = Counter(
    "leadstream_delivery_failed_attempts",
    "Delivery attempts that failed (connection, timeout, non-2xx)",
    ["subscription"],
)
DEAD_LETTERED = Counter(
    "leadstream_dead_lettered_events", "Events an endpoint refused for good (413 on a single event)", ["subscription"]
)
ATTEMPT_SECONDS = Histogram(
    "leadstream_delivery_attempt_seconds", "Duration of one delivery POST",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
BATCH_LATENCY = Histogram(
    "leadstream_batch_latency_seconds", "From the ingest of a batch's oldest event to its 2xx",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)  # fmt: skip

LagSource = Callable[[], Iterable[tuple[str, float]]]


class _LagCollector:
    """``leadstream_delivery_lag_seconds{subscription}`` from every registered engine."""

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[object] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "leadstream_delivery_lag_seconds",
            "Age of the oldest undelivered event, per subscription",
            labels=["subscription"],
        )
        for source in list(self.sources):
            for subscription, lag in source.lags():  # type: ignore[attr-defined]
                gauge.add_metric([subscription], lag)
        yield gauge

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked: names are fixed, values come at scrape time


LAG = _LagCollector()
REGISTRY.register(LAG)
