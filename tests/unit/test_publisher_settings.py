"""C2D_PUBLISHERS: who may publish on the provider, read at start with clear errors."""

from __future__ import annotations

import pytest

from c2d_common.env import ConfigError
from c2d_common.errors import PermissionDenied
from provider_svc.config import ProviderSettings
from provider_svc.domain.assets import PublisherPolicy, provider_side_file

A = "0x" + "ab" * 20
B = "0xAbCdEf0123456789aBcDeF0123456789abCDef01"


def test_unset_lists_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("C2D_PUBLISHERS", raising=False)
    policy = ProviderSettings.from_env().publisher_policy()
    assert policy == PublisherPolicy()
    # Anyone publishes, nobody names provider-side files.
    assert policy.check_publisher(A) is False


def test_addresses_are_listed_whatever_their_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C2D_PUBLISHERS", f" {A} ,{B},,")
    policy = ProviderSettings.from_env().publisher_policy()
    assert policy.check_publisher(A.upper().replace("0X", "0x")) is True
    assert policy.check_publisher(B.lower()) is True
    with pytest.raises(PermissionDenied, match="C2D_PUBLISHERS"):
        policy.check_publisher("0x" + "cd" * 20)


def test_star_lets_anyone_publish_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C2D_PUBLISHERS", "*")
    assert ProviderSettings.from_env().publisher_policy().check_publisher(A) is True


@pytest.mark.parametrize("entry", ["0x12", "alice", A + "00", "0x" + "zz" * 20, "x" * 200])
def test_an_entry_that_is_no_address_stops_the_provider_at_start(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("C2D_PUBLISHERS", f"{A},{entry}")
    with pytest.raises(ConfigError, match="C2D_PUBLISHERS") as raised:
        ProviderSettings.from_env()
    assert len(str(raised.value)) < 300


def test_provider_side_files_are_file_and_s3() -> None:
    def ddo(*files: dict[str, str]) -> dict[str, object]:
        return {"services": [{"files": list(files)}]}

    assert provider_side_file(ddo({"url": "https://e.org/a"}, {"type": "ipfs", "hash": "Qm"})) is None
    assert provider_side_file(ddo({"url": "https://e.org/a"}, {"url": "file:///x"})) == (
        "services[0].files[1]",
        "file",
    )
    for s3 in ({"type": "s3", "bucket": "b", "objectPath": "k"}, {"url": "S3://b/k"}):
        assert provider_side_file(ddo(s3)) == ("services[0].files[0]", "s3")
