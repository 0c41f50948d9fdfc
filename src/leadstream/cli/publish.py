"""`leadstream publish`: a file of records, published in request-sized chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import typer
from rich.progress import Progress

from leadstream.cli.client import JSON, KEY, SERVER, call, echo_json
from leadstream.client import Client
from leadstream.events import MAX_RECORDS

BATCH = 5000  # records per request unless told


def read_records(path: Path) -> list[bytes]:
    """The raw records of a JSON array file or an NDJSON file, undecoded."""
    content = path.read_bytes()
    if content.lstrip().startswith(b"["):
        return [bytes(raw) for raw in msgspec.json.decode(content, type=list[msgspec.Raw])]
    return [line for line in content.splitlines() if line.strip()]


async def publish_file(client: Client, path: Path, stream: str, batch: int = BATCH) -> dict[str, Any]:
    """Publish every record; rejections carry their index in the whole file."""
    records = read_records(path)
    batch = max(1, min(batch, MAX_RECORDS))
    total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "rejected": []}
    with Progress(transient=True, disable=len(records) <= batch) as progress:
        task = progress.add_task(f"publishing {path.name}", total=len(records))
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            result = await client.publish(stream, b"[" + b",".join(chunk) + b"]")
            total["accepted"] += result["accepted"]
            total["duplicates"] += result["duplicates"]
            total["rejected"] += [{**r, "index": r["index"] + start} for r in result["rejected"]]
            progress.advance(task, len(chunk))
    return total


def publish(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, metavar="FILE", help="a JSON array of records, or NDJSON (one record a line)"
    ),
    stream: str = typer.Option("activity", metavar="STREAM", help="activity, audit or notification"),
    batch: int = typer.Option(BATCH, metavar="N", help=f"records per request (at most {MAX_RECORDS:,})"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Publish records from a file; prints accepted, duplicates and every rejection with its reason."""
    result = call(server, key, lambda client: publish_file(client, file, stream, batch))
    if as_json:
        echo_json(result)
        return
    typer.echo(f"accepted {result['accepted']}, duplicates {result['duplicates']}, rejected {len(result['rejected'])}")
    for rejection in result["rejected"]:
        typer.echo(f"  record {rejection['index']}: {'; '.join(rejection['errors'])}")
    if result["rejected"] and not result["accepted"] and not result["duplicates"]:
        raise typer.Exit(1)
