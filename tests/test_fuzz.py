"""Schemathesis against a running server's own /openapi.json, every check, for a bounded time
(LEADSTREAM_FUZZ_SECONDS, 40 s by default; about a minute in all): no 5xx, ever (issue 16)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from helpers import ServerProcess

FUZZ_SECONDS = os.environ.get("LEADSTREAM_FUZZ_SECONDS", "40")
# Findings of the conformance checks that are still open: ST202 (requests the schema lets through
# that the server refuses), ST301 (a deprovisioned subscription and a revoked key stay readable,
# with state deprovisioned and revokedAt: a documented choice, SPEC §3, that schemathesis cannot be
# told of). They are printed but do not fail the suite; any other finding does — above all
# ST101/ST102, a server error. ST201 (a schema-violating request accepted) is ingest as SPEC §2
# wants it: each record is validated on its own and a bad one is listed in the 200's `rejected`,
# which schemathesis counts as accepted.
OPEN_FINDINGS = {"ST201", "ST202", "ST301"}


async def test_schemathesis_all_checks_finds_no_server_error(tmp_path):
    server = await ServerProcess(tmp_path / "data").start()
    try:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--no-color",
            "run", server.url + "/openapi.json",
            "--checks", "all",
            "--max-time", FUZZ_SECONDS,
            "--header", f"Authorization: Bearer {server.key}",
            "--request-timeout", "15",
            "--suppress-health-check", "all",
            "--workers", "1",
            "--seed", os.environ.get("LEADSTREAM_FUZZ_SEED", "16"),  # the same requests each run, but for the time cut
        ]  # fmt: skip
        fuzz = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
        )
        output = (await fuzz.communicate())[0].decode(errors="replace")
        wal = tmp_path / "data" / "leadstream.db-wal"
        wal_bytes = wal.stat().st_size if wal.exists() else 0
    finally:
        server.stop()
    print(output[-8000:])  # shown when the test fails, with every finding
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) > 200, output[-3000:]
    found = set(re.findall(r"\b(ST\d{3})\b", output))
    assert not found & {"ST101", "ST102"}, "a server error:\n" + output[-6000:]
    assert found <= OPEN_FINDINGS, f"new findings {found - OPEN_FINDINGS}:\n" + output[-6000:]
    assert "Traceback" not in server.tail(1_000_000), server.tail(4000)
    assert wal_bytes < 64 * 1024 * 1024, f"the WAL reached {wal_bytes} bytes under fuzzing"  # was 583 MB
