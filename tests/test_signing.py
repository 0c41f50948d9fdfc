"""RSA key ring, the public-key route and Standard Webhooks HMAC, checked by independent verifiers:
`cryptography`, the `standardwebhooks` package and Node's crypto.verify (as Adobe's library uses it)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path

import aiohttp
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from helpers import require_node, running_server
from leadstream.errors import Invalid
from leadstream.security.signing import (
    KEEP_RETIRED,
    RING_FILE,
    KeyRing,
    check_hmac_secret,
    hmac_headers,
    new_hmac_secret,
)

VERIFY_JS = Path(__file__).parent / "node" / "verify.js"
BODY = json.dumps(
    [
        {
            "eventid": "e1",
            "type": "com.adobe.platform.marketo.activity.standard.openemail",
            "data": {"leadId": "1234", "activityTypeId": 10, "note": "naïve ✓"},
        }
    ]
).encode()


def rsa_valid(pem: bytes, body: bytes, signature_b64: str) -> bool:
    public = serialization.load_pem_public_key(pem)
    try:
        public.verify(base64.b64decode(signature_b64), body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def tampered(body: bytes) -> bytes:
    return body.replace(b'"1234"', b'"1235"')


@pytest.fixture
async def key_server(tmp_path):
    """The real app on a real HTTP server on 127.0.0.1, and the key ring it signs with."""
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession(server.url) as http:
        yield server.services.keyring, http, server.url


async def fetch_pem(http: aiohttp.ClientSession, path: str) -> bytes:
    async with http.get(path) as response:
        assert response.status == 200, path
        assert response.content_type == "application/x-pem-file"
        return await response.read()


# -- key ring -----------------------------------------------------------------------------------


def test_keys_are_private_and_reused_on_reopen(tmp_path):
    directory = tmp_path / "data" / "keys"
    ring = KeyRing(directory)
    ring_file = directory / RING_FILE
    assert stat.S_IMODE(ring_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    first_bytes = ring_file.read_bytes()
    assert first_bytes.count(b"BEGIN PRIVATE KEY") == 2

    reopened = KeyRing(directory)
    assert reopened.public_paths == ring.public_paths
    assert ring_file.read_bytes() == first_bytes
    path1, path2 = ring.public_paths
    assert path1 != path2 and path1.startswith("/keys/pub-key-") and path1.endswith(".pem")


def test_loosened_private_key_file_is_tightened(tmp_path):
    KeyRing(tmp_path)
    os.chmod(tmp_path / RING_FILE, 0o644)
    KeyRing(tmp_path)
    assert stat.S_IMODE((tmp_path / RING_FILE).stat().st_mode) == 0o600


def test_both_signatures_verify_over_the_raw_body(tmp_path):
    ring = KeyRing(tmp_path)
    headers = ring.signature_headers(BODY)
    assert set(headers) == {
        "x-adobe-digital-signature-1",
        "x-adobe-digital-signature-2",
        "x-adobe-public-key1-path",
        "x-adobe-public-key2-path",
    }
    for n in (1, 2):
        pem = ring.public_pem(headers[f"x-adobe-public-key{n}-path"].removeprefix("/keys/"))
        assert pem is not None and pem.startswith(b"-----BEGIN PUBLIC KEY-----")
        assert rsa_valid(pem, BODY, headers[f"x-adobe-digital-signature-{n}"])
        assert not rsa_valid(pem, tampered(BODY), headers[f"x-adobe-digital-signature-{n}"])
    assert headers["x-adobe-digital-signature-1"] != headers["x-adobe-digital-signature-2"]


def test_public_pem_refuses_unknown_and_crafted_names(tmp_path):
    ring = KeyRing(tmp_path)
    assert ring.public_pem("pub-key-" + "0" * 32 + ".pem") is None
    assert ring.public_pem(RING_FILE) is None
    assert ring.public_pem("../" + RING_FILE) is None


async def test_rotation_keeps_every_header_valid_over_http(key_server):
    ring, http, _ = key_server
    before = ring.signature_headers(BODY)
    ring.rotate()
    after = ring.signature_headers(tampered(BODY))

    # key 2 became key 1; key 2 is new
    assert after["x-adobe-public-key1-path"] == before["x-adobe-public-key2-path"]
    assert after["x-adobe-public-key2-path"] not in (
        before["x-adobe-public-key1-path"],
        before["x-adobe-public-key2-path"],
    )
    for body, headers in ((BODY, before), (tampered(BODY), after)):
        for n in (1, 2):
            pem = await fetch_pem(http, headers[f"x-adobe-public-key{n}-path"])  # the retired key too
            assert rsa_valid(pem, body, headers[f"x-adobe-digital-signature-{n}"])
    async with http.get(before["x-adobe-public-key1-path"]) as response:
        assert response.headers["Cache-Control"].endswith("immutable")


async def test_unknown_key_is_404(key_server):
    _, http, _ = key_server
    for path in ("/keys/pub-key-" + "f" * 32 + ".pem", f"/keys/{RING_FILE}", "/keys/..%2F" + RING_FILE):
        async with http.get(path) as response:
            assert response.status == 404, path


def test_reload_picks_up_a_rotation_by_another_process(tmp_path):
    server_side = KeyRing(tmp_path)
    cli_side = KeyRing(tmp_path)  # as `leadstream keys rotate` would open it
    old_paths = server_side.public_paths
    server_side.reload_if_changed()
    assert server_side.public_paths == old_paths  # nothing changed, nothing reloaded

    cli_side.rotate()
    cli_side.rotate()  # twice, fast: must not be hidden by an unchanged mtime
    assert server_side.public_paths == old_paths
    server_side.reload_if_changed()
    assert server_side.public_paths == cli_side.public_paths != old_paths
    headers = server_side.signature_headers(BODY)
    pem = cli_side.public_pem(headers["x-adobe-public-key2-path"].removeprefix("/keys/"))
    assert rsa_valid(pem, BODY, headers["x-adobe-digital-signature-2"])
    # keys retired by the other process are still served here
    for path in old_paths:
        assert server_side.public_pem(path.removeprefix("/keys/")) is not None


def test_rotation_keeps_a_bounded_number_of_retired_keys(tmp_path):
    ring = KeyRing(tmp_path)
    retired = []
    for _ in range(KEEP_RETIRED + 3):
        retired.append(ring.public_paths[0])
        ring.rotate()
    public_files = list(tmp_path.glob("pub-key-*.pem"))
    assert len(public_files) == 2 + KEEP_RETIRED
    assert ring.public_pem(retired[-1].removeprefix("/keys/")) is not None
    assert ring.public_pem(retired[0].removeprefix("/keys/")) is None


# -- Node.js, as Adobe's verifier library checks --------------------------------------------------


async def run_node(node: str, case: dict, case_file: Path, base_url: str) -> tuple[int, str]:
    case_file.write_text(json.dumps(case))
    process = await asyncio.create_subprocess_exec(
        node,
        str(VERIFY_JS),
        str(case_file),
        base_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, output.decode()


async def test_node_verifies_with_keys_fetched_from_leadstream(key_server, tmp_path):
    node = require_node()
    ring, http, base_url = key_server
    headers = ring.signature_headers(BODY)

    good = {"body_base64": base64.b64encode(BODY).decode(), "headers": headers}
    code, output = await run_node(node, good, tmp_path / "good.json", base_url)
    assert code == 0, output
    assert output.count("valid") == 2

    bad = {"body_base64": base64.b64encode(tampered(BODY)).decode(), "headers": headers}
    code, output = await run_node(node, bad, tmp_path / "bad.json", base_url)
    assert code == 1, output
    assert output.count("INVALID") == 2

    # and with the PEMs given inline, one of them swapped: only that signature fails
    pems = {headers["x-adobe-public-key1-path"]: (await fetch_pem(http, headers["x-adobe-public-key2-path"])).decode()}
    code, output = await run_node(node, {**good, "pems": pems}, tmp_path / "swapped.json", base_url)
    assert code == 1 and "signature 1: INVALID" in output and "signature 2: valid" in output, output


# -- Standard Webhooks HMAC -------------------------------------------------------------------------


def test_hmac_headers_verify_with_the_standardwebhooks_package():
    secret = new_hmac_secret()
    assert check_hmac_secret(secret) == secret
    headers = hmac_headers(secret, "batch_01J", BODY)
    assert headers["webhook-id"] == "batch_01J"
    assert headers["webhook-signature"].startswith("v1,")

    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered(BODY), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_hmac_secret()).verify(BODY, headers)


def test_hmac_matches_the_standard_webhooks_reference_vector():
    # The example in the Standard Webhooks specification / svix documentation.
    headers = hmac_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        b'{"test": 2432232314}',
        timestamp=1614265330,
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_new_secrets_are_random_32_byte_keys():
    first, second = new_hmac_secret(), new_hmac_secret()
    assert first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


@pytest.mark.parametrize(
    ("secret", "fragment"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must be a string starting with 'whsec_'"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes, got 5"),
        (12345, "must be a string"),
    ],
)
def test_bad_hmac_secrets_are_refused(secret, fragment):
    with pytest.raises(Invalid, match="signing.hmacSecret: .*" + fragment.replace("(", r"\(")):
        check_hmac_secret(secret)
