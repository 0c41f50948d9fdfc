"""/metrics of two processes on one port: the delivery process (``leadstream serve``'s default on
the embedded store) writes its registry to a file of the data directory when the API process asks
for it; the API process serves its own registry with that file's families merged in. Both
processes register every metric (they import the same modules), so a family the API process has
no sample of is taken from the delivery process; one both have samples of (the ``process_*`` ones)
stays the API process's own, so no name is exposed twice.

Asking is touching a second file: the delivery process looks at its time every
``metrics_export_interval`` and exports only when it is newer than the last export, so an
idle server does not render a thousand subscriptions' series every second for nobody (it was
most of the delivery process's idle CPU), and a scrape gets figures a fraction of a second old.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

METRICS_FILE = "delivery-metrics.prom"
WANTED_FILE = "delivery-metrics.wanted"  # touched by the API process: "export now"
FRESH_WAIT = 1.0  # seconds the API process waits for a fresh export before serving the last one


def export(data_dir: Path) -> None:
    """Write this process's metrics to the data directory (whole or not at all: a rename)."""
    path = data_dir / METRICS_FILE
    partial = path.with_suffix(".tmp")
    partial.write_bytes(generate_latest())
    os.replace(partial, path)


def export_if_wanted(data_dir: Path) -> None:
    """Export if the API process asked since the last export (or none was written yet for it)."""
    try:
        asked = (data_dir / WANTED_FILE).stat().st_mtime_ns
    except FileNotFoundError:
        return
    try:
        if (data_dir / METRICS_FILE).stat().st_mtime_ns > asked:
            return
    except FileNotFoundError:
        pass
    export(data_dir)


def exported(data_dir: Path, wait: float = FRESH_WAIT) -> str | None:
    """The delivery process's metrics, exported after this call began if it answers within
    ``wait`` seconds, else its last export; None if it has written none. Blocks: call it in a thread."""
    wanted, path = data_dir / WANTED_FILE, data_dir / METRICS_FILE
    wanted.touch()
    asked = wanted.stat().st_mtime_ns
    deadline = time.monotonic() + wait
    while True:
        try:
            if path.stat().st_mtime_ns >= asked or time.monotonic() >= deadline:
                return path.read_text()
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
        time.sleep(0.01)


def served(data_dir: Path) -> bytes:
    """This process's metrics with the delivery process's fresh export merged in. Blocks."""
    text = exported(data_dir)
    if text is None:  # not written yet (the delivery process is starting)
        return generate_latest()
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Merged(text))
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


def per_subscription(data_dir: Path, *samples: str) -> dict[str, dict[str, float]]:
    """The delivery process's fresh value of each of ``samples``, per subscription label. Blocks."""
    found: dict[str, dict[str, float]] = {sample: {} for sample in samples}
    text = exported(data_dir)
    for family in text_string_to_metric_families(text or ""):
        for s in family.samples:
            if s.name in found and "subscription" in s.labels:
                found[s.name][s.labels["subscription"]] = s.value
    return found
