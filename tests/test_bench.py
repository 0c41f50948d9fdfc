"""leadstream bench: the sink counts and times what it receives, the bare loop delivers what it
accepted, and a tiny run prints the table and writes the JSON and the plot. No timed assertions:
figures are measured by the benchmark, never by tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from helpers import wait_until
from leadstream.bench import default_scenarios, run_bench
from leadstream.bench.harness import Durations
from leadstream.bench.procs import Part
from leadstream.bench.records import body, count_events, record_size, send_times_us
from leadstream.bench.sink import Sink

TINY = Durations(
    warmup=0.2, window=0.8, backlog=1000, bare_backlog=1000, idle_subscriptions=10, idle_window=0.5,
    both_bare_variants=False,
)  # fmt: skip


def test_records_are_realistic_and_carry_their_send_time() -> None:
    sent = time.time_ns() // 1000
    payload = body("t1", 5, 3, sent_us=sent)
    records = orjson.loads(payload)
    assert [r["marketoGUID"] for r in records] == [f"t1-{sent}-{n}" for n in (5, 6, 7)]
    assert 650 <= record_size() <= 800
    legacy = b'{"activities":[' + b",".join(orjson.dumps({"marketoGUID": r["marketoGUID"]}) for r in records) + b"]}"
    assert count_events(legacy) == 3
    assert send_times_us(legacy) == [sent] * 3


async def test_sink_counts_times_and_windows() -> None:
    async with TestServer(Sink().app(), host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}"
        sent = time.time_ns() // 1000 - 40_000  # 40 ms ago
        records = orjson.loads(body("t", 0, 4, sent_us=sent))
        legacy = orjson.dumps({"activities": records})
        start = time.time_ns() // 1000
        for path in ("/lat/a", "/count/b", "/count/b"):
            async with http.post(url + path, data=legacy) as r:
                assert r.status == 200
        end = time.time_ns() // 1000 + 1
        async with http.get(url + "/_stats") as r:
            stats = await r.json()
        assert stats["total"] == 12 and stats["subs"]["b"]["count"] == 8
        async with http.get(url + "/_window", params={"since": start, "until": end, "prefix": "b"}) as r:
            assert (await r.json())["count"] == 8
        async with http.get(url + "/_latency", params={"since": start, "until": end}) as r:
            delays = await r.json()
        assert delays["events"] == 4 and 40 <= delays["p50"] < 10_000
        async with http.get(url + "/_reached", params={"name": "b", "count": 5}) as r:
            assert start <= (await r.json())["at"] <= end
        async with http.get(url + "/_reached", params={"name": "b", "count": 9}) as r:
            assert (await r.json())["at"] is None
        async with http.get(url + "/lat/a", params={"challenge": "xyz"}) as r:
            assert await r.text() == "xyz"


async def test_bare_loop_in_two_processes_delivers_every_accepted_event_once(tmp_path: Path) -> None:
    sink = Sink()
    async with TestServer(sink.app(), host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        endpoints = [f"http://127.0.0.1:{server.port}/count/bare-{i}" for i in range(2)]
        targets = [a for url in endpoints for a in ("--to", url)]
        db = str(tmp_path / "bare.db")
        ingest = await Part.module(
            "bare-ingest", "leadstream.bench.bare", "ingest", "--db", db, log=tmp_path / "i.log"
        ).start()
        deliver = await Part.module(
            "bare-deliver",
            "leadstream.bench.bare",
            "deliver",
            "--db",
            db,
            *targets,
            "--batch",
            "50",
            log=tmp_path / "d.log",
        ).start()
        try:
            url = f"http://127.0.0.1:{(await ingest.first_line())['port']}/v1/streams/activity/events"
            await deliver.first_line()
            sent = time.time_ns() // 1000
            for first in (0, 100, 100):  # the last request repeats the second: duplicates
                async with http.post(url, data=body("t", first, 100, sent_us=sent)) as r:
                    answer = await r.json()
            assert answer == {"accepted": 0, "duplicates": 100, "rejected": []}
            await wait_until(
                lambda: sink.tallies.get("bare-1") and sink.tallies["bare-1"].count >= 200,
                what="the bare loop to deliver 200 events to both endpoints",
            )
            assert {name: t.count for name, t in sink.tallies.items()} == {"bare-0": 200, "bare-1": 200}
        finally:
            await deliver.stop()
            await ingest.stop()


def test_a_tiny_run_prints_the_table_and_writes_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures_file, plot_file = tmp_path / "bench.json", tmp_path / "bench.png"
    code = run_bench(True, figures_file, plot_file, ["ingest", "e2e"], durations=TINY)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "leadstream bench" in out and "sustained end to end" in out

    document = orjson.loads(figures_file.read_bytes())
    assert {"date", "cpu_model", "logical_cores", "python", "sqlite", "libraries"} <= document["machine"].keys()
    figures = {f["scenario"]: f for f in document["figures"]}
    assert set(figures) == {"ingest", "e2e", "memory"}
    for figure in figures.values():
        assert {
            "metric",
            "unit",
            "leadstream",
            "bare",
            "ratio_to_bare",
            "target",
            "meets_target",
            "note",
        } <= figure.keys()
    assert figures["ingest"]["leadstream"] > 0 and figures["ingest"]["bare"]["1 process"] > 0
    bare = figures["e2e"]["detail"]["bare 2 processes"]
    assert figures["e2e"]["bare"]["2 processes"] > 0 and bare["received"] == bare["accepted"] > 0
    # Leadstream's end-to-end part runs once the server has a subscriptions API, and says so if not.
    assert (figures["e2e"]["leadstream"] or 0) > 0 or "skipped" in figures["e2e"]["note"]
    # CPU per event of each server process: the API process ("server main") per accepted event,
    # the delivery process per delivered one.
    e2e = figures["e2e"]["detail"]["leadstream"]
    accepted, delivered = e2e["cpu_us_per_accepted_event"], e2e["cpu_us_per_delivered_event"]
    assert accepted["server main"] > 0 and delivered["server children"] > 0
    assert accepted["server"] >= max(accepted["server main"], accepted["server children"])
    assert figures["ingest"]["detail"]["leadstream"]["cpu_us_per_delivered_event"] == {}
    assert figures["memory"]["leadstream"] > 0
    assert document["timeline"] and document["spans"]
    assert plot_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- from a plain install ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = """
import sys
from pathlib import Path
from leadstream.bench import default_scenarios, run_bench
from leadstream.bench.harness import Durations
tiny = Durations(warmup=0.2, window=0.8, backlog=1000, bare_backlog=1000, idle_subscriptions=10,
                 idle_window=0.5, both_bare_variants=False)
sys.exit(run_bench(True, Path(sys.argv[1]), None, ["latency"], durations=tiny))
"""


def _plain_venv(cache: pytest.Cache) -> Path:
    """A venv with leadstream installed without extras (``pip install -e .``: the declared
    dependencies only), made once per pyproject.toml and kept in the pytest cache."""
    import hashlib
    import subprocess
    import sys

    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = cache.mkdir(f"plain-install-{digest}")
    python = venv / "bin" / "python"
    if not (venv / "installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", str(ROOT)],
            check=True,
        )
        (venv / "installed").touch()
    return python


@pytest.mark.timeout(600)  # the first run after a change of pyproject.toml installs the venv (25 s on a quiet machine)
def test_the_bench_runs_from_an_install_without_extras(pytestconfig: pytest.Config, tmp_path: Path) -> None:
    import subprocess

    assert pytestconfig.cache is not None
    python = _plain_venv(pytestconfig.cache)
    probe = subprocess.run([str(python), "-c", "import numpy"], capture_output=True)
    assert probe.returncode != 0, "the plain venv must not have numpy (it only comes with the extras)"
    figures_file = tmp_path / "bench.json"
    run = subprocess.run(
        [str(python), "-c", TINY_RUN, str(figures_file)], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr
    figures = {f["metric"]: f for f in orjson.loads(figures_file.read_bytes())["figures"]}
    p50 = next(f for metric, f in figures.items() if "p50" in metric)
    assert p50["leadstream"] is not None and p50["leadstream"] > 0, figures


def test_the_micro_benchmarks_measure_ingest_and_bodies() -> None:
    from leadstream.bench.micro import measure

    figures = measure(rounds=1, repeat=1)
    assert len(figures) == 5 and all(value > 0 for value in figures.values()), figures


def test_the_cluster_scenario_runs_two_nodes_on_a_fresh_postgresql_database(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    figures_file = tmp_path / "bench.json"
    code = run_bench(True, figures_file, None, ["cluster"], durations=TINY, database_url=postgres_url)
    out = capsys.readouterr().out
    assert code == 0, out
    figures = {f["metric"]: f for f in orjson.loads(figures_file.read_bytes())["figures"]}
    ingest = figures["PostgreSQL ingest, 2 nodes on one database"]
    assert ingest["leadstream"] > 0 and ingest["bare"]["1 node"] > 0
    for nodes in ("1 node", "2 nodes"):
        detail = ingest["detail"][nodes]
        assert detail["accepted"] > 0 and detail["load_errors"] == []
        assert detail["appends_waited_ms_per_s"] >= 0
    assert figures["PostgreSQL end to end, 2 nodes, 1 subscription"]["leadstream"] > 0
    assert asyncio.run(_bench_databases(postgres_url)) == []  # each scenario's database dropped after
    assert run_bench(True, None, None, ["cluster"], durations=TINY) == 2  # needs --database-url


async def _bench_databases(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [
            r[0]
            for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'leadstream_bench_cluster%'")
        ]
    finally:
        await conn.close()


def test_quick_run_leaves_out_the_source_scenario_unless_named() -> None:
    # The source scenario waits minutes for its quiet groups' polls: --quick must stay under a minute.
    assert "source" not in default_scenarios(True, None)
    assert "source" in default_scenarios(False, None)
    assert "cluster" not in default_scenarios(False, None)
    assert default_scenarios(True, "postgresql://x")[-1] == "cluster"
