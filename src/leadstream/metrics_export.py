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

The console's charts ask the same way for their few numbers per subscription (events delivered,
lag), which the delivery process answers as JSON from what its senders hold: rendering and
parsing a thousand subscriptions' Prometheus text for them, every 10 s, cost an idle server more
than everything else it does in those 10 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

METRICS_FILE = "delivery-metrics.prom"
WANTED_FILE = "delivery-metrics.wanted"  # touched by the API process: "export now"
READINGS_FILE = "delivery-readings.json"  # the console's chart readings, when asked
READINGS_WANTED_FILE = "delivery-readings.wanted"
FRESH_WAIT = 1.0  # seconds the API process waits for a fresh export before serving the last one


def export(data_dir: Path) -> None:
    """Write this process's metrics to the data directory (whole or not at all: a rename)."""
    _write_whole(data_dir / METRICS_FILE, generate_latest())


def export_if_wanted(data_dir: Path) -> None:
    """Export if the API process asked since the last export (or none was written yet for it)."""
    if _asked(data_dir / WANTED_FILE, data_dir / METRICS_FILE):
        export(data_dir)


def readings_wanted(data_dir: Path) -> bool:
    """Whether the console's charts asked since the last ``answer_readings`` (two stats)."""
    return _asked(data_dir / READINGS_WANTED_FILE, data_dir / READINGS_FILE)


def answer_readings(data_dir: Path, readings: Mapping[str, tuple[float, float]]) -> None:
    """The chart readings asked for: (events delivered, lag in seconds) per subscription id."""
    _write_whole(data_dir / READINGS_FILE, orjson.dumps(readings))


def exported(data_dir: Path, wait: float = FRESH_WAIT) -> str | None:
    """The delivery process's metrics, exported after this call began if it answers within
    ``wait`` seconds, else its last export; None if it has written none. Blocks: call it in a thread."""
    text = _fresh(data_dir / WANTED_FILE, data_dir / METRICS_FILE, wait)
    return None if text is None else text.decode()


def chart_readings(data_dir: Path, wait: float = FRESH_WAIT) -> dict[str, tuple[float, float]]:
    """The delivery process's (events delivered, lag in seconds) per subscription, as fresh as
    ``exported``'s metrics; empty if it has answered none yet. Blocks: call it in a thread."""
    data = _fresh(data_dir / READINGS_WANTED_FILE, data_dir / READINGS_FILE, wait)
    return {sub_id: (delivered, lag) for sub_id, (delivered, lag) in orjson.loads(data).items()} if data else {}


def _write_whole(path: Path, data: bytes) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def _asked(wanted: Path, answer: Path) -> bool:
    """Whether ``wanted`` was touched since ``answer`` was last written."""
    try:
        asked = wanted.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    try:
        return answer.stat().st_mtime_ns <= asked
    except FileNotFoundError:
        return True


def _fresh(wanted: Path, answer: Path, wait: float) -> bytes | None:
    """Touch ``wanted``, then read ``answer`` once it is written after that, or after ``wait``
    seconds whatever it holds; None if there is none."""
    wanted.touch()
    asked = wanted.stat().st_mtime_ns
    deadline = time.monotonic() + wait
    while True:
        try:
            if answer.stat().st_mtime_ns >= asked or time.monotonic() >= deadline:
                return answer.read_bytes()
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
