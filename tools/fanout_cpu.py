"""CPU µs per event of each server process, RSS, and whether delivery kept up, under the bench's
load with N legacy subscriptions to the bench sink.

    .venv/bin/python tools/fanout_cpu.py one|dp        # one process, or --delivery-process
    env: COUNT=100000 (records, as fast as accepted) or RATE=15000 SECS=8 (an offered rate); SUBS=10
"""
import asyncio, os, sys, time, secrets
import aiohttp, orjson, psutil
from parts import cpu, sink_and_server

RATE = float(os.environ.get("RATE", 15000)); SECS = float(os.environ.get("SECS", 8)); SUBS = int(os.environ.get("SUBS", 10))

async def main(dp: bool):
    # two processes is the default now
    sink, port, server = await sink_and_server(LEADSTREAM_DELIVERY_PROCESS="1" if dp else "0")
    async with aiohttp.ClientSession() as http:
        for i in range(SUBS):
            async with http.post(server.url + "/v1/subscriptions", headers=server.headers, json={
                "name": f"s{i}", "munchkinId": "123-ABC-456", "stream": "activity", "endpoint": f"http://127.0.0.1:{port}/count/s{i}",
                "eventTypes": ["*"], "format": "legacy", "auth": {"type": "none"}, "startAt": "now", "pushIntervalMs": 50}) as r:
                assert r.status == 201, await r.text()
        await asyncio.sleep(1.0)
        main_p = psutil.Process(server.pid)
        procs = [main_p] + main_p.children(recursive=True)
        before = {p.pid: cpu(p) for p in procs}
        load = await asyncio.create_subprocess_exec(sys.executable, "-m", "leadstream.bench.load", "--url", server.url, "--key", server.key,
            "--tag", "f" + secrets.token_hex(3), *(["--count", os.environ["COUNT"]] if os.environ.get("COUNT") else ["--duration", str(SECS), "--rate", str(RATE)]), "--report", "100", stdout=asyncio.subprocess.PIPE)
        out, _ = await load.communicate()
        accepted = orjson.loads(out.splitlines()[-1])["accepted"]
        after_load = {p.pid: cpu(p) for p in procs}
        t_end = time.monotonic()
        async def total():
            async with http.get(f"http://127.0.0.1:{port}/_stats") as r: return (await r.json())["total"]
        at_end = await total()
        while (n := await total()) < accepted * SUBS and time.monotonic() - t_end < 60:
            await asyncio.sleep(0.05)
        catch = time.monotonic() - t_end
        done = {p.pid: cpu(p) for p in procs}
        rss = {p.pid: p.memory_info().rss / 2**20 for p in procs}
    server.stop(); sink.terminate()
    names = {main_p.pid: "api/node"} | {p.pid: "delivery" for p in procs[1:]}
    print(f"{'delivery-process' if dp else 'one process'}: accepted {accepted} ({accepted/SECS:.0f}/s offered {RATE:.0f}), delivered at load end {at_end/(accepted*SUBS):.0%}, all in {catch:.1f}s after")
    for pid in before:
        print(f"   {names[pid]:10s} {1e6*(done[pid]-before[pid])/accepted:6.1f} µs/event total, {100*(after_load[pid]-before[pid])/SECS:5.1f}% of a core during load, RSS {rss[pid]:.0f} MB")
    print(f"   machine load {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] == "dp"))
