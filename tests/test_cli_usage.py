"""Every CLI command with --help and with bad values: a clear message, a non-zero exit, never a traceback.

In-process with typer's CliRunner (the same code path as the `leadstream` script); the few cases
that need a real process or a real socket say so.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import leadstream
from leadstream.cli import app

COMMAND = typer.main.get_command(app)


def every_command(group: object = COMMAND, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        path = (*prefix, name)
        found += every_command(command, path) if hasattr(command, "commands") else [path]
    return found


COMMANDS = every_command()


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, list(args), input=input, env={"COLUMNS": "200", **(env or {})}, prog_name="leadstream"
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {result.exception!r} escaped as a traceback:\n{result.output}")
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_every_command_is_listed():
    names = {" ".join(c) for c in COMMANDS}
    for expected in (
        "serve", "publish", "catalog", "receive", "simulate marketo", "demo", "bench", "audit", "keys create", "keys list",
        "keys revoke", "keys rotate", "keys rotate-master", "keys new-master", "db upgrade", "subscriptions create",
        "subscriptions patch", "subscriptions list", "subscriptions show", "subscriptions pause",
        "subscriptions resume", "subscriptions delete", "subscriptions replay", "subscriptions attempts",
        "subscriptions dead-letters", "subscriptions sample", "subscriptions journal",
    ):  # fmt: skip
        assert expected in names


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_of_every_command_says_what_each_option_is(command):
    code, out = run(*command, "--help")
    assert code == 0 and "Usage: leadstream " + " ".join(command) in out
    assert "SPEC" not in out  # users do not have it
    for python_type in ("<list", "<bool", "<str", "<int", "<float", "<path", "INTEGER", "TEXT", "FLOAT", "PATH"):
        assert python_type not in out, f"{command}: shows {python_type}"
    for line in out.splitlines():  # every option has a help text (its line is more than flag and metavar)
        if line.lstrip("│ ").startswith("--") and "--help" not in line:
            assert len(line.strip("│ ").split()) > 2, f"{command}: no help: {line}"


def test_version():
    code, out = run("--version")
    assert code == 0 and out.strip() == f"leadstream {leadstream.__version__}"


# One command line per mistake; each must be refused with a message naming it.
REQUIRED = {
    "subscriptions create": ["--name", "n", "--munchkin", "123-ABC-456", "--stream", "activity", "--endpoint",
                             "https://example.com/hook"],
    "sources create": ["--name", "n", "--munchkin", "123-ABC-456", "--rest-url", "https://123-ABC-456.mktorest.com",
                       "--client-id", "c", "--client-secret", "s"],
    "alerts create": ["--endpoint", "https://ops.example.com/hook"],
}  # fmt: skip


def needs_server(command: tuple[str, ...]) -> bool:
    return "--server" in run(*command, "--help")[1]


SERVER_COMMANDS = [c for c in COMMANDS if needs_server(c)]


def arguments(command: tuple[str, ...], records: Path) -> list[str]:
    """Enough for the command to get as far as talking to the server."""
    name = " ".join(command)
    if name in REQUIRED:
        return REQUIRED[name]
    if name == "publish":
        return [str(records)]
    if name in ("keys create",):
        return ["--munchkin", "123-ABC-456", "--scope", "read"]
    if name == "keys revoke":
        return ["some-id"]
    if name == "subscriptions patch":
        return ["some-id", "--name", "x"]
    if name == "subscriptions replay":
        return ["some-id", "--from", "2026-01-01T00:00:00Z"]
    if name == "subscriptions sample":
        return ["some-id", "--type", "Open Email"]
    if name == "subscriptions delete":
        return ["some-id", "--yes"]
    if name == "alerts recent":
        return []
    if len(command) == 2 and command[1] != "list":  # a command about one resource: its id
        return ["some-id"]
    return []


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("records") / "records.json"
    path.write_text('[{"munchkinId": "123-ABC-456"}]')
    return path


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_a_server_without_a_scheme_is_one_line(command, records):
    code, out = run(*command, *arguments(command, records), "--server", "127.0.0.1:8470")
    assert code == 2 and out.startswith("error: --server: '127.0.0.1:8470' is not a URL")
    assert out.count("\n") == 1


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_an_unreachable_server_is_one_line(command, records):
    code, out = run(*command, *arguments(command, records), "--server", "http://127.0.0.1:9")
    assert code == 1 and out.count("\n") == 1
    assert out.startswith("error: cannot reach")


BAD = [
    (["publish", "{missing}"], "does not exist"),
    (["publish", "{broken_array}"], "not a JSON array"),
    (["publish", "{broken_ndjson}"], "line 2 is not JSON"),
    (["publish", "{records}", "--stream", "bogus"], "'bogus' is not one of"),
    (["publish", "{records}", "--batch", "0"], "--batch"),
    (["catalog", "bogus"], "'bogus' is not one of 'activity', 'audit', 'notification'"),
    (["catalog", "--munchkin", "123-ABC-456", "--load", "{broken_object}"], "--load {broken_object}: not JSON"),
    (["catalog", "--load", "{records}"], "--load needs --munchkin"),
    (["subscriptions", "create", *REQUIRED["subscriptions create"], "--from-file", "{broken_object}"],
     "--from-file {broken_object}: not JSON: Expecting ',' delimiter at line 1"),
    (["subscriptions", "create", *REQUIRED["subscriptions create"], "--from-file", "{records}"],
     "expected a JSON object"),
    (["subscriptions", "create", *REQUIRED["subscriptions create"], "--filter", "{{nope"], "--filter: not JSON"),
    (["subscriptions", "create", *REQUIRED["subscriptions create"], "--batch-size", "501"], "--batch-size"),
    (["subscriptions", "create", *REQUIRED["subscriptions create"], "--format", "xml"],
     "'xml' is not one of 'legacy', 'cloudevents', 'adobe_io'"),
    (["subscriptions", "create", *REQUIRED["subscriptions create"], "--hmac", "--hmac-secret", "whsec_x"],
     "--hmac and --hmac-secret exclude each other"),
    (["subscriptions", "create", *REQUIRED["subscriptions create"], "--oauth-token-url", "https://t.example"],
     "--oauth-token-url needs --client-id and --client-secret"),
    (["subscriptions", "create", "--name", "n"], "Missing option"),
    (["subscriptions", "patch", "some-id"], "nothing to change"),
    (["subscriptions", "attempts", "some-id", "--limit", "0"], "--limit"),
    (["keys", "create", "--munchkin", "123-ABC-456", "--scope", "bogus"], "'bogus' is not one of"),
    (["keys", "rotate", "--data-dir", "{empty}"], "holds no leadstream data (no keys)"),
    (["keys", "rotate-master", "--data-dir", "{empty}"], "holds no leadstream data (no leadstream.db)"),
    (["serve", "--retention", "abc"], "--retention (LEADSTREAM_RETENTION): 'abc' is not a duration"),
    (["serve", "--log-format", "xml"], "--log-format (LEADSTREAM_LOG_FORMAT): Input should be 'console' or 'json'"),
    (["serve", "--port", "http"], "Invalid value for '--port'"),
    (["serve", "--tls-cert", "{missing}", "--tls-key", "{missing}"], "no such file (TLS certificate or key)"),
    (["serve", "--allow-cidr", "10.0.0.0/99"], "--allowed-cidrs"),
    (["receive", "--public-key", "{records}"], "--public-key or --hmac-secret: Unable to load PEM file"),
    (["receive", "--challenge-format", "xml"], "--challenge-format: expected text or json"),
    (["receive", "--port", "x"], "Invalid value for '--port'"),
    (["simulate", "--rate", "fast"], "Invalid value for '--rate'"),
    (["demo", "--duration", "long"], "Invalid value for '--duration'"),
    (["bench", "--scenario", "bogus"], "unknown scenario bogus"),
    (["db", "upgrade", "--database-url", "nonsense"], "cannot reach PostgreSQL"),
    (["no-such-command"], "No such command"),
]  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {
        "broken_array": '[{"a": 1},',
        "broken_ndjson": '{"a": 1}\n{"a": \n',
        "broken_object": '{"a": 1 "b": 2}',
        "records": "[]",
    }
    paths = {}
    for name, text in made.items():
        (tmp_path / name).write_text(text)
        paths[name] = str(tmp_path / name)
    (tmp_path / "empty").mkdir()
    return {**paths, "empty": str(tmp_path / "empty"), "missing": str(tmp_path / "missing")}


@pytest.mark.parametrize("args, says", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_values_are_refused_clearly(args, says, files, tmp_path):
    args = [a.format(**files) for a in args]
    code, out = run(*args, "--server", "http://127.0.0.1:9") if needs_server(tuple(args[:2])) else run(*args)
    assert code != 0
    flat = " ".join(out.replace("│", " ").split())  # typer's boxes wrap long messages
    assert says.format(**files) in flat, out


def test_receive_on_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, out = run("receive", "--port", str(taken.getsockname()[1]))
    assert code == 1 and out.startswith("error: cannot listen on 127.0.0.1:") and "address already in use" in out


def test_delete_asks_first(tmp_path):
    code, out = run("subscriptions", "delete", "some-id", "--server", "http://127.0.0.1:9", input="n\n")
    assert code == 1 and "Deprovision subscription some-id?" in out and "error: not deleted" in out
    assert "cannot reach" not in out  # nothing was sent
