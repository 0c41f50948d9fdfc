"""The outbound guard (SSRF): delivery reaches the public internet only, unless told otherwise.

The check sits in the connector's socket factory, which aiohttp calls with the very address it is
about to connect to — after DNS, for literal addresses too (aiohttp skips the resolver for those),
and for every address happy-eyeballs tries. So there is no window between check and connect: a
DNS answer that changes after a first, innocent lookup is checked when it is used.

Refused: unspecified, loopback, private, link-local, shared (CGNAT 100.64/10), multicast,
reserved and every other non-global range, in IPv4 and IPv6, with IPv4 addresses embedded in IPv6
(IPv4-mapped, 6to4, NAT64, Teredo) judged as the IPv4 address they reach. Allowed anyway:
everything when ``allow_private`` (``--allow-private-endpoints``), or addresses inside
``allowed_cidrs``.

For the sender: POST with ``allow_redirects=False`` (a redirect is an answer, never followed, so a
302 to http://169.254.169.254/ goes nowhere) and read answers with ``read_capped``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType

import leadstream

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
BODY_CAP = 64 * 1024  # bytes of an answer worth reading: enough for an error message, no more
SNIPPET_BYTES = 512
USER_AGENT = f"leadstream/{leadstream.__version__}"

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(OSError):
    """A connection the guard refused; aiohttp reports it as a ``ClientConnectorError`` whose
    message ends with this one."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(address: str | IPAddress) -> str | None:
    """Why an address is not public ("loopback", "private", …), or None when it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        reason = refusal(inner)
        return f"{reason} (IPv4 inside IPv6)" if reason else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (CGNAT)"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not public"
    return None


@dataclass(frozen=True)
class GuardPolicy:
    allow_private: bool = False
    allowed_cidrs: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def of(cls, allow_private: bool, allowed_cidrs: Iterable[str] = ()) -> GuardPolicy:
        return cls(allow_private, tuple(ipaddress.ip_network(c, strict=False) for c in allowed_cidrs))

    @classmethod
    def from_settings(cls, settings: Any) -> GuardPolicy:
        return cls.of(settings.allow_private_endpoints, settings.allowed_cidrs)

    def allows(self, address: str) -> bool:
        """Whether connecting to ``address`` (an IP literal) is allowed — also the check to run on
        an endpoint's resolved addresses when a subscription is created."""
        if self.allow_private:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        return refusal(ip) is None or any(
            ip in network for network in self.allowed_cidrs if ip.version == network.version
        )

    def check(self, address: str) -> None:
        """Raise ``BlockedAddress`` unless connecting to ``address`` is allowed."""
        if self.allows(address):
            return
        reason = refusal(address)
        # The address itself stays out of the message: attempt logs are shown to tenants, and
        # how internal names resolve is not theirs to learn.
        raise BlockedAddress(
            f"the endpoint resolves to a {reason} address; refused (allow it with --allow-private-endpoints"
            " or an allowed CIDR)"
        )

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """aiohttp's ``socket_factory``: checks the address, then makes the socket as aiohttp would."""
        family, type_, proto, _, sockaddr = addr_info
        self.check(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)


def guarded_connector(policy: GuardPolicy, **options: Any) -> aiohttp.TCPConnector:
    """A ``TCPConnector`` that only connects where ``policy`` allows (``options`` as for TCPConnector)."""
    return aiohttp.TCPConnector(socket_factory=policy.socket_factory, **options)


async def read_capped(response: aiohttp.ClientResponse, cap: int = BODY_CAP) -> bytes:
    """At most ``cap`` bytes of an answer. A longer answer is cut and its connection closed (not
    pooled), so a hostile endpoint cannot make us download or buffer an endless body."""
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = await response.content.read(cap - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not response.content.at_eof():
        response.close()
    return b"".join(chunks)


def make_session(policy: GuardPolicy, *, limit: int = 2048, limit_per_host: int = 64) -> aiohttp.ClientSession:
    """The session every outbound call shares (deliveries, challenges, samples): its connector only
    connects where ``policy`` allows, checked at connect time after DNS, so a name cannot be
    re-pointed inward later. ``limit`` bounds every endpoint together, ``limit_per_host`` one
    endpoint (a sender uses one connection at a time)."""
    connector = guarded_connector(policy, limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=60)
    # No session-wide timeout: every call brings its own (a subscription's timeoutMs, the challenge's 10 s).
    return aiohttp.ClientSession(
        connector=connector, headers={"User-Agent": USER_AGENT}, timeout=aiohttp.ClientTimeout(total=None)
    )


def snippet(body: bytes) -> str:
    """The start of an answer's body as one line, for error messages and the attempt log."""
    text = " ".join(body[:SNIPPET_BYTES].decode("utf-8", "replace").split())
    return text if len(text) <= 200 else text[:200] + "…"
