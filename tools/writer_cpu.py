"""The embedded store's appends alone: N requests of 1,000 validated benchmark events, three at a
time as ingest sends them, into a fresh store; prints the rate and the CPU µs per event of each
thread. BUSY=1 keeps the event loop validating records meanwhile (as the API process's does under
load), which shows how long the writer thread waits for the GIL.

    .venv/bin/python tools/writer_cpu.py        # env: N=200, BUSY=0|1, SW=0.0001 (GIL switch interval)
"""
import asyncio, os, sys, tempfile, threading, time
from pathlib import Path
import psutil
from leadstream.bench.records import body
from leadstream.catalog import Catalog
from leadstream.events import Validator, split_records, validate_records
from leadstream.store.sqlite import SqliteStore

sys.setswitchinterval(float(os.environ.get("SW", "0.0001")))
N = int(os.environ.get("N", 200))
BUSY = os.environ.get("BUSY") == "1"
validator = Validator(Catalog())
requests = [validate_records(validator, "activity", split_records(body("t", i * 1000, 1000), False))[0] for i in range(N)]


async def main():
    store = SqliteStore(Path(tempfile.mkdtemp()) / "leadstream.db")
    await store.open()
    me = psutil.Process()
    cpu = lambda: {t.id: t.user_time + t.system_time for t in me.threads()}
    stop = False

    async def validate_meanwhile():
        records = body("z", 0, 1000)
        while not stop:
            validate_records(validator, "activity", split_records(records, False))
            await asyncio.sleep(0)

    busy = asyncio.create_task(validate_meanwhile()) if BUSY else None
    three = asyncio.Semaphore(3)

    async def append(events):
        async with three:
            await store.append(events)

    before, started = cpu(), time.perf_counter()
    await asyncio.gather(*(append(events) for events in requests))
    seconds, after = time.perf_counter() - started, cpu()
    stop = True
    if busy:
        await busy
    n = N * 1000
    print(f"BUSY={int(BUSY)}: {n / seconds:.0f} events/s, {seconds / n * 1e6:.2f} µs of wall time per event")
    names = {t.native_id: t.name for t in threading.enumerate()}
    for tid, used in after.items():
        if used - before.get(tid, 0) > 0.01:
            print(f"  thread {names.get(tid, tid)}: {(used - before.get(tid, 0)) / n * 1e6:.2f} µs/event")
    await store.close()

asyncio.run(main())
