"""``python -m leadstream.cli``: the `leadstream` command (how the demo, bench and tests start a server)."""

from leadstream.cli import app

app()
