"""podtools fetch only from public addresses unless the engine allows private ones: a name is
looked up once, every address checked (IPv6 forms of IPv4 addresses by the IPv4 rules), and the
connection goes to the checked address only."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest

from podtools import httpio
from podtools.fetch import HttpSource, Options
from podtools.hosts import HostRefused, check_public


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:50052/",
        "http://localhost/x",
        "http://10.1.2.3/data.csv",
        "http://192.168.0.10/data.csv",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http:///no-host",
    ],
)
def test_non_public_hosts_are_refused(url: str) -> None:
    with pytest.raises(HostRefused):
        check_public(url)


@pytest.mark.parametrize("url", ["http://8.8.8.8/data.csv", "https://[2606:4700:4700::1111]/x"])
def test_public_addresses_pass(url: str) -> None:
    check_public(url)  # literal addresses: no name lookup, no traffic


# --- IPv6 addresses that lead to IPv4 ones ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://[::127.0.0.1]/",  # IPv4-compatible (Python 3.11 calls it global)
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",  # 169.254.169.254, mapped
        "http://[::ffff:0:7f00:1]/",  # IPv4-translated
        "http://[64:ff9b::7f00:1]/",  # NAT64 to 127.0.0.1 (Python 3.11 calls it global)
        "http://[64:ff9b::a00:1]/",  # NAT64 to 10.0.0.1
        "http://[64:ff9b:1::808:808]/",  # local-use NAT64: a private translator
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1 (Python 3.11 calls it global)
        "http://[2002:c0a8:1::1]/",  # 6to4 of 192.168.0.1
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo, its client 192.0.2.45
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(url: str) -> None:
    with pytest.raises(HostRefused, match="not a public address"):
        check_public(url)


@pytest.mark.parametrize(
    "url", ["http://[64:ff9b::808:808]/", "http://[2002:808:808::1]/", "http://[::ffff:8.8.8.8]/"]
)
def test_ipv6_forms_of_public_ipv4_addresses_pass(url: str) -> None:
    check_public(url)


# --- one lookup, and the connection goes where it was checked ------------------------------------------

PUBLIC = "93.184.216.34"


class RebindingResolver:
    """Answers a public address first and 127.0.0.1 afterwards, as a rebinding DNS server does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return [PUBLIC] if len(self.calls) == 1 else ["127.0.0.1"]


def test_a_name_with_any_private_address_is_refused() -> None:
    with pytest.raises(HostRefused, match="not a public address"):
        check_public("http://mixed.example/x", lambda host, port: [PUBLIC, "10.0.0.7"])


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "unknown")

    with pytest.raises(HostRefused, match="does not resolve"):
        check_public("http://nowhere.example/x", fails)
    with pytest.raises(HostRefused, match="does not resolve"):
        check_public("http://nowhere.example/x", lambda host, port: [])


def test_the_connection_goes_to_the_checked_address_never_to_a_second_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver = RebindingResolver()
    connected: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        connected.append(address)
        raise ConnectionRefusedError("no network in a unit test")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("looked the name up again"))
    source = HttpSource("http://rebind.example:8080/data.csv", Options(resolver=resolver))
    with pytest.raises(ConnectionRefusedError):
        source.open(0)
    assert resolver.calls == [("rebind.example", 8080)]
    assert connected == [(PUBLIC, 8080)]


def test_https_to_a_checked_address_verifies_the_certificate_by_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = socket.socket()  # never connected: the TLS handshake is stopped before it starts
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: plain)
    conn, target = httpio.connection("https://data.example/set.csv?v=2", 5, [PUBLIC])
    assert isinstance(conn, http.client.HTTPSConnection) and target == "/set.csv?v=2"
    seen: dict[str, object] = {}

    def wrap_socket(sock: socket.socket, server_hostname: str | None = None, **kwargs: object) -> None:
        seen["server_hostname"] = server_hostname
        raise ssl.SSLError("stop here")

    context = conn.tls_context  # type: ignore[attr-defined]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    monkeypatch.setattr(context, "wrap_socket", wrap_socket)
    try:
        with pytest.raises(ssl.SSLError):
            conn.connect()
    finally:
        plain.close()
    # SNI and the certificate's name check: the host's name, though the address was connected to.
    assert seen == {"server_hostname": "data.example"}
    assert (conn.host, conn.port) == ("data.example", 443)  # what the Host header says
