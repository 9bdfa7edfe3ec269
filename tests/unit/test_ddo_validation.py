"""validate_ddo: what a publisher may register, and the field named when it may not."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from c2d_common.errors import FailedPrecondition, InvalidArgument
from c2d_common.file_urls import FileUrlPolicy
from provider_svc.domain.assets import (
    MAX_DDO_BYTES,
    MAX_FILES,
    AssetStore,
    algorithm_checksums,
    file_location,
    validate_ddo,
)

SCHEMES = ("http", "https", "s3", "ipfs", "file")
SHA = "a" * 64


def dataset(**service: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "weather", "type": "dataset"},
        "services": [{"type": "compute", "files": [{"url": "https://example.org/data.csv"}], **service}],
    }


def algorithm(container: Any = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "mean", "type": "algorithm"}
    if container is not None:
        metadata["algorithm"] = {"container": container}
    return {"metadata": metadata, "services": [{"type": "access", "files": [{"url": "s3://bucket/algo.py"}]}]}


def edited(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    ddo = copy.deepcopy(base)
    change(ddo)
    return ddo


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets a dotted path ('services.0.files.0.url') to value."""

    def change(ddo: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = ddo
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(ddo: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = ddo
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return change


ACCEPTED = {
    "minimal-dataset": dataset(),
    "dataset-with-compute-policy": dataset(
        compute={
            "allowRawAlgorithm": True,
            "allowNetworkAccess": False,
            "publisherTrustedAlgorithms": [
                {"did": "did:op:" + "1" * 64, "filesChecksum": SHA, "containerSectionChecksum": SHA}
            ],
            "publisherTrustedAlgorithmPublishers": ["0x" + "9b" * 20],
        }
    ),
    "checksum-and-size": edited(dataset(), _set("services.0.files.0", {"url": "ipfs://Qm", "checksum": SHA})),
    "size-as-struct-float": edited(dataset(), _set("services.0.files.0.contentLength", 1234.0)),
    "size-as-int": edited(dataset(), _set("services.0.files.0.contentLength", 0)),
    "file-url": edited(dataset(), _set("services.0.files.0.url", "file:///srv/data.csv")),
    "http-url": edited(dataset(), _set("services.0.files.0.url", "http://example.org/x")),
    "access-and-compute": edited(
        dataset(), lambda d: d["services"].append({"type": "access", "files": [{"url": "https://x/y"}]})
    ),
    "sixteen-services": edited(dataset(), lambda d: d.__setitem__("services", d["services"] * 16)),
    "max-files": edited(dataset(), _set("services.0.files", [{"url": "https://x/y"}] * MAX_FILES)),
    "name-512-chars": edited(dataset(), _set("metadata.name", "n" * 512)),
    "algorithm-without-container": algorithm(),
    "algorithm-with-container": algorithm({"entrypoint": "python3 $ALGO", "runtime": "python3"}),
    "algorithm-empty-container": algorithm({}),
    "compute-empty-object": dataset(compute={}),
    "extra-fields-kept": edited(dataset(), _set("metadata.description", "rain in Spain")),
    "http-post": edited(dataset(), _set("services.0.files.0.method", "POST")),
    "http-get-lowercase": edited(dataset(), _set("services.0.files.0.method", "get")),
}


@pytest.mark.parametrize("ddo", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_valid_ddos_are_accepted(ddo: dict[str, Any]) -> None:
    validate_ddo(ddo, SCHEMES)


# (ddo, text the message must contain: the field at fault)
REJECTED: dict[str, tuple[Any, str]] = {
    "not-an-object": (["metadata"], "JSON object"),
    "empty-object": ({}, "metadata"),
    "metadata-string": (edited(dataset(), _set("metadata", "x")), "metadata"),
    "name-missing": (edited(dataset(), _delete("metadata.name")), "metadata.name"),
    "name-empty": (edited(dataset(), _set("metadata.name", "")), "metadata.name"),
    "name-513-chars": (edited(dataset(), _set("metadata.name", "n" * 513)), "metadata.name"),
    "name-number": (edited(dataset(), _set("metadata.name", 5)), "metadata.name"),
    "type-missing": (edited(dataset(), _delete("metadata.type")), "metadata.type"),
    "type-unknown": (edited(dataset(), _set("metadata.type", "model")), "metadata.type"),
    "container-string": (algorithm("python3"), "metadata.algorithm.container"),
    "entrypoint-empty": (algorithm({"entrypoint": ""}), "metadata.algorithm.container.entrypoint"),
    "entrypoint-list": (algorithm({"entrypoint": ["python3", "$ALGO"]}), "entrypoint"),
    "entrypoint-too-long": (algorithm({"entrypoint": "x" * 1025}), "entrypoint"),
    "services-missing": (edited(dataset(), _delete("services")), "services"),
    "services-empty": (edited(dataset(), _set("services", [])), "services"),
    "services-object": (edited(dataset(), _set("services", {"type": "compute"})), "services"),
    "seventeen-services": (
        edited(dataset(), lambda d: d.__setitem__("services", d["services"] * 17)),
        "services",
    ),
    "service-string": (edited(dataset(), _set("services.0", "compute")), "services[0]"),
    "service-type-unknown": (edited(dataset(), _set("services.0.type", "download")), "services[0].type"),
    "second-service-bad": (
        edited(dataset(), lambda d: d["services"].append({"type": "access"})),
        "services[1].files",
    ),
    "files-missing": (edited(dataset(), _delete("services.0.files")), "services[0].files"),
    "files-empty": (edited(dataset(), _set("services.0.files", [])), "services[0].files"),
    "too-many-files": (
        edited(dataset(), _set("services.0.files", [{"url": "https://x/y"}] * (MAX_FILES + 1))),
        "services[0].files",
    ),
    "file-string": (
        edited(dataset(), _set("services.0.files.0", "https://x/y")),
        "services[0].files[0] must be an object",
    ),
    "url-missing": (edited(dataset(), _set("services.0.files.0", {})), "services[0].files[0].url"),
    "url-number": (edited(dataset(), _set("services.0.files.0.url", 5)), "services[0].files[0].url"),
    "url-empty": (edited(dataset(), _set("services.0.files.0.url", "")), "services[0].files[0].url"),
    "url-ftp": (edited(dataset(), _set("services.0.files.0.url", "ftp://x/y")), "scheme 'ftp'"),
    "url-javascript": (edited(dataset(), _set("services.0.files.0.url", "javascript:alert(1)")), "url"),
    "url-relative-path": (edited(dataset(), _set("services.0.files.0.url", "../../etc/passwd")), "url"),
    "second-file-bad": (
        edited(dataset(), lambda d: d["services"][0]["files"].append({"url": "gopher://x"})),
        "services[0].files[1].url",
    ),
    "checksum-uppercase": (
        edited(dataset(), _set("services.0.files.0.checksum", SHA.upper())),
        "services[0].files[0].checksum",
    ),
    "checksum-short": (edited(dataset(), _set("services.0.files.0.checksum", "abc")), "checksum"),
    "checksum-number": (edited(dataset(), _set("services.0.files.0.checksum", 5)), "checksum"),
    "checksum-with-algorithm-prefix": (
        edited(dataset(), _set("services.0.files.0.checksum", "sha256:" + SHA)),
        "checksum",
    ),
    "size-negative": (
        edited(dataset(), _set("services.0.files.0.contentLength", -1)),
        "services[0].files[0].contentLength",
    ),
    "size-string": (edited(dataset(), _set("services.0.files.0.contentLength", "12")), "contentLength"),
    "size-nan": (edited(dataset(), _set("services.0.files.0.contentLength", float("nan"))), "contentLength"),
    "compute-string": (dataset(compute="yes"), "services[0].compute"),
    "compute-null": (dataset(compute=None), "services[0].compute"),
    "trusted-algorithms-string": (
        dataset(compute={"publisherTrustedAlgorithms": "did:op:x"}),
        "services[0].compute.publisherTrustedAlgorithms",
    ),
    "trusted-publishers-object": (
        dataset(compute={"publisherTrustedAlgorithmPublishers": {}}),
        "services[0].compute.publisherTrustedAlgorithmPublishers",
    ),
    "too-large": (edited(dataset(), _set("metadata.description", "x" * MAX_DDO_BYTES)), "larger than"),
    "method-delete": (
        edited(dataset(), _set("services.0.files.0.method", "DELETE")),
        "method must be GET or POST",
    ),
    "method-number": (edited(dataset(), _set("services.0.files.0.method", 1)), "method must be GET or POST"),
    "post-to-s3": (
        edited(dataset(), _set("services.0.files.0", {"url": "s3://bucket/key", "method": "POST"})),
        "POST is for http(s) files only",
    ),
    "image-number": (algorithm({"image": 5}), "metadata.algorithm.container.image"),
    "tag-list": (algorithm({"image": "python", "tag": ["3"]}), "metadata.algorithm.container.tag"),
    "image-checksum-two-lines": (
        algorithm({"image": "python", "checksum": "sha256:1\nsha256:2"}),
        "metadata.algorithm.container.checksum",
    ),
}


@pytest.mark.parametrize(("ddo", "field"), REJECTED.values(), ids=REJECTED.keys())
def test_invalid_ddos_are_rejected_naming_the_field(ddo: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_ddo(ddo, SCHEMES)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(caught.value).startswith("invalid DDO: ")
    assert field in str(caught.value)


def test_file_urls_are_rejected_when_the_provider_does_not_allow_them() -> None:
    ddo = edited(dataset(), _set("services.0.files.0.url", "file:///etc/passwd"))
    with pytest.raises(InvalidArgument, match=r"services\[0\]\.files\[0\]\.url has scheme 'file'"):
        validate_ddo(ddo, ("http", "https", "s3", "ipfs"))


def test_validation_does_not_change_the_ddo() -> None:
    ddo = dataset(compute={"allowRawAlgorithm": True})
    before = copy.deepcopy(ddo)
    validate_ddo(ddo, SCHEMES)
    assert ddo == before


# Inputs that validate_ddo lets through or crashes on, so that PublishAsset or a later Start answers
# INTERNAL. Each should be an InvalidArgument naming the field.
BUGS: dict[str, tuple[Any, str]] = {
    "algorithm-section-string": (
        {**algorithm(), "metadata": {"name": "a", "type": "algorithm", "algorithm": "x"}},
        "BUG: provider_svc/domain/assets.py:74 calls .get() on metadata.algorithm without checking it is "
        "an object: AttributeError, PublishAsset answers INTERNAL",
    ),
    "algorithm-section-list": (
        {**algorithm(), "metadata": {"name": "a", "type": "algorithm", "algorithm": ["x"]}},
        "BUG: provider_svc/domain/assets.py:74 calls .get() on metadata.algorithm without checking it is "
        "an object: AttributeError, PublishAsset answers INTERNAL",
    ),
    "url-bad-ipv6-host": (
        edited(dataset(), _set("services.0.files.0.url", "http://[")),
        "BUG: provider_svc/domain/assets.py:98 urlparse raises ValueError('Invalid IPv6 URL'), which is not "
        "caught: PublishAsset answers INTERNAL",
    ),
    "entrypoint-unbalanced-quote": (
        algorithm({"entrypoint": 'python3 "$ALGO'}),
        "BUG: validate_ddo accepts an entrypoint that shlex.split cannot split; Start with the algorithm "
        "then fails in provider_svc/domain/compute.py:170 with ValueError -> INTERNAL",
    ),
    "runtime-number": (
        algorithm({"runtime": 3}),
        "BUG: validate_ddo does not check metadata.algorithm.container.runtime; a non-string makes "
        "AlgorithmInput(runtime=...) raise TypeError in Start -> INTERNAL",
    ),
    "runtime-bad-characters": (
        algorithm({"runtime": "python3; rm -rf /"}),
        "BUG: an asset's runtime is not checked against the runtime alphabet that raw algorithms must "
        "follow (compute.py _check_runtime)",
    ),
    "size-beyond-int64": (
        edited(dataset(), _set("services.0.files.0.contentLength", 1e300)),
        "BUG: contentLength is only checked to be >= 0; 1e300 does not fit FileLocation.size (int64) and "
        "Start fails in provider_svc/domain/compute.py:52 with ValueError -> INTERNAL",
    ),
    "size-boolean": (
        edited(dataset(), _set("services.0.files.0.contentLength", True)),
        "BUG: isinstance(True, int) holds, so a boolean contentLength is taken as a byte count",
    ),
}


@pytest.mark.parametrize(
    "ddo",
    [pytest.param(ddo, id=name) for name, (ddo, _bug_that_was) in BUGS.items()],
)
def test_ddos_that_slip_through_or_crash_are_rejected(ddo: Any) -> None:
    with pytest.raises(InvalidArgument):
        validate_ddo(ddo, SCHEMES)


@pytest.mark.parametrize(("method", "expected"), [(None, ""), ("GET", ""), ("post", "POST")])
def test_the_publisher_s_method_reaches_the_engine(method: str | None, expected: str) -> None:
    item: dict[str, Any] = {"url": "https://example.org/q", "headers": {"Authorization": "Bearer t"}}
    if method is not None:
        item["method"] = method
    location = file_location(item)
    assert location.method == expected
    assert dict(location.headers) == {"Authorization": "Bearer t"}


def test_the_container_checksum_pins_the_runtime_even_beside_an_image() -> None:
    """Two algorithms that differ only in the runtime that runs them are two algorithms: a trust
    entry for one must not let the other run."""
    base = {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11"}
    one = algorithm_checksums(algorithm({**base, "runtime": "python3"})).container
    other = algorithm_checksums(algorithm({**base, "runtime": "python3-science"})).container
    assert one != other
    assert one != algorithm_checksums(algorithm({**base, "runtime": "python3", "tag": "3.12"})).container
    # What docs/signed-requests.md says it is, so tools in other languages compute the same.
    text = "python3 $ALGO\npython:3.11\npython3\n"
    assert one == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        b'{"ddo": {}}',
        b'{"publisher": 5, "ddo": {}}',
        b'{"publisher": "0x", "ddo": []}',
        b"\xff\xfe",
    ],
    ids=["empty", "not-json", "no-publisher", "publisher-number", "ddo-list", "not-utf8"],
)
def test_a_damaged_asset_record_is_a_failed_precondition_not_an_internal_error(
    tmp_path: Path, damage: bytes
) -> None:
    store = AssetStore(tmp_path, FileUrlPolicy(roots=()))
    asset = store.publish("0x" + "1" * 40, dataset())
    assert store.get(asset.did).ddo["id"] == asset.did
    (tmp_path / f"{asset.did.removeprefix('did:op:')}.json").write_bytes(damage)
    with pytest.raises(FailedPrecondition) as caught:
        store.get(asset.did)
    assert "damaged" in str(caught.value) and "publish it again" in str(caught.value)
