"""podtools fetch only from public addresses unless the engine allows private ones."""

from __future__ import annotations

import pytest

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
