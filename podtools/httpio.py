"""Plain HTTP/1.1 requests with http.client: a connection per request, a socket timeout that
bounds every wait (connect, headers, each read), no proxies, no automatic redirects."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

USER_AGENT = "c2d-podtools/0.2"


class BadUrl(Exception):
    pass


def connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """An unopened connection to the URL's host, and the path (with query) to ask for."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadUrl("not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise BadUrl("the URL's port is not a number") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context()
        return http.client.HTTPSConnection(parts.hostname, port, timeout=timeout, context=context), target
    return http.client.HTTPConnection(parts.hostname, port, timeout=timeout), target


def request(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 60,
) -> http.client.HTTPResponse:
    """Sends the request and answers the response (headers read, body not). The caller closes it."""
    conn, target = connection(url, timeout)
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
