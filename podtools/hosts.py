"""Which hosts an http(s) input may come from.

The configure sandbox shares the host's network (inputs may live on the publisher's own network),
so a dataset URL could otherwise point at the machine's own services (127.0.0.1), a cloud's
metadata endpoint (169.254.169.254) or anything on the private network. By default only public
addresses are fetched from, redirects included; an engine whose data lives on a private network
allows private hosts explicitly (C2D_ALLOW_PRIVATE_INPUT_HOSTS).

Left open: a name that resolves to a public address when checked and to a private one when
connected (DNS rebinding). Pinning the checked address would close it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse


class HostRefused(Exception):
    pass


def check_public(url: str) -> None:
    host = urlparse(url).hostname
    if not host:
        raise HostRefused("the URL names no host")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError as exc:
        raise HostRefused(f"the host does not resolve ({exc.__class__.__name__})") from None
    for address in addresses:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            raise HostRefused("the host is not a public address; this engine fetches only from public hosts")
