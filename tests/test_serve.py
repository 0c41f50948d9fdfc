"""`leadstream serve` as a user runs it: the generated admin key."""

from __future__ import annotations

import json
import os
import stat

import aiohttp
import pytest
from typer.testing import CliRunner

from helpers import MUNCHKIN, ServerProcess, activity, publish, wait_until
from leadstream.cli import app
from leadstream.receiver import ReceiverConfig, start_receiver
from leadstream.testing import ServerExited


async def test_generated_admin_key_is_stored_0600_and_printed_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LEADSTREAM_ADMIN_KEY"}
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir)
    server.env = env
    await server.start()
    server.stop()
    key_file = data_dir / "admin.key"
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key in server.log.read_text()

    server.log.unlink()
    server = ServerProcess(data_dir, port=server.port)
    server.env = env
    await server.start()
    try:
        assert key not in server.log.read_text()  # shown once only
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/v1/catalog/audit", headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 200
            async with session.get(f"{server.url}/v1/catalog/audit", headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
    finally:
        server.stop()


async def test_a_second_server_on_the_same_data_dir_refuses_to_start_naming_the_pid(tmp_path):
    data_dir = tmp_path / "data"
    first = await ServerProcess(data_dir).start()
    try:
        second = ServerProcess(data_dir)
        with pytest.raises(ServerExited) as refused:
            await second.start()
        assert second.proc is not None and second.proc.returncode == 1
        assert f"is in use by another leadstream server (pid {first.pid})" in str(refused.value)
        assert "Traceback" not in second.tail()
        async with aiohttp.ClientSession() as session:  # the first one is untouched
            async with session.get(f"{first.url}/healthz") as r:
                assert r.status == 200
    finally:
        first.kill()  # a crash: the kernel drops the lock with the process
    again = await ServerProcess(data_dir, port=first.port).start()
    again.stop()


async def test_the_log_says_where_it_listens_and_with_access_log_each_request(tmp_path):
    server = ServerProcess(
        tmp_path / "data", "--log-format", "json", "--access-log", env={"LEADSTREAM_GIL_SWITCH_INTERVAL": "0.0005"}
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/v1/catalog/audit?secret=x", headers=server.headers) as r:
                assert r.status == 200
        lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        started = next(line for line in lines if line["event"] == "leadstream listening")
        assert started["url"] == server.url and started["docs"] == server.url + "/docs"
        assert started["data_dir"] == str((tmp_path / "data").resolve()) and started["store"].endswith(
            "/data/leadstream.db"
        )
        assert started["admin_key"] == "LEADSTREAM_ADMIN_KEY" and started["pid"] == server.pid
        assert started["gil_switch_interval_ms"] == 0.5  # the setting reached the interpreter (default 0.1)
        await wait_until(lambda: "/v1/catalog/audit" in server.log.read_text(), what="the access log line")
        request = next(json.loads(line) for line in server.log.read_text().splitlines() if "/v1/catalog/audit" in line)
        assert (request["method"], request["path"], request["status"]) == ("GET", "/v1/catalog/audit", 200)
        assert "secret" not in server.log.read_text() and server.key not in server.log.read_text()
    finally:
        server.stop()


async def test_the_log_tells_admin_actions_and_each_state_move_with_its_reason(tmp_path):
    server = await ServerProcess(tmp_path / "data", "--log-format", "json").start()
    receiver = await start_receiver(ReceiverConfig(fail_for=1.0, status=503))
    try:
        async with aiohttp.ClientSession() as session:
            body = {"name": "flaky", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": receiver.url,
                    "startAt": "earliest", "retryAttempts": 1, "retryIntervalMs": 50, "probeIntervalMs": 200,
                    "pushIntervalMs": 10}  # fmt: skip
            async with session.post(f"{server.url}/v1/subscriptions", json=body, headers=server.headers) as r:
                assert r.status == 201
                sub_id = (await r.json())["id"]
            assert (await publish(session, server, "activity", [activity(1)]))[0] == 200

            def moves() -> list[tuple[str, str | None]]:
                lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
                return [
                    (line["state"], line.get("reason"))
                    for line in lines
                    if line["event"] == "subscription state changed" and line["subscription"] == sub_id
                ]

            await wait_until(lambda: ("active", None) in moves(), 30, what="the recovery in the log")
            assert moves() == [("retrying", None), ("paused", "failures"), ("active", None)]
            async with session.delete(f"{server.url}/v1/subscriptions/{sub_id}", headers=server.headers) as r:
                assert r.status == 200

        def admin_actions() -> list[tuple[str, str]]:
            lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
            return [(line["action"], line["target"]) for line in lines if line["event"] == "admin action"]

        await wait_until(lambda: len(admin_actions()) == 2, what="the delete in the log")
        assert admin_actions() == [("subscription.create", sub_id), ("subscription.delete", sub_id)]
        retrying = next(line for line in server.log.read_text().splitlines() if '"state": "retrying"' in line)
        assert "503" in json.loads(retrying)["error"]  # the reason, said
    finally:
        server.stop()
        await receiver.close()


async def test_key_commands_act_only_on_a_real_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./leadstream-data here
    result = CliRunner().invoke(app, ["keys", "rotate"])
    assert result.exit_code == 1 and "holds no leadstream data (no keys)" in result.output
    assert not (tmp_path / "leadstream-data").exists()  # nothing was created

    data_dir = tmp_path / "data"
    server = await ServerProcess(data_dir).start()
    try:
        result = CliRunner().invoke(app, ["keys", "rotate", "--data-dir", str(data_dir)], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        served = result.output.split("now serving ")[1].split(", ")[0].strip()
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + served) as r:
                assert r.status == 200 and b"PUBLIC KEY" in await r.read()
        result = CliRunner().invoke(app, ["keys", "rotate-master", "--data-dir", str(data_dir)])
        assert result.exit_code == 1 and f"a server is running on {data_dir} (pid {server.pid})" in result.output
    finally:
        server.stop()
