"""The idle cost: SUBS subscriptions (the platform's defaults) each get a probe event, then
nothing; prints each server process's % of a core per SECOND-long window for WINDOWS windows, and
(PROFILE=DIR) a py-spy record of both processes meanwhile.

    .venv/bin/python tools/idle_cpu.py        # env: SUBS=1000 WINDOWS=10 SECOND=1 PROFILE=/tmp/idle
"""
import asyncio, os, sys, time, subprocess
from pathlib import Path
import aiohttp, psutil
from parts import cpu, sink_and_server

SUBS = int(os.environ.get("SUBS", 1000)); WINDOWS = int(os.environ.get("WINDOWS", 10)); SECOND = float(os.environ.get("SECOND", 1))

async def main():
    sink, port, server = await sink_and_server()
    async with aiohttp.ClientSession() as http:
        limit = asyncio.Semaphore(16)
        async def create(i):
            async with limit, http.post(server.url + "/v1/subscriptions", headers=server.headers, json={
                "name": f"i{i}", "munchkinId": "123-ABC-456", "stream": "activity",
                "endpoint": f"http://127.0.0.1:{port}/count/idle-{i}"}) as r:
                assert r.status == 201, await r.text()
        await asyncio.gather(*(create(i) for i in range(SUBS)))
        load = await asyncio.create_subprocess_exec(sys.executable, "-m", "leadstream.bench.load", "--url", server.url,
            "--key", server.key, "--tag", "idle", "--count", "10", "--batch", "10", "--connections", "1", stdout=asyncio.subprocess.PIPE)
        await load.communicate()
        while True:
            async with http.get(f"http://127.0.0.1:{port}/_stats") as r:
                if (await r.json())["total"] >= 10 * SUBS: break
            await asyncio.sleep(0.1)
        main_p = psutil.Process(server.pid)
        procs = {"api": main_p} | {"delivery": p for p in main_p.children(recursive=True)}
        spies = []
        if os.environ.get("PROFILE"):
            Path(os.environ["PROFILE"]).mkdir(exist_ok=True)
            spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(p.pid), "--rate", "200", "--format", "raw", "--threads",
                "--duration", str(int(WINDOWS * SECOND)), "-o", f"{os.environ['PROFILE']}/{name}.raw"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name, p in procs.items()]
        for w in range(WINDOWS):
            before = {n: cpu(p) for n, p in procs.items()}; t0 = time.monotonic()
            await asyncio.sleep(SECOND)
            dt = time.monotonic() - t0
            print(f"window {w}: " + ", ".join(f"{n} {100 * (cpu(p) - before[n]) / dt:5.1f}%" for n, p in procs.items()), flush=True)
        for s in spies: s.wait()
    server.stop(); sink.terminate()

if __name__ == "__main__":
    asyncio.run(main())
