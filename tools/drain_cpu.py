"""The drain of a backlog, alone: a paused subscription gets COUNT events, then resumes; prints the
drain rate, the CPU µs per event of each server process during it, and (PROFILE=FILE) a py-spy
record of the delivery process meanwhile.

    .venv/bin/python tools/drain_cpu.py        # env: COUNT=300000, PROFILE=/tmp/drain.raw
"""
import asyncio, os, sys, time, secrets, subprocess
from pathlib import Path
import aiohttp, orjson, psutil
from parts import cpu, sink_and_server

COUNT = int(os.environ.get("COUNT", 300000))

async def main():
    sink, port, server = await sink_and_server()
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/subscriptions", headers=server.headers, json={
            "name": "d", "munchkinId": "123-ABC-456", "stream": "activity", "endpoint": f"http://127.0.0.1:{port}/count/d",
            "eventTypes": ["*"], "format": "legacy", "auth": {"type": "none"}, "startAt": "now",
            "batchSize": 500, "pushIntervalMs": 50}) as r:
            assert r.status == 201, await r.text()
            sub = (await r.json())["id"]
        async with http.post(f"{server.url}/v1/subscriptions/{sub}/pause", headers=server.headers) as r:
            assert r.status < 300, await r.text()
        load = await asyncio.create_subprocess_exec(sys.executable, "-m", "leadstream.bench.load", "--url", server.url,
            "--key", server.key, "--tag", "d" + secrets.token_hex(3), "--count", str(COUNT), "--report", "100",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await load.communicate()
        accepted = orjson.loads(out.splitlines()[-1])["accepted"]
        main_p = psutil.Process(server.pid)
        procs = [main_p] + main_p.children(recursive=True)
        delivery = procs[-1]
        before = {p.pid: cpu(p) for p in procs}
        spy = None
        if os.environ.get("PROFILE"):
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(delivery.pid), "--threads",
                                    "--rate", "250", "--format", "raw", *(["--idle"] if os.environ.get("IDLE") else []), "-o", os.environ["PROFILE"], *([] if os.environ.get("BLOCKING") else ["--nonblocking"])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)
        t0 = time.monotonic()
        async with http.post(f"{server.url}/v1/subscriptions/{sub}/resume", headers=server.headers) as r:
            assert r.status < 300, await r.text()
        async def total():
            async with http.get(f"http://127.0.0.1:{port}/_stats") as r: return (await r.json())["total"]
        while await total() < accepted and time.monotonic() - t0 < 300:
            await asyncio.sleep(0.02)
        seconds = time.monotonic() - t0
        done = {p.pid: cpu(p) for p in procs}
        rss = {p.pid: p.memory_info().rss / 2**20 for p in procs}
        if spy:
            spy.send_signal(2); spy.wait()
        async with http.get(f"{server.url}/v1/subscriptions/{sub}/attempts?limit=200", headers=server.headers) as r:
            attempts = (await r.json())
            attempts = attempts.get("attempts", attempts) if isinstance(attempts, dict) else attempts
        durations = sorted(a["durationMs"] for a in attempts)
        if durations:
            print(f"attempts: {len(durations)} last, POST ms p50 {durations[len(durations)//2]} max {durations[-1]}")
    server.stop(); sink.terminate()
    print(f"data directory: {server.data_dir}")
    print(f"drained {accepted} in {seconds:.2f}s = {accepted/seconds:.0f}/s")
    for p in procs:
        name = "api" if p is main_p else "delivery"
        print(f"   {name:9s} {1e6*(done[p.pid]-before[p.pid])/accepted:5.2f} µs/event, {100*(done[p.pid]-before[p.pid])/seconds:5.1f}% of a core, RSS {rss[p.pid]:.0f} MB")

if __name__ == "__main__":
    asyncio.run(main())
