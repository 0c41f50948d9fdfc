"""Secrets at rest: subscriber credentials are sealed with AES-256-GCM before they reach the store.

A sealed value reads ``lsenc:v1:<key id>:<base64url(nonce + ciphertext + tag)>``, so ciphertext
is obvious in a database dump and names the master key that sealed it. The master key (32 random
bytes, base64url) comes from ``LEADSTREAM_MASTER_KEY`` or from ``<data_dir>/master.key`` (mode
0600, generated on first use). Either may hold several keys, comma- or line-separated: the first
seals, all of them open — which is how a rotation runs without downtime.

The secret fields of a subscription document are listed once here (``SECRET_FIELDS``);
``seal_config``/``open_config`` work on the stored JSON bytes so the subscription model need not
know about encryption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from leadstream.errors import LeadstreamError
from leadstream.store.base import Store, StoredSubscription

PREFIX = "lsenc:v1:"
KEY_FILE = "master.key"
# Where secrets live in a subscription document (JSON paths as tuples).
SECRET_FIELDS: tuple[tuple[str, ...], ...] = (
    ("auth", "token"),
    ("auth", "clientSecret"),
    ("signing", "hmacSecret"),
    ("tls", "clientKey"),
)


class SecretBoxError(LeadstreamError):
    """A stored secret cannot be opened (wrong or missing master key, damaged value)."""

    status = 500
    title = "Internal Server Error"


def new_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        # Never echo the value: it is (meant to be) a secret.
        raise SecretBoxError("a master key must be 32 bytes, base64url-encoded (see `leadstream keys new-master`)")
    return raw


def key_id(key: bytes) -> str:
    """A short public name for a master key (not reversible)."""
    return hashlib.sha256(b"leadstream-master-key-id:" + key).hexdigest()[:8]


class SecretBox:
    """Seals and opens strings; the first key seals, every key opens."""

    def __init__(self, keys: Iterable[str]) -> None:
        raw = [_decode_key(k.strip()) for k in keys if k.strip()]
        if not raw:
            raise SecretBoxError("no master key given")
        self._sealer = (key_id(raw[0]), AESGCM(raw[0]))
        self._openers = {key_id(k): AESGCM(k) for k in raw}

    @property
    def key_id(self) -> str:
        return self._sealer[0]

    def encrypt(self, plaintext: str, context: str = "") -> str:
        """``context`` (say, the field name) is authenticated: a value only opens where it was sealed."""
        kid, aead = self._sealer
        nonce = os.urandom(12)
        sealed = nonce + aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}{kid}:{base64.urlsafe_b64encode(sealed).decode().rstrip('=')}"

    def decrypt(self, value: str, context: str = "") -> str:
        """Open a sealed value; a value without the prefix (stored before encryption) comes back as is."""
        if not is_sealed(value):
            return value
        kid, _, body = value[len(PREFIX) :].partition(":")
        aead = self._openers.get(kid)
        if aead is None:
            raise SecretBoxError(
                f"a stored secret was sealed with master key {kid}, which this server does not have "
                "(check LEADSTREAM_MASTER_KEY or master.key in the data directory)"
            )
        try:
            sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return aead.decrypt(sealed[:12], sealed[12:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretBoxError(f"a stored secret sealed with master key {kid} does not open: it is damaged") from None

    # -- subscription documents -----------------------------------------------------------------
    def seal_config(self, config: bytes) -> bytes:
        """A subscription's JSON with every secret field sealed (always: a value that merely looks
        sealed is sealed again, so a client cannot smuggle in ciphertext)."""
        return self._map_secrets(config, self.encrypt)

    def open_config(self, config: bytes) -> bytes:
        """The stored JSON with every secret field opened, ready for the subscription decoder."""
        return self._map_secrets(config, self.decrypt)

    @staticmethod
    def _map_secrets(config: bytes, transform: Any) -> bytes:
        document = orjson.loads(config)
        changed = False
        for path in SECRET_FIELDS:
            parent = document
            for name in path[:-1]:
                parent = parent.get(name) if isinstance(parent, dict) else None
            if isinstance(parent, dict) and isinstance(parent.get(path[-1]), str):
                parent[path[-1]] = transform(parent[path[-1]], ".".join(path))
                changed = True
        return orjson.dumps(document) if changed else config


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every given secret replaced by "***" — for what comes back from outside and is
    kept or shown (an endpoint's error body echoing the Authorization header, a token endpoint's
    complaint). Pass the values in play: token, access token, client secret, the Basic credentials
    (base64 of ``id:secret``), HMAC secret."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def load_secretbox(data_dir: Path, master_key: str | None = None) -> SecretBox:
    """The server's box: keys from ``master_key`` (LEADSTREAM_MASTER_KEY), else from
    ``<data_dir>/master.key``, generated (mode 0600) when neither exists."""
    if master_key:
        return SecretBox(master_key.replace("\n", ",").split(","))
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this data dir made it first: use theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(new_master_key() + "\n")
    return SecretBox(path.read_text().splitlines())


def write_key_file(data_dir: Path, keys: list[str]) -> None:
    """Replace ``master.key`` atomically, keeping mode 0600."""
    path = data_dir / KEY_FILE
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(keys) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


async def rotate_master(store: Store, box: SecretBox) -> int:
    """Re-seal every subscription's (and alert endpoint's) secrets with ``box``'s first key;
    returns how many changed.

    ``box`` must also hold the old key(s) so the current values open. Run it with the servers
    stopped, or after every node has been given the new key second in its list (then first).
    """
    changed = 0
    for listed in await store.list_subscriptions():
        sub: StoredSubscription | None = listed
        while sub is not None and (resealed := box.seal_config(box.open_config(sub.config))) != sub.config:
            # The control record stays as it is; should an admin change it meanwhile, read it again.
            if await store.update_control(sub.id, sub.control, expected_rev=sub.control.rev, config=resealed):
                changed += 1
                break
            sub = await store.get_subscription(sub.id)
    for alert_id, record in await store.alerts():  # operator alert endpoints keep their HMAC secret the same way
        if (resealed := box.seal_config(box.open_config(record))) != record:
            await store.put_alert(alert_id, resealed)
            changed += 1
    return changed
