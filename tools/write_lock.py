"""Two processes writing one SQLite file in WAL mode: how long an ingest-like writer (1,000-row
transactions, synchronous=FULL) waits for the write lock while another process commits 10 rows
every 50 ms or 5 ms (as the delivery process's attempt log does).

    .venv/bin/python tools/write_lock.py
"""
import sqlite3, sys, time, os, tempfile, multiprocessing as mp
def conn(path, sync):
    c = sqlite3.connect(path, isolation_level=None, timeout=30)
    c.execute("PRAGMA journal_mode=WAL"); c.execute(f"PRAGMA synchronous={sync}"); c.execute("PRAGMA busy_timeout=30000")
    return c
def other(path, stop, interval):
    c = conn(path, "NORMAL"); n = 0
    while not stop.is_set():
        time.sleep(interval)
        c.execute("BEGIN IMMEDIATE"); c.executemany("INSERT INTO attempts (doc) VALUES (?)", [(os.urandom(2000),)] * 10); c.execute("COMMIT"); n += 1
def ingest(path, secs):
    c = conn(path, "FULL"); rows = [(os.urandom(900),) for _ in range(1000)]; n = 0; t = time.monotonic(); waited = 0.0
    while time.monotonic() - t < secs:
        s = time.monotonic(); c.execute("BEGIN IMMEDIATE"); waited += time.monotonic() - s
        c.executemany("INSERT INTO events (data) VALUES (?)", rows); c.execute("COMMIT"); n += 1000
    return n / secs, waited
if __name__ == "__main__":
    for interval in (None, 0.05, 0.005):
        path = tempfile.mkdtemp() + "/x.db"
        c = conn(path, "FULL"); c.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, data BLOB)"); c.execute("CREATE TABLE attempts (seq INTEGER PRIMARY KEY, doc BLOB)")
        stop = mp.Event(); p = None
        if interval: p = mp.Process(target=other, args=(path, stop, interval)); p.start()
        rate, waited = ingest(path, 4)
        stop.set(); p and p.join()
        print(f"other writer every {interval}s: ingest {rate:,.0f} rows/s, {waited:.2f}s of 4 waiting for the write lock")
