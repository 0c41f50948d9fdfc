"""Delivery signatures (SPEC §5): Adobe I/O-style RSA digital signatures and Standard Webhooks HMAC.

RSA: two key pairs, so a receiver that trusts either keeps working across a rotation. Both private
keys live in ONE file, ``<keys dir>/keyring.pem`` (mode 0600), so a rotation is a single atomic
``os.replace`` and a running server notices it with one ``stat``. Each public key is served from
its own file, ``pub-key-<fingerprint>.pem``: the name changes with the key, so a receiver that
caches keys by path (Adobe's verifier library does) never verifies against a stale one. Retired
public keys stay servable for a while, for deliveries signed just before a rotation.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from leadstream.errors import Invalid

KEY_BITS = 2048
RING_FILE = "keyring.pem"
LOCK_FILE = ".lock"
KEEP_RETIRED = 8  # retired public keys still served; older ones are deleted on rotation
PUBLIC_NAME_RE = re.compile(r"pub-key-[0-9a-f]{32}\.pem")
URL_PREFIX = "/keys/"

_PKCS1 = padding.PKCS1v15()
_PREHASHED = Prehashed(hashes.SHA256())


class _Key(NamedTuple):
    private: rsa.RSAPrivateKey
    public_name: str  # pub-key-<fingerprint>.pem
    public_pem: bytes


def _key(private: rsa.RSAPrivateKey) -> _Key:
    public = private.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _Key(private, f"pub-key-{hashlib.sha256(der).hexdigest()[:32]}.pem", pem)


def _new_key() -> _Key:
    return _key(rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS))


def _private_pem(key: _Key) -> bytes:
    return key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeyRing:
    """Two RSA-2048 key pairs (for rotation) kept in ``directory``, generated on first use.

    ``signature_headers`` may be called from several threads; a reload swaps one tuple.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._ring = self.directory / RING_FILE
        self._stamp: tuple[int, int, int] | None = None
        with self._locked():
            if not self._ring.exists():
                self._write((_new_key(), _new_key()))
        self._load()

    # -- signing --------------------------------------------------------------------------------

    def signature_headers(self, body: bytes) -> dict[str, str]:
        """The four ``x-adobe-*`` signature headers for exactly these body bytes."""
        self.reload_if_changed()  # a rotation by `leadstream keys rotate` applies to the next body
        keys = self._keys  # one read: both headers come from the same ring even during a reload
        digest = hashlib.sha256(body).digest()  # hashed once for both keys
        headers: dict[str, str] = {}
        for number, key in enumerate(keys, start=1):
            signature = key.private.sign(digest, _PKCS1, _PREHASHED)
            headers[f"x-adobe-digital-signature-{number}"] = base64.b64encode(signature).decode()
            headers[f"x-adobe-public-key{number}-path"] = URL_PREFIX + key.public_name
        return headers

    def public_pem(self, name: str) -> bytes | None:
        """The PEM (SPKI) public key served under ``name``: a current key or a recently retired one."""
        if not PUBLIC_NAME_RE.fullmatch(name):  # also keeps any path trickery out of the directory
            return None
        for key in self._keys:
            if key.public_name == name:
                return key.public_pem
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    @property
    def public_paths(self) -> tuple[str, str]:
        """The URL paths of the current public keys (key 1, key 2)."""
        first, second = self._keys
        return URL_PREFIX + first.public_name, URL_PREFIX + second.public_name

    # -- rotation -------------------------------------------------------------------------------

    def rotate(self) -> None:
        """Promote key 2 to key 1 and create a new key 2; the old key 1's public key stays servable."""
        with self._locked():
            self._load()  # rotate what is on disk, not what this process loaded long ago
            self._write((self._keys[1], _new_key()))
            self._prune_retired()
        self._load()

    def reload_if_changed(self) -> None:
        """Pick up a rotation made by another process: one ``stat`` when nothing changed."""
        if self._file_stamp() != self._stamp:
            self._load()

    # -- files ----------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise creation and rotation across processes (a server and `leadstream keys rotate`)."""
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._ring)
        except FileNotFoundError:
            return None
        # The inode changes on every os.replace, so two rotations within one mtime tick still show.
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        stamp = self._file_stamp()
        data = self._ring.read_bytes()
        if os.stat(self._ring).st_mode & 0o077:
            os.chmod(self._ring, 0o600)  # someone loosened it: private keys are for this user only
        blocks = re.findall(rb"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----\n?", data, re.S)
        if len(blocks) != 2:
            raise RuntimeError(f"{self._ring}: expected two PEM private keys, found {len(blocks)}")
        keys = []
        for block in blocks:
            private = serialization.load_pem_private_key(block, password=None)
            if not isinstance(private, rsa.RSAPrivateKey):
                raise RuntimeError(f"{self._ring}: not an RSA private key")
            keys.append(_key(private))
        self._keys: tuple[_Key, _Key] = (keys[0], keys[1])
        self._stamp = stamp

    def _write(self, keys: tuple[_Key, _Key]) -> None:
        """Public files first, then the ring replaced atomically, so a served path never 404s."""
        for key in keys:
            public = self.directory / key.public_name
            if not public.exists():
                _atomic_write(public, key.public_pem, 0o644)
        _atomic_write(self._ring, b"".join(_private_pem(key) for key in keys), 0o600)

    def _prune_retired(self) -> None:
        current = {key.public_name for key in self._keys}
        retired = [
            path
            for path in self.directory.iterdir()
            if PUBLIC_NAME_RE.fullmatch(path.name) and path.name not in current
        ]
        retired.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
        for path in retired[KEEP_RETIRED:]:
            path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widened past `mode`
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


# -- Standard Webhooks HMAC ---------------------------------------------------------------------

HMAC_PREFIX = "whsec_"


def new_hmac_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return HMAC_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_hmac_secret(secret: str, field: str = "signing.hmacSecret") -> str:
    """``secret`` if it is a usable ``whsec_`` secret (24–64 key bytes, as the spec advises), else Invalid."""
    if not isinstance(secret, str) or not secret.startswith(HMAC_PREFIX):
        raise Invalid(f"{field}: must be a string starting with 'whsec_'", field=field)
    try:
        key = base64.b64decode(secret[len(HMAC_PREFIX) :], validate=True)
    except ValueError:
        raise Invalid(f"{field}: the part after 'whsec_' is not valid base64", field=field) from None
    if not 24 <= len(key) <= 64:
        raise Invalid(f"{field}: the key must be 24 to 64 bytes, got {len(key)}", field=field)
    return secret


def hmac_headers(secret: str, message_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks headers: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``.

    ``message_id`` must stay the same on every retry of a delivery (receivers deduplicate on it).
    """
    key = base64.b64decode(secret.removeprefix(HMAC_PREFIX) + "==")  # tolerate unpadded secrets
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(key, f"{message_id}.{ts}.".encode(), hashlib.sha256)
    mac.update(body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
    }
