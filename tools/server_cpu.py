"""CPU µs per ingested event of each thread of an in-process server (the event loop, the SQLite
writer, the readers) under the bench's load generator, no subscriptions; PROF=1 adds a cProfile
of the event loop thread.

    .venv/bin/python tools/server_cpu.py [seconds] [profile lines]
"""
import asyncio, cProfile, pstats, sys, os, subprocess, time, tempfile, threading
import psutil, uvicorn
from leadstream.api import create_app
from leadstream.settings import Settings
from leadstream.testing import free_port

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 6
data = tempfile.mkdtemp()
port = free_port()
os.environ["LEADSTREAM_ADMIN_KEY"] = "k"
settings = Settings(data_dir=data, port=port, allow_private_endpoints=True)
config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                        access_log=False, log_level="warning", lifespan="on")
server = uvicorn.Server(config)
me = psutil.Process()
prof = cProfile.Profile()

async def main():
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    load = subprocess.Popen([sys.executable, "-m", "leadstream.bench.load", "--url", f"http://127.0.0.1:{port}",
                             "--key", "k", "--tag", "p", "--duration", str(secs + 1), "--report", "100"], stdout=open("/tmp/perf/load.out","w"))
    await asyncio.sleep(1)
    t0 = {t.id: t.user_time + t.system_time for t in me.threads()}
    c0 = sum(me.cpu_times()[:2])
    n0 = int(open_count())
    prof.enable() if os.environ.get("PROF") else None
    await asyncio.sleep(secs)
    prof.disable()
    t1 = {t.id: t.user_time + t.system_time for t in me.threads()}
    c1 = sum(me.cpu_times()[:2])
    n1 = int(open_count())
    n = n1 - n0
    print(f"events {n} in {secs}s = {n/secs:.0f}/s; process CPU {1e6*(c1-c0)/n:.2f} µs/event")
    for tid in t1:
        d = t1[tid] - t0.get(tid, 0)
        if d > 0.01: print(f"  thread {tid}{' (main)' if tid == threading.get_native_id() else ''}: {1e6*d/n:.2f} µs/event")
    load.wait()
    server.should_exit = True
    await task

def open_count():
    import sqlite3
    return sqlite3.connect(data + "/leadstream.db").execute("select max(position) from events").fetchone()[0] or 0

import uvloop

uvloop.run(main())
if os.environ.get("PROF"):
    pstats.Stats(prof).sort_stats("tottime").print_stats(int(sys.argv[2]) if len(sys.argv) > 2 else 25)
