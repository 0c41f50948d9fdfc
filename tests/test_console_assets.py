"""The console's shipped files: vendored assets match the checksums recorded in ASSETS.md, every
file is in the package data, and no template reaches outside the server (no CDN)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from leadstream.console import Templates

ROOT = Path(__file__).parents[1]
CONSOLE = ROOT / "src/leadstream/console"
ASSETS = CONSOLE / "static/ASSETS.md"


def test_vendored_files_match_the_checksums_in_assets_md() -> None:
    recorded = {}
    for row in ASSETS.read_text().splitlines():
        found = re.match(r"\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", row)
        if found:
            recorded[found.group(1)] = found.group(2)
    assert set(recorded) == {"htmx.min.js", "htmx.LICENSE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((CONSOLE / "static" / name).read_bytes()).hexdigest() == digest, name


def test_htmx_is_the_pinned_2x_release() -> None:
    source = (CONSOLE / "static/htmx.min.js").read_text()
    assert 'version:"2.0.11"' in source
    assert "| 2.0.11 |" in ASSETS.read_text()


def test_every_console_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    console = patterns["leadstream.console"]
    shipped = [
        p.relative_to(CONSOLE).as_posix()
        for p in CONSOLE.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert shipped, "no console files found"
    missing = [name for name in shipped if not any(fnmatch(name, pattern) for pattern in console)]
    assert missing == []


def test_templates_load_no_outside_resource_and_compile() -> None:
    env = Templates().env
    for template in (CONSOLE / "templates").glob("*.html"):
        env.get_template(template.name)  # compiles, with the console's filters
        text = template.read_text()
        assert not re.search(r'(?:src|href|action)="(?:https?:)?//', text), template.name
        assert "<script>" not in text and "style=" not in text, template.name  # the CSP allows neither
