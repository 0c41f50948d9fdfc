"""`leadstream demo`, as a newcomer runs it (shortened): it must end with the all-clear."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_and_loses_nothing():
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("LEADSTREAM_ADMIN_KEY", None)
    done = subprocess.run([sys.executable, "-m", "leadstream.cli", "demo", "--duration", "15", "--rate", "150"],
                          capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = " ".join(done.stdout.split())  # rich folds long lines
    assert "every published event reached each matching subscription, in order, none lost" in out
    # the failing receiver's subscription went through the whole cycle and caught up
    assert "states seen: active → retrying → paused → active" in out
    assert out.count("✔") == 4 and "✘" not in out
