"""Outbound TLS per subscription: certificates are always verified; a subscription may add its own
CA bundle (a private CA) and a client certificate (mTLS).

A subscription carries them as PEM text: ``"tls": {"caBundle": "…", "clientCert": "…",
"clientKey": "…"}`` (``clientKey`` is a secret: sealed at rest, shown as ``"***"``). The sender
passes ``ssl=client_context(options)`` to each request; contexts are built once per distinct
options and cached, since making one costs milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
import tempfile
from typing import Annotated

import msgspec

from leadstream.errors import Invalid

Pem = Annotated[str, msgspec.Meta(max_length=256 * 1024)]


class TlsOptions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    caBundle: Pem | None = None  # trusted in addition to the system CAs
    clientCert: Pem | None = None  # certificate chain presented to the endpoint
    clientKey: Pem | None = None  # its private key (unencrypted PEM)


def client_context(options: TlsOptions | None) -> ssl.SSLContext | bool:
    """What to pass as aiohttp's ``ssl=``: ``True`` (default verification) or a cached context.

    Raises Invalid naming the field when the PEM does not load, so the same call validates a
    subscription when it is created.
    """
    if options is None or not (options.caBundle or options.clientCert):
        return True
    if bool(options.clientCert) != bool(options.clientKey):
        raise Invalid("tls: clientCert and clientKey go together", field="tls")
    return _context(options.caBundle, options.clientCert, options.clientKey)


@functools.lru_cache(maxsize=1024)
def _context(ca_bundle: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()  # verifies hostnames against the system CAs
    if ca_bundle:
        try:
            context.load_verify_locations(cadata=ca_bundle)
        except (ssl.SSLError, ValueError):
            raise Invalid("tls.caBundle: not a PEM certificate bundle", field="tls.caBundle") from None
    if client_cert and client_key:
        _load_client_pair(context, client_cert, client_key)
    return context


def _load_client_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    # The ssl module loads certificate chains from files only: write them to a private (0700)
    # directory for the moment it takes, and remove them at once.
    with tempfile.TemporaryDirectory(prefix="leadstream-tls-") as directory:
        name = hashlib.sha256(cert.encode()).hexdigest()[:16]
        paths = []
        for suffix, pem in (("crt", cert), ("key", key)):
            path = os.path.join(directory, f"{name}.{suffix}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem)
            paths.append(path)
        try:
            context.load_cert_chain(paths[0], paths[1])
        except (ssl.SSLError, ValueError):
            raise Invalid(
                "tls.clientCert/clientKey: not a matching PEM certificate and private key", field="tls.clientCert"
            ) from None
