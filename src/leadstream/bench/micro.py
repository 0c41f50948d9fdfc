"""Micro-benchmarks of the two per-event hot paths, in CPU time of this one process:
``python -m leadstream.bench.micro``.

- ingest: split a request of 1,000 benchmark records and validate each (``events.split_records``
  + ``validate_records``), µs per record;
- bodies: a 500-event legacy and cloudevents batch body per subscription, from the events'
  shared elements (built once, as the log tail does) and, for comparison, built from scratch,
  µs per event per subscription.

Each figure is the best of several rounds (the least disturbed by other work on the machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from leadstream import formats
from leadstream.bench.records import body
from leadstream.catalog import Catalog
from leadstream.events import Validator, split_records, validate_records


def _best_us(work: Callable[[], object], per: int, rounds: int = 7, repeat: int = 20) -> float:
    best = float("inf")
    kept = work()
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(repeat):
            # The last answer stays alive until the next one exists, as in a server where other
            # requests hold memory: else glibc hands the freed heap top back to the system and
            # every round pays the page faults of taking it again (2 µs a record here).
            kept = work()  # noqa: F841
        best = min(best, (time.process_time() - started) / repeat / per * 1e6)
    return best


def measure(rounds: int = 7, repeat: int = 20) -> dict[str, float]:
    validator = Validator(Catalog())
    request = body("micro", 0, 1000)

    def ingest() -> object:
        events, rejected = validate_records(validator, "activity", split_records(request, ndjson=False))
        assert len(events) == 1000 and not rejected
        return events

    events = validate_records(validator, "activity", split_records(body("micro", 0, 500), ndjson=False))[0]
    figures = {"ingest: split + validate, µs per record": _best_us(ingest, 1000, rounds, repeat)}
    for fmt in ("legacy", "cloudevents"):
        shared = formats.elements(fmt, events)
        options: dict[str, Any] = {"subscription_id": "sub-1", "batch_id": "b", "created": "2026-11-28T10:00:00Z"}
        figures[f"{fmt} body from shared elements, µs per event per subscription"] = _best_us(
            lambda: formats.batch_body(fmt, events, shared=shared, **options),  # noqa: B023
            len(events), rounds, repeat,
        )  # fmt: skip
        figures[f"{fmt} body built from scratch, µs per event per subscription"] = _best_us(
            lambda: formats.batch_body(fmt, events, **options),  # noqa: B023
            len(events), rounds, repeat,
        )  # fmt: skip
    return figures


def main() -> None:
    for name, value in measure().items():
        print(f"{value:8.2f}  {name}")


if __name__ == "__main__":
    main()
