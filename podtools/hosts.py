"""Which hosts an http(s) input may come from, and the addresses to connect to.

The configure sandbox shares the host's network (inputs may live on the publisher's own network),
so a dataset URL could otherwise point at the machine's own services (127.0.0.1), a cloud's
metadata endpoint (169.254.169.254) or anything on the private network. By default only public
addresses are fetched from, redirects included; an engine whose data lives on a private network
allows private hosts explicitly (C2D_ALLOW_PRIVATE_INPUT_HOSTS).

A name is resolved once, every address it resolves to is checked, and the connection goes to
those checked addresses (httpio.request's `addresses`), never to what the name resolves to a
moment later: a name that answers a public address when checked and 127.0.0.1 when connected
(DNS rebinding) reaches nothing private.

IPv6 addresses that carry an IPv4 address (IPv4-mapped, -compatible, -translated, NAT64, 6to4, Teredo)
are judged by the IPv4 address they lead to: Python 3.11's `is_global` calls `::127.0.0.1`,
`64:ff9b::7f00:1` and `2002:7f00:1::` global, and each of them can reach 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

# (host, port) -> the addresses the host resolves to, in the order to try them.
Resolver = Callable[[str, int], list[str]]

# 64:ff9b::/96 is NAT64's well-known prefix (RFC 6052); 64:ff9b:1::/48 its local-use prefix (RFC
# 8215), where the IPv4 address may sit anywhere: a private network's translator, never public.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
# ::a.b.c.d, deprecated "IPv4-compatible" addresses (RFC 4291 2.5.5.1); :: and ::1 fall in it too.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# ::ffff:0:a.b.c.d, "IPv4-translated" addresses of stateless translation (RFC 2765).
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


class HostRefused(Exception):
    pass


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is one a dataset may be fetched from without allowing private hosts."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return all(is_public(address) for address in embedded)
    return ip.is_global and not ip.is_multicast


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address leads to (both ends of a Teredo address), or None when
    it carries none. An address in the local-use NAT64 prefix leads to 0.0.0.0: refused."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.teredo is not None:
        return list(ip.teredo)
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip in _LOCAL_NAT64:
        return [ipaddress.IPv4Address(0)]
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE or ip in _IPV4_TRANSLATED:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return None


def check_public(url: str, resolver: Resolver = system_resolver) -> list[str]:
    """The addresses of the URL's host, each of them public, to connect to (and to nothing else);
    HostRefused when the host does not resolve or any of its addresses is not public."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise HostRefused("the URL names no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HostRefused("the URL's port is not a number") from None
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise HostRefused(f"the host does not resolve ({exc.__class__.__name__})") from None
    if not addresses:
        raise HostRefused("the host does not resolve")
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise HostRefused("the host resolves to something that is not an IP address") from None
        if not is_public(ip):
            raise HostRefused("the host is not a public address; this engine fetches only from public hosts")
    return addresses
