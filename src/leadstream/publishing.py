"""Publishing a file of records in request-sized chunks (what `leadstream publish` does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from rich.progress import Progress

from leadstream.client import Client
from leadstream.events import MAX_RECORDS


def read_records(path: Path) -> list[bytes]:
    """The raw records of a JSON array file or an NDJSON file, undecoded."""
    content = path.read_bytes()
    if content.lstrip().startswith(b"["):
        return [bytes(raw) for raw in msgspec.json.decode(content, type=list[msgspec.Raw])]
    return [line for line in content.splitlines() if line.strip()]


async def publish_file(client: Client, path: Path, stream: str, batch: int = 5000) -> dict[str, Any]:
    """Publish every record; rejections carry their index in the whole file."""
    records = read_records(path)
    batch = max(1, min(batch, MAX_RECORDS))
    total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "rejected": []}
    with Progress(transient=True, disable=len(records) <= batch) as progress:
        task = progress.add_task(f"publishing {path.name}", total=len(records))
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            result = await client.publish(stream, b"[" + b",".join(chunk) + b"]")
            total["accepted"] += result["accepted"]
            total["duplicates"] += result["duplicates"]
            total["rejected"] += [{**r, "index": r["index"] + start} for r in result["rejected"]]
            progress.advance(task, len(chunk))
    return total
