"""Secrets at rest (issue 8): the secret box, the master key file, rotation."""

from __future__ import annotations

import asyncio
import stat

import orjson
import pytest
from typer.testing import CliRunner

from leadstream.cli.keys import keys
from leadstream.security.secretbox import (
    KEY_FILE,
    PREFIX,
    SecretBox,
    SecretBoxError,
    load_secretbox,
    new_master_key,
    rotate_master,
)
from leadstream.store import StoredSubscription, open_store

SUBSCRIPTION = {
    "name": "crm",
    "munchkinId": "123-ABC-456",
    "stream": "activity",
    "endpoint": "https://hooks.example.com/x",
    "auth": {
        "type": "oauth2",
        "tokenUrl": "https://idp.example.com/t",
        "clientId": "client",
        "clientSecret": "oauth-s3cret",
    },
    "signing": {"hmacSecret": "whsec_c2VjcmV0LXNpZ25pbmcta2V5"},
}


def test_round_trip_and_ciphertext_is_recognizable():
    box = SecretBox([new_master_key()])
    sealed = box.encrypt("s3cret value ✓")
    assert sealed.startswith(f"{PREFIX}{box.key_id}:") and "s3cret" not in sealed
    assert box.encrypt("s3cret value ✓") != sealed  # a fresh nonce every time
    assert box.decrypt(sealed) == "s3cret value ✓"
    assert box.decrypt("stored before encryption") == "stored before encryption"


def test_a_wrong_master_key_does_not_open_and_says_which_key_is_missing():
    sealed = SecretBox([new_master_key()]).encrypt("oauth-s3cret")
    other = SecretBox([new_master_key()])
    with pytest.raises(SecretBoxError) as failure:
        other.decrypt(sealed)
    assert "master key" in failure.value.detail and "oauth-s3cret" not in failure.value.detail
    # A forged value that claims the right key id, and a damaged one, fail too.
    key = new_master_key()
    box = SecretBox([key])
    good = box.encrypt("x")
    with pytest.raises(SecretBoxError, match="damaged"):
        box.decrypt(good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"))
    with pytest.raises(SecretBoxError):
        SecretBox([new_master_key()]).decrypt(f"{PREFIX}{box.key_id}:" + good.rsplit(":", 1)[1])


def test_a_sealed_value_opens_only_for_the_field_it_was_sealed_for():
    box = SecretBox([new_master_key()])
    sealed = box.encrypt("token-value", "auth.token")
    assert box.decrypt(sealed, "auth.token") == "token-value"
    with pytest.raises(SecretBoxError):
        box.decrypt(sealed, "signing.hmacSecret")


def test_subscription_documents_are_sealed_field_by_field():
    box = SecretBox([new_master_key()])
    config = orjson.dumps(SUBSCRIPTION)
    sealed = box.seal_config(config)
    document = orjson.loads(sealed)
    assert document["auth"]["clientSecret"].startswith(PREFIX) and document["signing"]["hmacSecret"].startswith(PREFIX)
    assert document["auth"]["clientId"] == "client" and document["endpoint"] == SUBSCRIPTION["endpoint"]
    assert b"oauth-s3cret" not in sealed and b"whsec_" not in sealed
    assert orjson.loads(box.open_config(sealed)) == SUBSCRIPTION
    # A client cannot smuggle in ciphertext: what looks sealed is sealed again, and opens back to itself.
    smuggled = orjson.dumps({**SUBSCRIPTION, "auth": {"type": "token", "token": document["auth"]["clientSecret"]}})
    assert orjson.loads(box.open_config(box.seal_config(smuggled)))["auth"]["token"] == document["auth"]["clientSecret"]
    assert box.seal_config(b'{"auth":{"type":"none"}}') == b'{"auth":{"type":"none"}}'


def test_the_generated_master_key_file_is_0600_and_reused(tmp_path):
    first = load_secretbox(tmp_path / "data")
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = first.encrypt("x")
    assert load_secretbox(tmp_path / "data").decrypt(sealed) == "x"


def test_the_master_key_from_the_environment_wins_and_may_list_old_keys(tmp_path):
    old, new = new_master_key(), new_master_key()
    sealed_old = SecretBox([old]).encrypt("x")
    box = load_secretbox(tmp_path, f"{new},{old}")
    assert not (tmp_path / KEY_FILE).exists()
    assert box.decrypt(sealed_old) == "x" and box.key_id == SecretBox([new]).key_id
    with pytest.raises(SecretBoxError, match="32 bytes") as failure:
        load_secretbox(tmp_path, "not-a-key-hunter2")
    assert "hunter2" not in failure.value.detail


async def _store_with_one_subscription(data_dir, box, close=False):
    store = open_store(data_dir)
    await store.open()
    await store.create_subscription(
        StoredSubscription("sub-1", "123-ABC-456", box.seal_config(orjson.dumps(SUBSCRIPTION)), b"{}", 0)
    )
    if close:
        await store.close()
    return store


async def test_rotate_master_reseals_every_secret(tmp_path):
    old = new_master_key()
    store = await _store_with_one_subscription(tmp_path, SecretBox([old]))
    new = new_master_key()
    try:
        assert await rotate_master(store, SecretBox([new, old])) == 1
        stored = (await store.get_subscription("sub-1")).config
    finally:
        await store.close()
    assert orjson.loads(SecretBox([new]).open_config(stored)) == SUBSCRIPTION
    with pytest.raises(SecretBoxError):
        SecretBox([old]).open_config(stored)


def test_keys_rotate_master_command_rewrites_the_key_file_and_the_store(tmp_path, monkeypatch):
    """The command as a user runs it (sync, with its own event loop)."""
    monkeypatch.delenv("LEADSTREAM_MASTER_KEY", raising=False)
    before = load_secretbox(tmp_path)
    asyncio.run(_store_with_one_subscription(tmp_path, before, close=True))

    result = CliRunner().invoke(keys, ["rotate-master", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    after = load_secretbox(tmp_path)
    assert after.key_id != before.key_id and after.key_id in result.output
    assert (tmp_path / KEY_FILE).read_text().count("\n") == 1  # the old key is gone from the file
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600

    async def stored_config() -> bytes:
        async with open_store(tmp_path) as store:
            return (await store.get_subscription("sub-1")).config

    assert orjson.loads(after.open_config(asyncio.run(stored_config()))) == SUBSCRIPTION
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("leadstream.db*"))
    assert b"oauth-s3cret" not in raw and b"whsec_c2VjcmV0" not in raw


def test_rotate_master_refuses_to_guess_when_the_key_is_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADSTREAM_MASTER_KEY", new_master_key())
    asyncio.run(_store_with_one_subscription(tmp_path, load_secretbox(tmp_path), close=True))
    result = CliRunner().invoke(keys, ["rotate-master", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "--new-key" in result.output
