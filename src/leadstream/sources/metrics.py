"""Prometheus metrics of sources (SPEC §10.1), on the default registry that /metrics serves.

Calls are counted as they are answered; the budget left and the lag are asked of the running
sources at scrape time (``leadstream_source_lag_seconds``, ``leadstream_source_budget_left``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

CALLS = Counter(
    "leadstream_source_calls", "REST calls to Marketo instances, by endpoint and outcome (ok or the code)",
    ["endpoint", "outcome"],
)  # fmt: skip
PUBLISHED = Counter("leadstream_source_published_events", "Records a source stored in the log", ["source"])
DUPLICATES = Counter("leadstream_source_duplicate_events", "Records read again", ["source"])


def observe_call(path: str, outcome: str) -> None:
    CALLS.labels(path.rsplit("/", 1)[-1].removesuffix(".json"), outcome).inc()


class _Collector:
    """Lag per source and budget left per Munchkin ID, from every registered runner."""

    def __init__(self) -> None:
        self.runners: weakref.WeakSet[object] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "leadstream_source_lag_seconds", "How far behind its instance a source's stream is", labels=["source"]
        )
        left = GaugeMetricFamily(
            "leadstream_source_budget_left", "API calls the sources of a Munchkin ID may still spend today",
            labels=["munchkin_id"],
        )  # fmt: skip
        for runner in list(self.runners):
            lags: Iterable[tuple[str, float]] = runner.lags()  # type: ignore[attr-defined]
            for source, seconds in lags:
                lag.add_metric([source], seconds)
            budgets: Iterable[tuple[str, float]] = runner.budgets_left()  # type: ignore[attr-defined]
            for munchkin_id, calls in budgets:
                left.add_metric([munchkin_id], calls)
        yield lag
        yield left

    def describe(self) -> Iterator[Metric]:
        return iter(())


COLLECTOR = _Collector()
REGISTRY.register(COLLECTOR)
