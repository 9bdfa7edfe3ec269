"""Plain HTTP/1.1 requests with http.client: a connection per request, a socket timeout that
bounds every wait (connect, headers, each read), no proxies, no automatic redirects.

With `addresses` (checked by hosts.check_public), the connection goes to one of those addresses
and nowhere else, while the request still names the URL's host: in Host, and for https in the TLS
server name (SNI) and the certificate check, which are by the host name, not the address.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

USER_AGENT = "c2d-podtools/0.2"


class BadUrl(Exception):
    pass


class _PinnedConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, addresses: Sequence[str], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.addresses = tuple(addresses)

    def connect(self) -> None:
        self.sock = _connect_to_any(self.addresses, self.port, self.timeout)


class _PinnedTlsConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, addresses: Sequence[str], timeout: float, context):
        super().__init__(host, port, timeout=timeout, context=context)
        self.addresses = tuple(addresses)
        self.tls_context = context

    def connect(self) -> None:
        sock = _connect_to_any(self.addresses, self.port, self.timeout)
        try:
            self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _connect_to_any(addresses: Sequence[str], port: int, timeout: float | None) -> socket.socket:
    """A connection to the first of the addresses that answers (as socket.create_connection tries
    a name's addresses); numeric addresses, so nothing is looked up again."""
    failure: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout)
        except OSError as exc:
            failure = exc
            continue
        # As http.client does: the request's head is not held back waiting for an ACK.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise failure or OSError("no address to connect to")


def connection(
    url: str, timeout: float, addresses: Sequence[str] | None = None
) -> tuple[http.client.HTTPConnection, str]:
    """An unopened connection to the URL's host (to one of `addresses` only, when given), and the
    path (with query) to ask for."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadUrl("not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise BadUrl("the URL's port is not a number") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context()
        if addresses is not None:
            return _PinnedTlsConnection(host, port or 443, addresses, timeout, context), target
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context), target
    if addresses is not None:
        return _PinnedConnection(host, port or 80, addresses, timeout), target
    return http.client.HTTPConnection(host, port, timeout=timeout), target


def request(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 60,
    addresses: Sequence[str] | None = None,
) -> http.client.HTTPResponse:
    """Sends the request and answers the response (headers read, body not). The caller closes it.
    With addresses, connects only to them (see the module's docstring)."""
    conn, target = connection(url, timeout, addresses)
    # Connection: close, so that closing the response closes the socket.
    all_headers = {
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        "Connection": "close",
        **(headers or {}),
    }
    try:
        conn.request(method, target, body=body, headers=all_headers)
        response = conn.getresponse()
    except BaseException:
        conn.close()
        raise
    return response


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port
