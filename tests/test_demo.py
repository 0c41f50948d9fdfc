"""`leadstream demo`, as a newcomer runs it (shortened): it must end with the all-clear."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest


def test_demo_runs_and_loses_nothing():
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("LEADSTREAM_ADMIN_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "leadstream.cli", "demo", "--duration", "15", "--rate", "150"],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = " ".join(done.stdout.split())  # rich folds long lines
    assert "every published event reached each matching subscription, in order, none lost" in out
    # the failing receiver's subscription went through the whole cycle and caught up
    assert "states seen: active → retrying → paused → active" in out
    assert out.count("✔") == 6 and "✘" not in out
    assert "✔ legacy, from a Marketo source:" in out  # the source's events too, in the instance's order
    # the live view says where to look while it runs, and fits 100 columns; the counts say why they differ
    assert re.search(r"server http://127\.0\.0\.1:\d+ \(API docs at /docs", out)
    assert re.search(r"operator key lsk_\S+", out)
    assert all(len(line) <= 100 for line in done.stdout.splitlines() if line.startswith(("┃", "│", "┏", "└")))
    assert "events expected (activity of tenant 123-ABC-456, activity types 6, 7, 8, 9, 10, 11, 27)" in out


def test_ctrl_c_stops_publishing_drains_and_runs_the_same_check(tmp_path):
    # Unbuffered: should it hang, what it printed reaches the failure message.
    env = {**os.environ, "COLUMNS": "120", "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("LEADSTREAM_ADMIN_KEY", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "leadstream.cli", "demo", "--duration", "120", "--rate", "150"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, killed as one below
        # As from a terminal: a test run started in the background (`nohup … &`) ignores SIGINT,
        # and a process that starts ignoring it never sees Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in tmp_path.glob("leadstream-demo-*/crm-sync.ndjson")):
            assert time.monotonic() < deadline and demo.poll() is None, "the demo never started delivering"
            time.sleep(0.1)
        demo.send_signal(signal.SIGINT)  # as Ctrl-C does
        try:
            out, _ = demo.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            kill_everything(demo, tmp_path)
            out, _ = demo.communicate()
            pytest.fail("the demo had not finished 90 s after Ctrl-C; it printed: " + " ".join(out.split())[-3000:])
    finally:
        kill_everything(demo, tmp_path)
    out = " ".join(out.split())
    assert demo.returncode == 0, out[-3000:]
    assert "interrupted: stopped publishing, drained, checking" in out
    assert "every published event reached each matching subscription, in order, none lost" in out
    assert not list(tmp_path.glob("leadstream-demo-*"))  # and cleaned up after itself


def kill_everything(demo: subprocess.Popen[str], tmp_path: Path) -> None:
    """The demo's process group, and its server, which runs in a session of its own (nothing is
    left running should the demo have hung or failed)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(demo.pid, signal.SIGKILL)
    for left in psutil.process_iter(["cmdline"]):
        if str(tmp_path) in " ".join(left.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                left.kill()
