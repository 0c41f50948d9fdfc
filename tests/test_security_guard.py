"""The outbound guard (issue 8): every address class, names that resolve inward, rebinding,
redirects and endless answers — against real servers on loopback."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from leadstream.security.guard import BlockedAddress, GuardPolicy, guarded_connector, read_capped, refusal

REFUSED = {
    # IPv4
    "0.0.0.0": "unspecified",
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "100.64.0.1": "shared (CGNAT)",
    "100.127.255.254": "shared (CGNAT)",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.1": "private",
    "198.18.0.1": "private",
    # IPv6
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "2001:db8::1": "private",
    # IPv4 inside IPv6: judged as the IPv4 address they reach
    "::ffff:127.0.0.1": "loopback (IPv4 inside IPv6)",
    "::ffff:10.0.0.1": "private (IPv4 inside IPv6)",
    "::ffff:169.254.169.254": "link-local (IPv4 inside IPv6)",
    "::ffff:100.64.0.1": "shared (CGNAT) (IPv4 inside IPv6)",
    "64:ff9b::7f00:1": "loopback (IPv4 inside IPv6)",
    "2002:7f00:1::": "loopback (IPv4 inside IPv6)",
    "2002:a00:1::": "private (IPv4 inside IPv6)",
}
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::",
]


@pytest.mark.parametrize("address, reason", REFUSED.items())
def test_every_non_public_class_is_refused(address, reason):
    assert refusal(address) == reason
    with pytest.raises(BlockedAddress, match="refused"):
        GuardPolicy.of(False).check(address)
    GuardPolicy.of(True).check(address)  # --allow-private-endpoints


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert refusal(address) is None
    GuardPolicy.of(False).check(address)


def test_the_allow_list_lets_chosen_ranges_through_and_nothing_else():
    policy = GuardPolicy.of(False, ["10.20.0.0/16", "fd00:1::/32"])
    policy.check("10.20.3.4")
    policy.check("fd00:1::5")
    for address in ("10.21.0.1", "127.0.0.1", "fd00:2::1", "::ffff:10.21.0.1"):
        with pytest.raises(BlockedAddress):
            policy.check(address)


def test_the_refusal_does_not_reveal_the_address():
    with pytest.raises(BlockedAddress) as refused:
        GuardPolicy.of(False).check("10.99.88.77")
    assert "10.99.88.77" not in refused.value.strerror and "private" in refused.value.strerror


@contextlib.asynccontextmanager
async def http_server(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def counting_app() -> tuple[web.Application, list[str]]:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="internal secret")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, hits


class FixedResolver(AbstractResolver):
    """A name server under the test's control: answers every name with ``address``, as a hostile
    or rebinding DNS answer would."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


async def refused(session: aiohttp.ClientSession, url: str) -> str:
    with pytest.raises(aiohttp.ClientConnectorError) as failure:
        async with session.post(url, data=b"[]", allow_redirects=False):
            pass
    return str(failure.value)


async def test_connections_to_loopback_are_refused_by_address_and_by_name():
    app, hits = counting_app()
    async with (
        http_server(app) as port,
        aiohttp.ClientSession(connector=guarded_connector(GuardPolicy.of(False))) as session,
    ):
        for url in (
            f"http://127.0.0.1:{port}/",
            f"http://localhost:{port}/",
            f"http://[::ffff:127.0.0.1]:{port}/",
            f"http://[::1]:{port}/",
            f"http://0.0.0.0:{port}/",
        ):
            message = await refused(session, url)
            assert "refused" in message, (url, message)
        for url in (f"http://2130706433:{port}/", f"http://127.1:{port}/"):  # aiohttp refuses these spellings outright
            with pytest.raises(aiohttp.ClientError):
                await session.post(url)
    assert hits == []  # nothing ever reached the internal server


async def test_a_name_whose_answer_changes_to_an_internal_address_is_refused_when_used():
    """DNS rebinding: the endpoint's name passed a check when it was registered; at send time it
    answers 127.0.0.1. The guard judges the address actually connected to."""
    app, hits = counting_app()
    async with http_server(app) as port:
        connector = guarded_connector(GuardPolicy.of(False), resolver=FixedResolver("127.0.0.1"))
        async with aiohttp.ClientSession(connector=connector) as session:
            assert "loopback" in await refused(session, f"http://hooks.example.com:{port}/")
        allowed = guarded_connector(GuardPolicy.of(False, ["127.0.0.0/8"]), resolver=FixedResolver("127.0.0.1"))
        async with aiohttp.ClientSession(connector=allowed) as session:
            async with session.post(f"http://hooks.example.com:{port}/x", data=b"[]") as r:
                assert r.status == 200
    assert hits == ["/x"]


async def test_allow_private_endpoints_lets_everything_through():
    app, hits = counting_app()
    async with (
        http_server(app) as port,
        aiohttp.ClientSession(connector=guarded_connector(GuardPolicy.of(True))) as session,
    ):
        async with session.post(f"http://localhost:{port}/ok", data=b"[]") as r:
            assert r.status == 200
    assert hits == ["/ok"]


async def test_a_redirect_to_an_internal_address_goes_nowhere():
    """The endpoint (allowed) answers 302 to an internal server (not allowed). The sender does not
    follow redirects, and a request that did would still be refused at connect."""
    from leadstream.delivery.http import post

    internal, internal_hits = counting_app()
    async with http_server(internal, "127.0.0.2") as internal_port:
        target = f"http://127.0.0.2:{internal_port}/latest/meta-data"

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(target)

        endpoint = web.Application()
        endpoint.router.add_post("/hook", redirect)
        async with http_server(endpoint) as port:
            policy = GuardPolicy.of(False, ["127.0.0.1/32"])
            async with aiohttp.ClientSession(connector=guarded_connector(policy)) as session:
                answer = await post(session, f"http://127.0.0.1:{port}/hook", b"[]", {}, 5.0)
                assert answer.status == 302 and not answer.ok
                with pytest.raises(aiohttp.ClientConnectorError, match="loopback"):
                    async with session.post(f"http://127.0.0.1:{port}/hook", data=b"[]", allow_redirects=True):
                        pass
    assert internal_hits == []


async def test_answers_are_read_up_to_a_cap_and_an_endless_one_is_cut():
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(10_000):
                await response.write(b"x" * 65536)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    async def short(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/endless", endless)
    app.router.add_get("/short", short)
    async with (
        http_server(app) as port,
        aiohttp.ClientSession(connector=guarded_connector(GuardPolicy.of(True))) as session,
    ):
        async with session.get(f"http://127.0.0.1:{port}/endless") as r:
            body = await read_capped(r, 100_000)
            assert len(body) == 100_000
            assert r.closed  # cut: the connection is dropped rather than drained
        async with session.get(f"http://127.0.0.1:{port}/short") as r:
            assert await read_capped(r) == b"ok"
