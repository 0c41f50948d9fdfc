"""Each CLI command against a live server, as a user types it."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import orjson
import pytest

from helpers import ADMIN_KEY, MUNCHKIN, activity, wait_until
from leadstream import positions
from leadstream.receiver import ReceiverConfig, start_receiver


async def cli(server, *args: str, key: str | None = ADMIN_KEY, columns: int = 200) -> tuple[int, str, str]:
    env = {**os.environ, "LEADSTREAM_URL": server.url, "COLUMNS": str(columns)}
    env.pop("LEADSTREAM_ADMIN_KEY", None)
    if key is not None:
        env["LEADSTREAM_ADMIN_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "leadstream.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_publish_json_and_ndjson_with_rejections(server, tmp_path):
    good = [activity(i) for i in range(20)]
    array = tmp_path / "events.json"
    array.write_bytes(orjson.dumps([*good, activity(99, munchkinId="bad")]))
    code, out, err = await cli(server, "publish", str(array), "--batch", "7")
    assert code == 1, err  # a rejection is a failure, though the good records are stored
    assert "accepted 20, duplicates 0, rejected 1" in out
    assert "record 20: munchkinId: 'bad'" in out  # the index in the whole file, not in its request
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_bytes(b"\n".join(orjson.dumps(r) for r in good))
    code, out, _ = await cli(server, "publish", str(ndjson), "--json")
    assert code == 0 and json.loads(out) == {"accepted": 0, "duplicates": 20, "rejected": []}


async def test_publish_ndjson_names_the_file_line_of_each_rejection(server, tmp_path):
    ndjson = tmp_path / "events.ndjson"
    lines = [orjson.dumps(activity(100)), b"", orjson.dumps(activity(101, leadId="x")), b"  ",
             orjson.dumps(activity(102, munchkinId="bad"))]  # fmt: skip
    ndjson.write_bytes(b"\n".join(lines) + b"\n")
    code, out, _ = await cli(server, "publish", str(ndjson))
    assert code == 1 and "accepted 1, duplicates 0, rejected 2" in out
    assert "  line 3: leadId" in out and "  line 5: munchkinId: 'bad'" in out
    code, out, _ = await cli(server, "publish", str(ndjson), "--json")
    assert code == 1 and [r["where"] for r in json.loads(out)["rejected"]] == ["line 3", "line 5"]


async def test_catalog_show_and_load(server, tmp_path):
    code, out, _ = await cli(server, "catalog", "audit")
    assert code == 0 and "Landing Page" in out
    code, out, _ = await cli(server, "catalog", "activity", "--json")
    assert code == 0 and len(json.loads(out)) == 74
    document = tmp_path / "types.json"
    document.write_text(json.dumps({"result": [{"id": 100001, "name": "Attend Webinar", "attributes": []}]}))
    code, out, _ = await cli(server, "catalog", "--munchkin", MUNCHKIN, "--load", str(document), "--custom", "--json")
    assert code == 0 and json.loads(out)["loaded"] == 1
    code, out, _ = await cli(server, "catalog", "activity", "--munchkin", MUNCHKIN, "--json")
    assert "Attend Webinar" in {t["name"] for t in json.loads(out)}


async def test_subscription_lifecycle(server, tmp_path):
    receiver = await start_receiver(ReceiverConfig(out=tmp_path / "got.ndjson", token="s3cr3t-value"))
    try:
        code, out, err = await cli(
            server,
            "subscriptions",
            "create",
            "--name",
            "crm",
            "--munchkin",
            MUNCHKIN,
            "--stream",
            "activity",
            "--endpoint",
            receiver.url,
            "--event-type",
            "10",
            "--event-type",
            "Visit Webpage",
            "--token",
            "s3cr3t-value",
            "--json",
        )
        assert code == 0, err
        created = json.loads(out)
        sub_id = created["id"]
        assert created["auth"] == {"type": "token", "token": "***"} and "s3cr3t-value" not in out
        assert created["eventTypes"] == [10, "Visit Webpage"]

        code, out, _ = await cli(server, "subscriptions", "list")
        assert code == 0 and sub_id in out and "crm" in out
        code, out, _ = await cli(server, "subscriptions", "list", columns=80)
        assert code == 0 and sub_id in out  # the whole id, even in a narrow terminal
        code, out, _ = await cli(server, "subscriptions", "list", "--munchkin", "999-ZZZ-999", "--json")
        assert json.loads(out) == []
        code, out, _ = await cli(server, "subscriptions", "list", "--munchkin", "999-ZZZ-999")
        assert code == 0 and out.startswith("no subscriptions of 999-ZZZ-999")

        code, out, _ = await cli(server, "subscriptions", "pause", sub_id[:8], "--json")  # a unique prefix
        assert json.loads(out)["state"] == "paused" and json.loads(out)["pausedReason"] == "manual"
        code, out, _ = await cli(server, "subscriptions", "list")
        assert "paused (manual)" in out
        code, out, err = await cli(server, "subscriptions", "show", sub_id[:-3] + "zzz")
        assert code == 1 and err.startswith("error: 404")
        code, out, _ = await cli(server, "subscriptions", "resume", sub_id, "--json")
        assert json.loads(out)["state"] == "active"
        code, out, _ = await cli(server, "subscriptions", "show", sub_id)
        assert code == 0 and "crm" in out and "state" in out

        records = tmp_path / "r.json"
        records.write_bytes(orjson.dumps([activity(i) for i in range(5)]))
        assert (await cli(server, "publish", str(records)))[0] == 0
        await wait_until(lambda: receiver.receiver.stats["received"] >= 5, what="the 5 events delivered")

        code, out, _ = await cli(server, "subscriptions", "attempts", sub_id, "--json")
        attempts = json.loads(out)
        assert code == 0 and attempts and attempts[0]["status"] == 200
        code, out, _ = await cli(server, "subscriptions", "attempts", sub_id)
        row = next(line for line in out.splitlines() if attempts[0]["batchId"][:8] in line)
        cells = [cell.strip() for cell in row.strip("│ ").split("│")]
        assert cells[3:6] == ["200", "delivered", "0"]  # status, outcome and the retry count are filled in

        code, out, err = await cli(server, "subscriptions", "journal", sub_id, "--limit", "2")
        entries = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and [e["event"]["id"] for e in entries] == [f"guid-{i}" for i in range(5)]
        assert err.strip() == f"continue with --since {entries[-1]['position']}"
        code, out, _ = await cli(server, "subscriptions", "journal", sub_id, "--since", entries[2]["position"])
        assert [json.loads(line)["event"]["id"] for line in out.splitlines()] == ["guid-3", "guid-4"]

        # the positions the journal shows are the ones replay takes, and the cursor shows
        code, out, _ = await cli(server, "subscriptions", "replay", sub_id, "--from", entries[1]["position"], "--json")
        assert code == 0 and json.loads(out)["cursor"] == entries[1]["position"]
        code, out, _ = await cli(server, "subscriptions", "replay", sub_id, "--from", "0", "--json")
        assert code == 0 and json.loads(out)["cursor"] == positions.encode(0)

        code, out, _ = await cli(server, "subscriptions", "patch", sub_id, "--batch-size", "50", "--json")
        assert code == 0 and json.loads(out)["batchSize"] == 50
        code, out, _ = await cli(server, "subscriptions", "delete", sub_id, "--yes", "--json")
        assert code == 0 and json.loads(out)["state"] == "deprovisioned"
        code, out, _ = await cli(server, "audit", "--json")
        actions = [entry["action"] for entry in json.loads(out)]
        assert actions[:4] == ["subscription.delete", "subscription.update", "subscription.replay",
                               "subscription.replay"]  # fmt: skip
    finally:
        await receiver.close()


@pytest.mark.parametrize(
    "args",
    [
        ("subscriptions", "show", "no-such-id"),
        ("subscriptions", "pause", "no-such-id"),
        ("subscriptions", "attempts", "no-such-id"),
    ],
)
async def test_unknown_subscription_is_one_clear_line(server, args):
    code, out, err = await cli(server, *args)
    assert code == 1 and out == ""
    assert err.startswith("error: 404") and err.count("\n") == 1 and "Traceback" not in err


async def test_bad_key_and_unreachable_server_are_one_clear_line(server, tmp_path):
    code, _, err = await cli(server, "subscriptions", "list", key="wrong")
    assert code == 1 and err.startswith("error: 401") and err.count("\n") == 1
    records = tmp_path / "r.json"
    records.write_bytes(b"[]")
    code, _, err = await cli(server, "catalog", "audit", "--server", "http://127.0.0.1:9")
    assert code == 1 and err.startswith("error: cannot reach leadstream") and "Traceback" not in err


async def test_alerts_create_list_recent_and_delete(server):
    code, out, err = await cli(server, "alerts", "create", "--endpoint", "https://ops.example.com/hook", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["signing"]["hmacSecret"].startswith("whsec_") and created["events"] == ["*"]  # shown this once

    code, out, err = await cli(server, "alerts", "list", "--json")
    assert code == 0, err
    assert [(a["id"], a["signing"]) for a in json.loads(out)] == [(created["id"], {"hmacSecret": "***"})]
    code, out, err = await cli(server, "alerts", "list")
    assert code == 0 and created["id"] in out and "whsec_" not in out

    server.services.alert_dispatcher.raise_alert("com.leadstream.subscription.paused", "sub-1", {})
    await wait_until(lambda: server.services.alerts.recent(1), what="the alert in the outbox")
    code, out, err = await cli(server, "alerts", "recent")
    assert code == 0 and "com.leadstream.subscription.paused" in out and "sub-1" in out

    code, out, err = await cli(server, "alerts", "create", "--endpoint", "https://o.example", "--event", "nope")
    assert code == 1 and "events[0]" in err and "Traceback" not in err
    code, out, err = await cli(server, "alerts", "delete", created["id"])
    assert code == 0, err
    code, out, err = await cli(server, "alerts", "delete", created["id"])
    assert code == 1 and "no alert" in err
