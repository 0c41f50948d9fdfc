"""The console foundation over plain HTTP (aiohttp, no browser): cookie attributes, the session
gate, CSRF refusals header by header, redirects, security headers. Real uvicorn on 127.0.0.1."""

from __future__ import annotations

import datetime
import http.cookies
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from console_demo import OPERATOR_KEY, TENANT_KEY, Running, serve_demo
from leadstream.console.headers import CONTENT_SECURITY_POLICY
from leadstream.console.session import COOKIE


@pytest.fixture(scope="module")
def demo_server() -> Iterator[Running]:
    with serve_demo() as running:
        yield running


@pytest.fixture
def demo(demo_server: Running) -> Running:
    demo_server.demo.reset()
    return demo_server


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each test says exactly which cookie it sends.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def set_cookie(response: aiohttp.ClientResponse) -> http.cookies.Morsel[str]:
    headers = response.headers.getall("set-cookie", [])
    assert len(headers) == 1, headers
    parsed: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    parsed.load(headers[0])
    return parsed[COOKIE]


async def sign_in(
    client: aiohttp.ClientSession,
    demo: Running,
    key: str = OPERATOR_KEY,
    next_url: str = "/ui/things",
    **kwargs: object,
) -> aiohttp.ClientResponse:
    form = {"key": key, "next": next_url}
    headers = {"Origin": demo.url}
    async with client.post(demo.ui("/sign-in"), data=form, headers=headers, allow_redirects=False, **kwargs) as r:
        await r.read()
        return r


async def signed_in(client: aiohttp.ClientSession, demo: Running, key: str = OPERATOR_KEY) -> tuple[str, str]:
    """(session cookie value, CSRF token) of a fresh session."""
    response = await sign_in(client, demo, key)
    assert response.status == 303
    session_id = set_cookie(response).value
    async with client.get(demo.ui("/things"), headers={"Cookie": f"{COOKIE}={session_id}"}) as page:
        assert page.status == 200
        token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None
    return session_id, token.group(1)


async def test_the_session_cookie_is_httponly_samesite_strict_on_path_ui(
    client: aiohttp.ClientSession, demo: Running
) -> None:
    response = await sign_in(client, demo)
    assert response.status == 303 and response.headers["location"] == "/ui/things"
    cookie = set_cookie(response)
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP: a Secure cookie would never come back
    assert not cookie["max-age"] and not cookie["expires"]  # gone with the browser; the server times it out
    assert OPERATOR_KEY not in cookie.value and len(cookie.value) >= 40


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_under_tls_the_session_cookie_is_also_secure(client: aiohttp.ClientSession, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with serve_demo(ssl_certfile=str(cert), ssl_keyfile=str(key)) as tls:
        assert tls.url.startswith("https://")
        response = await sign_in(client, tls, ssl=trust)
        assert response.status == 303
        cookie = set_cookie(response)
        assert cookie["secure"] is True and cookie["httponly"] is True and cookie["samesite"].lower() == "strict"
        async with client.post(
            tls.ui("/sign-out"), headers={"Cookie": f"{COOKIE}={cookie.value}"}, ssl=trust, allow_redirects=False
        ) as refused:
            assert refused.status == 403  # no token, no origin: even sign-out cannot be forced on someone


async def test_wrong_and_revoked_keys_get_401_and_no_cookie(client: aiohttp.ClientSession, demo: Running) -> None:
    bodies = []
    for key in ("nope", "tenant-key-revoked", "   "):
        response = await sign_in(client, demo, key)
        assert response.status in (401, 400)
        assert "set-cookie" not in response.headers
    for key in ("nope", "tenant-key-revoked"):
        async with client.post(demo.ui("/sign-in"), data={"key": key}, headers={"Origin": demo.url}) as r:
            bodies.append(re.sub(r'value="[^"]*"', "", await r.text()))
    assert bodies[0] == bodies[1]  # one page for both: nothing tells a revoked key from an unknown one


async def test_sign_in_needs_a_same_origin_post(client: aiohttp.ClientSession, demo: Running) -> None:
    for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"}, {"Referer": "http://evil.example/x"}):
        async with client.post(
            demo.ui("/sign-in"), data={"key": OPERATOR_KEY}, headers=headers, allow_redirects=False
        ) as response:
            assert response.status == 403, headers
            assert "set-cookie" not in response.headers
            assert "came from another site" in await response.text()
    assert len(demo.demo.sessions) == 0


async def test_state_changes_need_both_the_origin_and_the_token(client: aiohttp.ClientSession, demo: Running) -> None:
    session_id, token = await signed_in(client, demo)
    cookie = {"Cookie": f"{COOKIE}={session_id}"}
    pause = demo.ui("/things/1/pause")
    refused = [
        ({"Origin": "http://127.0.0.1:1"}, {"csrf_token": token}),  # same site, another origin
        ({"Origin": "null"}, {"csrf_token": token}),
        ({}, {"csrf_token": token}),  # neither Origin nor Referer
        ({"Origin": demo.url}, {}),  # no token
        ({"Origin": demo.url}, {"csrf_token": token[:-1] + ("A" if token[-1] != "A" else "B")}),  # a wrong one
        ({"Origin": demo.url, "X-CSRF-Token": "wrong"}, {"csrf_token": token}),  # the header, when sent, decides
    ]
    for headers, form in refused:
        async with client.post(pause, data=form, headers=cookie | headers, allow_redirects=False) as response:
            assert response.status == 403, (headers, form)
            assert "nothing was changed" in (await response.text()).lower()
        assert demo.demo.things[1].state == "active", (headers, form)

    async with client.post(
        pause, data={"csrf_token": token}, headers=cookie | {"Referer": demo.ui("/things")}, allow_redirects=False
    ) as response:
        assert response.status == 303  # a same-origin Referer stands in for a missing Origin
    assert demo.demo.things[1].state == "paused"
    async with client.post(
        demo.ui("/things/3/pause"), headers=cookie | {"Origin": demo.url, "X-CSRF-Token": token}, allow_redirects=False
    ) as response:
        assert response.status == 303  # htmx sends the token as a header
    assert demo.demo.things[3].state == "paused"


async def test_without_a_live_session_pages_and_posts_go_to_sign_in(
    client: aiohttp.ClientSession, demo: Running
) -> None:
    async with client.get(demo.ui("/things?state=paused"), allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["location"] == "/ui/sign-in?next=%2Fui%2Fthings%3Fstate%3Dpaused"
        assert "set-cookie" not in response.headers
    forged = {"Cookie": f"{COOKIE}=forged-{'x' * 40}"}
    async with client.get(demo.ui("/things"), headers=forged, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["location"] == "/ui/sign-in?reason=ended&next=%2Fui%2Fthings"
        cleared = set_cookie(response)
        assert cleared.value == "" and cleared["path"] == "/ui" and cleared["max-age"] == "0"
    async with client.post(
        demo.ui("/things/1/pause"), headers=forged | {"Origin": demo.url}, allow_redirects=False
    ) as response:
        assert response.status == 303 and response.headers["location"] == "/ui/sign-in?reason=ended"
    assert demo.demo.things[1].state == "active"
    htmx = {"HX-Request": "true", "HX-Current-URL": demo.ui("/?tab=2")}
    async with client.get(demo.ui("/live/polls"), headers=forged | htmx, allow_redirects=False) as response:
        assert response.status == 401  # a live part: htmx moves the whole page
        assert response.headers["hx-redirect"] == "/ui/sign-in?reason=ended&next=%2Fui%2F%3Ftab%3D2"
    async with client.get(demo.ui("/static/console.css"), headers=forged, allow_redirects=False) as response:
        assert response.status == 200  # assets are public (the sign-in page needs them)
    assert demo.demo.polls == 0


async def test_after_sign_in_the_browser_goes_only_to_console_pages(
    client: aiohttp.ClientSession, demo: Running
) -> None:
    cases = {
        "https://evil.example/": "/ui/",
        "//evil.example/ui/": "/ui/",
        "/ui\\@evil.example": "/ui/",
        "/elsewhere": "/ui/",
        "/ui/things?state=paused": "/ui/things?state=paused",
    }
    for wanted, landed in cases.items():
        response = await sign_in(client, demo, next_url=wanted)
        assert response.status == 303 and response.headers["location"] == landed, wanted


async def test_a_revoked_key_loses_its_sessions_at_once(client: aiohttp.ClientSession, demo: Running) -> None:
    session_id, _ = await signed_in(client, demo, TENANT_KEY)
    cookie = {"Cookie": f"{COOKIE}={session_id}"}
    async with client.get(demo.ui("/things"), headers=cookie, allow_redirects=False) as response:
        assert response.status == 200
    demo.demo.revoked.add("key_7f3a9c")
    async with client.get(demo.ui("/things"), headers=cookie, allow_redirects=False) as response:
        assert response.status == 303 and "reason=ended" in response.headers["location"]
    assert len(demo.demo.sessions) == 0


async def test_pages_carry_security_headers_and_assets_are_served_by_us(
    client: aiohttp.ClientSession, demo: Running
) -> None:
    session_id, _ = await signed_in(client, demo)
    async with client.get(demo.ui("/"), headers={"Cookie": f"{COOKIE}={session_id}"}) as page:
        assert page.status == 200
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        html = await page.text()
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html)
    assert {a.split("?")[0] for a in assets} == {
        "/ui/static/htmx.min.js",
        "/ui/static/console.css",
        "/ui/static/favicon.svg",
    }
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html.split("<main")[0])  # no CDN in the layout
    for asset in assets:
        async with client.get(demo.url + asset) as response:
            assert response.status == 200, asset
            assert response.headers["cache-control"] == "public, max-age=86400"
            name = asset.split("?")[0].rsplit("/", 1)[1]
            static = Path(__file__).parents[1] / "src/leadstream/console/static" / name
            assert await response.read() == static.read_bytes()


async def test_errors_render_as_pages_and_bad_forms_change_nothing(
    client: aiohttp.ClientSession, demo: Running
) -> None:
    session_id, token = await signed_in(client, demo)
    cookie = {"Cookie": f"{COOKIE}={session_id}"}
    async with client.get(demo.ui("/sign-out"), headers=cookie) as response:
        assert response.status == 405 and "cannot be used that way" in await response.text()
    async with client.get(demo.ui("/boom"), headers=cookie) as response:
        text = await response.text()
        assert response.status == 500 and "Something went wrong on our side" in text
        assert "internal detail" not in text and "Traceback" not in text
    async with client.get(demo.ui("/things/999"), headers=cookie) as response:
        assert response.status == 404 and "There is no such thing" in await response.text()
    big = {"csrf_token": token, "filler": "x" * 70_000}
    async with client.post(demo.ui("/things/1/pause"), data=big, headers=cookie | {"Origin": demo.url}) as response:
        assert response.status == 413 and "larger than 65536 bytes" in await response.text()
    upload = aiohttp.FormData()
    upload.add_field("csrf_token", token)
    upload.add_field("file", b"data", filename="x.bin")
    async with client.post(demo.ui("/things/1/pause"), data=upload, headers=cookie | {"Origin": demo.url}) as response:
        assert response.status == 415
    async with client.post(
        demo.ui("/things/1/delete"), data={"csrf_token": token}, headers=cookie | {"Origin": demo.url}
    ) as response:
        assert response.status == 400 and "needs the confirmation step" in await response.text()
    assert demo.demo.things[1].state == "active" and 1 in demo.demo.things
