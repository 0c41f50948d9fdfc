"""TLS (issue 8): `leadstream serve --tls-cert --tls-key`, and outbound mTLS contexts — with
certificates made here by `cryptography`."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import ADMIN_KEY, ServerProcess, wait_until
from leadstream.errors import Invalid
from leadstream.security.tls import TlsOptions, client_context
from leadstream.settings import Settings


@dataclass
class Issued:
    cert: str  # PEM
    key: str  # PEM (unencrypted PKCS#8)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(name: str = "leadstream test CA") -> tuple[Issued, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key), key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, *, server: bool) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return _pem(builder.sign(ca_key, hashes.SHA256()), key)


def self_signed(common_name: str = "localhost") -> Issued:
    """One certificate that is its own issuer, valid for localhost and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key)


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    return Issued(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


def write(directory: Path, issued: Issued, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_text(issued.cert)
    key.write_text(issued.key)
    key.chmod(0o600)
    return cert, key


# -- serving HTTPS ----------------------------------------------------------------------------------------


async def test_serve_over_https_with_a_self_signed_certificate(tmp_path):
    issued = self_signed()
    cert, key = write(tmp_path, issued, "server")
    trusting = ssl.create_default_context(cadata=issued.cert)
    server = ServerProcess(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key), ssl_context=trusting)
    https, port = server.url, server.port
    try:
        await server.start()
        async with aiohttp.ClientSession() as s:
            async with s.get(
                f"{https}/v1/catalog/audit", ssl=trusting, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            ) as r:
                assert r.status == 200
            # A client that does not trust the certificate refuses, as it should.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(f"{https}/healthz")
            # Plain HTTP on the TLS port gets no HTTP answer.
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    await r.read()
    finally:
        server.stop()


def test_the_certificate_and_its_key_go_together(tmp_path):
    cert, key = write(tmp_path, self_signed(), "server")
    with pytest.raises(ValueError, match="together"):
        Settings(tls_cert=cert)
    with pytest.raises(ValueError, match="no such file"):
        Settings(tls_cert=cert, tls_key=tmp_path / "missing.key")
    assert Settings(tls_cert=cert, tls_key=key).tls_key == key


# -- outbound mTLS ------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mtls_receiver(server: Issued, client_ca: Issued, directory: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS receiver on 127.0.0.1 that requires a client certificate issued by ``client_ca``;
    yields its URL and the common names of the clients it saw."""
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert")  # type: ignore[union-attr]
        seen.append(dict(x[0] for x in peer["subject"])["commonName"])
        return web.Response(text="ok")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=client_ca.cert)
    cert, key = write(directory, server, "receiver")
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}/hook", seen
    finally:
        await runner.cleanup()


async def test_mtls_to_a_receiver_that_requires_a_client_certificate(tmp_path):
    ca, ca_key, ca_cert = make_ca()
    server = issue(ca_key, ca_cert, "receiver", server=True)
    client = issue(ca_key, ca_cert, "sub-crm-sync", server=False)
    async with mtls_receiver(server, ca, tmp_path) as (url, seen), aiohttp.ClientSession() as session:
        options = TlsOptions(caBundle=ca.cert, clientCert=client.cert, clientKey=client.key)
        async with session.post(url, data=b"[]", ssl=client_context(options)) as r:
            assert r.status == 200
        assert seen == ["sub-crm-sync"]
        assert client_context(options) is client_context(
            TlsOptions(caBundle=ca.cert, clientCert=client.cert, clientKey=client.key)
        )

        # Without the client certificate the receiver ends the handshake.
        with pytest.raises(aiohttp.ClientError):
            async with session.post(url, data=b"[]", ssl=client_context(TlsOptions(caBundle=ca.cert))) as r:
                await r.read()
        # Without the private CA the receiver's certificate is not trusted: verification is on by default.
        assert client_context(None) is True and client_context(TlsOptions()) is True
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.post(
                url, data=b"[]", ssl=client_context(TlsOptions(clientCert=client.cert, clientKey=client.key))
            ):
                pass
        # Another CA's client certificate is refused by the receiver.
        _, other_key, other_cert = make_ca("another CA")
        stranger = issue(other_key, other_cert, "stranger", server=False)
        with pytest.raises(aiohttp.ClientError):
            async with session.post(
                url,
                data=b"[]",
                ssl=client_context(TlsOptions(caBundle=ca.cert, clientCert=stranger.cert, clientKey=stranger.key)),
            ) as r:
                await r.read()
        assert seen == ["sub-crm-sync"]


def test_bad_pem_is_an_error_naming_the_field():
    _ca, ca_key, ca_cert = make_ca()
    client = issue(ca_key, ca_cert, "c", server=False)
    other = issue(ca_key, ca_cert, "d", server=False)
    with pytest.raises(Invalid, match=r"tls\.caBundle"):
        client_context(TlsOptions(caBundle="not a pem"))
    with pytest.raises(Invalid, match=r"tls\.clientCert"):
        client_context(TlsOptions(clientCert=client.cert, clientKey=other.key))  # a key that does not match
    with pytest.raises(Invalid, match="together"):
        client_context(TlsOptions(clientCert=client.cert))


async def test_delivery_over_mtls_to_a_receiver_that_requires_a_client_certificate(tmp_path):
    from helpers import activity, running_server

    ca, ca_key, ca_cert = make_ca()
    receiver_cert = issue(ca_key, ca_cert, "receiver", server=True)
    client = issue(ca_key, ca_cert, "sub-crm-sync", server=False)
    async with (
        running_server(data_dir=tmp_path / "data") as server,
        mtls_receiver(receiver_cert, ca, tmp_path) as (url, seen),
        aiohttp.ClientSession() as s,
    ):
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with s.post(
            f"{server.url}/v1/subscriptions",
            headers=headers,
            json={
                "name": "mtls",
                "munchkinId": "123-ABC-456",
                "stream": "activity",
                "endpoint": url,
                "pushIntervalMs": 20,
                "tls": {"caBundle": ca.cert, "clientCert": client.cert, "clientKey": client.key},
            },
        ) as r:
            created = await r.json()
            assert r.status == 201, created
        assert created["tls"]["clientKey"] == "***" and created["tls"]["caBundle"] == ca.cert
        async with s.post(
            f"{server.url}/v1/streams/activity/events", headers=headers, json=[activity(i) for i in range(3)]
        ) as r:
            assert r.status == 200
        await wait_until(lambda: seen, what="a delivery over mTLS")
        assert set(seen) == {"sub-crm-sync"}
    key_body = client.key.split("-----")[2].strip().splitlines()[1].encode()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("leadstream.db*"))
    assert key_body not in stored  # the client's private key is sealed at rest
