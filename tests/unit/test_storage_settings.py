"""The storage settings (c2d_common/storage.py) and the engine's checks of input locations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from c2d.common.v1 import job_pb2
from c2d_common.env import ConfigError
from c2d_common.storage import (
    IpfsSettings,
    ResultStoreTarget,
    S3Credentials,
    S3Settings,
    StorageRefused,
    StorageSettings,
)
from engine_svc.infra.http_inputs import http_options
from tests.servers.storage_suite import storage_environment


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ResultStoreTarget("local")),
        ("local", ResultStoreTarget("local")),
        ("s3://results", ResultStoreTarget("s3", "results", "")),
        ("s3://results/c2d/jobs/", ResultStoreTarget("s3", "results", "c2d/jobs/")),
        ("ipfs", ResultStoreTarget("ipfs", prefix="/c2d-results")),
        ("ipfs:/my/results/", ResultStoreTarget("ipfs", prefix="/my/results")),
    ],
)
def test_result_store_values(raw: str, expected: ResultStoreTarget) -> None:
    assert ResultStoreTarget.parse(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["s3://", "s3://Bad_Bucket/x", "s3://results/a/../b", "s3://results/a//b", "ftp://x", "ipfs:/a/../b"],
)
def test_result_store_values_that_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="C2D_RESULT_STORE"):
        ResultStoreTarget.parse(raw)


def test_a_store_holds_only_its_own_locations() -> None:
    store = ResultStoreTarget.parse("s3://results/jobs")
    assert store.holds("s3://results/jobs/abc/outputs/x")
    assert store.holds_job_result("abc", "s3://results/jobs/abc/outputs/x")
    assert not store.holds_job_result("abd", "s3://results/jobs/abc/outputs/x")
    for location in ("s3://results/other/x", "s3://other/jobs/x", "s3://results/jobs/../x", "file:///x"):
        assert not store.holds(location), location
    ipfs = ResultStoreTarget.parse("ipfs")
    assert ipfs.holds("ipfs://QmPHE4SqpsdtJqgo3YpEXzFW1cyY2A76BB4ygQD32hbPph")
    assert not ipfs.holds("ipfs://QmPHE4SqpsdtJqgo3YpEXzFW1cyY2A76BB4ygQD32hbPph/x")
    assert ipfs.publish_argument("abc") == "ipfs:/c2d-results/abc"
    assert store.publish_argument("abc") == "s3://results/jobs/abc"


def test_settings_from_the_environment() -> None:
    with storage_environment(
        {
            "C2D_RESULT_STORE": "s3://results/jobs",
            "C2D_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "C2D_S3_ACCESS_KEY_ID": "key",
            "C2D_S3_SECRET_ACCESS_KEY": "secret",
            "C2D_S3_RESULT_ACCESS_KEY_ID": "result-key",
            "C2D_S3_RESULT_SECRET_ACCESS_KEY": "result-secret",
            "C2D_S3_INPUT_BUCKETS": "datasets, more-data",
            "C2D_S3_PART_BYTES": str(8 * 1024 * 1024),
            "C2D_IPFS_API": "http://127.0.0.1:5001/",
            "C2D_RESULT_QUOTA_BYTES": "1000",
            "C2D_INPUT_STALL_SECONDS": "5",
        }
    ) as settings:
        assert settings.s3.input_buckets == ("datasets", "more-data")
        assert settings.s3.style() == "path"
        assert settings.ipfs.api_url == "http://127.0.0.1:5001"
        assert (settings.result_quota_bytes, settings.input_stall_seconds) == (1000, 5)
        env = settings.podtools_env("configure")
        assert env["C2D_S3_SECRET_ACCESS_KEY"] == "secret" and env["C2D_S3_PART_BYTES"] == str(
            8 * 1024 * 1024
        )
        assert "C2D_IPFS_GATEWAY" not in env and "C2D_S3_SESSION_TOKEN" not in env
        assert not [name for name in env if name.startswith("C2D_S3_RESULT_")]
        publish = settings.podtools_env("publish")
        assert publish["C2D_S3_ACCESS_KEY_ID"] == "result-key"
        assert publish["C2D_S3_SECRET_ACCESS_KEY"] == "result-secret"
        assert "secret" not in publish.values() and "key" not in publish.values()
        assert settings.result_s3.access_key_id == "result-key"
        assert settings.s3.access_key_id == "key"


def test_each_phase_gets_only_the_key_it_uses() -> None:
    """Dataset credentials reach the configuration phase alone; publishing holds the result
    store's key, and configuration that one only for a job reading a result asset, only for the
    store's bucket."""
    settings = StorageSettings(
        result_store=ResultStoreTarget.parse("s3://results/jobs"),
        s3=S3Settings(access_key_id="data-key", secret_access_key="data-secret", input_buckets=("data",)),
        result_credentials=S3Credentials("result-key", "result-secret"),
        ipfs=IpfsSettings(api_url="http://127.0.0.1:5001", gateway_url="http://127.0.0.1:8080"),
    )
    configure = settings.podtools_env("configure")
    assert configure["C2D_S3_ACCESS_KEY_ID"] == "data-key"
    assert "result-secret" not in configure.values()
    reading_results = settings.podtools_env("configure", reads_results=True)
    assert reading_results["C2D_S3_RESULT_BUCKET"] == "results"
    assert reading_results["C2D_S3_RESULT_SECRET_ACCESS_KEY"] == "result-secret"
    publish = settings.podtools_env("publish")
    assert publish["C2D_S3_SECRET_ACCESS_KEY"] == "result-secret"
    assert "data-secret" not in publish.values() and "C2D_IPFS_GATEWAY" not in publish
    assert settings.reads_result_store(["s3://results/jobs/a/b/outputs/x"])
    assert not settings.reads_result_store(["s3://data/x", "https://example.org/x"])
    # An IPFS or local result store: publishing gets no S3 key at all.
    for store in ("ipfs", "local"):
        other = replace(settings, result_store=ResultStoreTarget.parse(store), result_credentials=None)
        assert not [n for n in other.podtools_env("publish") if n.startswith("C2D_S3_")]


def test_one_key_for_inputs_and_an_s3_result_store_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        StorageSettings(
            result_store=ResultStoreTarget.parse("s3://results/jobs"),
            s3=S3Settings(access_key_id="k", secret_access_key="s", input_buckets=("data",)),
        ).check()
    assert "C2D_S3_RESULT_ACCESS_KEY_ID" in str(refused.value)
    # Without s3:// inputs the suite's key serves the result store alone: allowed.
    StorageSettings(
        result_store=ResultStoreTarget.parse("s3://results/jobs"),
        s3=S3Settings(access_key_id="k", secret_access_key="s"),
    ).check()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"C2D_RESULT_STORE": "ipfs"}, "needs C2D_IPFS_API"),
        ({"C2D_S3_ACCESS_KEY_ID": "key"}, "both C2D_S3_ACCESS_KEY_ID and C2D_S3_SECRET_ACCESS_KEY"),
        ({"C2D_S3_PART_BYTES": "1024"}, "at least 5 MiB"),
        ({"C2D_S3_INPUT_BUCKETS": "ok,Not_A_Bucket"}, "is not a bucket name"),
        ({"C2D_S3_ADDRESSING_STYLE": "sideways"}, "path, virtual or auto"),
        ({"C2D_RESULT_QUOTA_BYTES": "lots"}, "is not an integer"),
    ],
)
def test_settings_that_cannot_work_stop_the_service_at_start(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message), storage_environment(values):
        pass


def test_s3_inputs_come_only_from_allowed_buckets_and_never_from_the_result_store() -> None:
    none = StorageSettings()
    with pytest.raises(StorageRefused, match="serves no s3:// data"):
        none.check_s3_input("s3://datasets/a.csv")
    some = StorageSettings(s3=S3Settings(input_buckets=("datasets",)))
    assert some.check_s3_input("s3://datasets/weather/a.csv") == ("datasets", "weather/a.csv")
    with pytest.raises(StorageRefused, match="must come from the buckets"):
        some.check_s3_input("s3://private/a.csv")
    for url in ("s3://datasets", "s3://datasets/", "s3://datasets/a?versionId=1", "s3://DATASETS/a"):
        with pytest.raises(StorageRefused):
            some.check_s3_input(url)
    shared = StorageSettings(
        result_store=ResultStoreTarget.parse("s3://shared/results"), s3=S3Settings(input_buckets=("*",))
    )
    assert shared.check_s3_input("s3://shared/datasets/a.csv")
    with pytest.raises(StorageRefused, match="may not name the result store"):
        shared.check_s3_input("s3://shared/results/job/outputs/x")


def test_ipfs_inputs_are_plain_cids_with_plain_paths() -> None:
    from c2d_common.storage import IpfsSettings

    settings = StorageSettings(ipfs=IpfsSettings(gateway_url="http://127.0.0.1:8080"))
    cid = "QmPHE4SqpsdtJqgo3YpEXzFW1cyY2A76BB4ygQD32hbPph"
    assert settings.check_ipfs_input(f"ipfs://{cid}") == cid
    assert settings.check_ipfs_input(f"ipfs://{cid}/data/a.csv") == f"{cid}/data/a.csv"
    for url in (f"ipfs://{cid}/../x", f"ipfs://{cid}?x=1", "ipfs://not-a-cid!", f"ipfs://{cid}/a/./b"):
        with pytest.raises(StorageRefused):
            settings.check_ipfs_input(url)
    with pytest.raises(StorageRefused, match="C2D_IPFS_GATEWAY or C2D_IPFS_API"):
        StorageSettings().check_ipfs_input(f"ipfs://{cid}")


def test_publisher_headers_and_methods_podtools_can_send() -> None:
    location = job_pb2.FileLocation(url="https://example.org/a", method="get")
    location.headers["Authorization"] = "Bearer x"
    assert http_options(location, "dataset d file 0") == {
        "method": "GET",
        "headers": {"Authorization": "Bearer x"},
    }
    assert http_options(job_pb2.FileLocation(url="https://example.org/a"), "f") == {}


@pytest.mark.parametrize(
    ("headers", "method", "message"),
    [
        ({"Host": "internal"}, "", "cannot send"),
        ({"Range": "bytes=5-"}, "", "cannot send"),
        ({"Accept-Encoding": "gzip"}, "", "cannot send"),
        ({"Bad Name": "x"}, "", "cannot send"),
        ({"X-Token": "a\r\nInjected: yes"}, "", "malformed value"),
        ({}, "DELETE", "GET or POST"),
    ],
)
def test_publisher_headers_that_are_refused(headers: dict[str, str], method: str, message: str) -> None:
    location = job_pb2.FileLocation(url="https://example.org/a", method=method)
    location.headers.update(headers)
    with pytest.raises(ValueError, match=message) as caught:
        http_options(location, "dataset d file 0")
    assert "Injected" not in str(caught.value)
