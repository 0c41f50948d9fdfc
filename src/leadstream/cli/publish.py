"""`leadstream publish`: a file of records, published in request-sized chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import typer
from rich.progress import Progress

from leadstream.cli.client import JSON, KEY, SERVER, call, echo_json, fail
from leadstream.cli.group import Stream
from leadstream.client import Client
from leadstream.events import MAX_RECORDS

BATCH = 5000  # records per request unless told


class Records:
    """The raw records of a file, undecoded, and what to call each in a message: its line in an
    NDJSON file, its index in a JSON array."""

    def __init__(self, raw: list[bytes], lines: list[int] | None) -> None:
        self.raw = raw
        self.lines = lines  # None: a JSON array

    def label(self, index: int) -> str:
        return f"line {self.lines[index]}" if self.lines is not None else f"record {index}"


def read_records(path: Path) -> Records:
    """A JSON array file or an NDJSON file; ValueError naming the place when it is not JSON."""
    content = path.read_bytes()
    if content.lstrip().startswith(b"["):
        try:
            return Records([bytes(raw) for raw in msgspec.json.decode(content, type=list[msgspec.Raw])], None)
        except msgspec.DecodeError as exc:
            raise ValueError(f"{path}: not a JSON array: {exc}") from None
    raw, lines = [], []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise ValueError(f"{path}: line {number} is not JSON: {exc}") from None
        raw.append(line)
        lines.append(number)
    return Records(raw, lines)


async def publish_records(
    client: Client, records: Records, stream: str, batch: int = BATCH, name: str = "records"
) -> dict[str, Any]:
    """Publish every record; each rejection carries its index in the whole file and its ``where``
    (its line in an NDJSON file)."""
    batch = max(1, min(batch, MAX_RECORDS))
    total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "rejected": []}
    count = len(records.raw)
    with Progress(transient=True, disable=count <= batch) as progress:
        task = progress.add_task(f"publishing {name}", total=count)
        for start in range(0, count, batch):
            chunk = records.raw[start : start + batch]
            result = await client.publish(stream, b"[" + b",".join(chunk) + b"]")
            total["accepted"] += result["accepted"]
            total["duplicates"] += result["duplicates"]
            for rejection in result["rejected"]:
                index = rejection["index"] + start
                total["rejected"].append({**rejection, "index": index, "where": records.label(index)})
            progress.advance(task, len(chunk))
    return total


def publish(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, metavar="FILE", help="a JSON array of records, or NDJSON (one record a line)"
    ),
    stream: Stream = typer.Option(Stream.activity, help="the stream the records belong to"),
    batch: int = typer.Option(BATCH, min=1, max=MAX_RECORDS, metavar="N", help="records per request"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Publish records from a file; prints accepted, duplicates and every rejection with its reason.
    Exits 1 when any record was rejected (the others are stored)."""
    try:
        records = read_records(file)  # a file that is not JSON stops here, before anything is sent
    except (ValueError, OSError) as exc:
        fail(str(exc), 2)
    result = call(server, key, lambda client: publish_records(client, records, stream.value, batch, file.name))
    if as_json:
        echo_json(result)
    else:
        typer.echo(
            f"accepted {result['accepted']}, duplicates {result['duplicates']}, rejected {len(result['rejected'])}"
        )
        for rejection in result["rejected"]:
            typer.echo(f"  {rejection['where']}: {'; '.join(rejection['errors'])}")
    if result["rejected"]:
        raise typer.Exit(1)
