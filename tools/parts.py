"""What the tools/*_cpu.py scripts share: a process's CPU seconds, and the bench sink beside a
server on a fresh data directory."""
import subprocess, sys, tempfile
from pathlib import Path
import orjson
from leadstream.testing import ServerProcess

def cpu(p):
    """User + system CPU seconds of one psutil.Process (not its children)."""
    t = p.cpu_times(); return t.user + t.system

async def sink_and_server(**env):
    """The bench sink (a process) and its port, and a started server with ``env`` added."""
    work = Path(tempfile.mkdtemp())
    sink = subprocess.Popen([sys.executable, "-m", "leadstream.bench.sink"], stdout=subprocess.PIPE)
    port = orjson.loads(sink.stdout.readline())["port"]
    server = ServerProcess(work / "data", env={"LEADSTREAM_LOG_FORMAT": "json", **env}, log=work / "server.log")
    await server.start()
    return sink, port, server
