"""/metrics of two processes on one port: the delivery process (``leadstream serve``'s default on
the embedded store) writes its registry to a file of the data directory every
``metrics_export_interval``; the API process serves its own registry with that file's families
merged in. Both processes register every metric (they import the same modules), so a family the
API process has no sample of is taken from the delivery process; one both have samples of (the
``process_*`` ones) stays the API process's own, so no name is exposed twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

METRICS_FILE = "delivery-metrics.prom"


def export(data_dir: Path) -> None:
    """Write this process's metrics to the data directory (whole or not at all: a rename)."""
    path = data_dir / METRICS_FILE
    partial = path.with_suffix(".tmp")
    partial.write_bytes(generate_latest())
    os.replace(partial, path)


def served(data_dir: Path) -> bytes:
    """This process's metrics with the delivery process's last export merged in."""
    try:
        exported = (data_dir / METRICS_FILE).read_text()
    except FileNotFoundError:  # not written yet (the delivery process is starting)
        return generate_latest()
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Merged(exported))
    return generate_latest(merged)


class _Merged:
    def __init__(self, exported: str) -> None:
        self.exported = exported

    def collect(self) -> Iterator[Metric]:
        own = {family.name: family for family in REGISTRY.collect()}
        for family in text_string_to_metric_families(self.exported):
            if family.name.endswith("_created"):  # the parser's own family for a counter's creation time
                continue
            mine = own.get(family.name)
            if mine is None or not mine.samples:
                own[family.name] = family
        yield from own.values()


def per_subscription(data_dir: Path, sample: str) -> dict[str, float]:
    """The delivery process's last exported value of ``sample`` per subscription label."""
    try:
        exported = (data_dir / METRICS_FILE).read_text()
    except FileNotFoundError:
        return {}
    return {
        s.labels["subscription"]: s.value
        for family in text_string_to_metric_families(exported)
        for s in family.samples
        if s.name == sample and "subscription" in s.labels
    }
