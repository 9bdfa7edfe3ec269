"""Where an S3 result store keeps a job's results, and which of those keys an input may name: a
job's output under its random publish id (a result asset's file), nothing else of the store."""

from __future__ import annotations

import pytest

from c2d_common.env import ConfigError
from c2d_common.storage import (
    ResultStoreTarget,
    S3Settings,
    StorageRefused,
    StorageSettings,
    split_s3_location,
)

JOB = "ab" * 16
PUBLISH = "cd" * 16
STORE = StorageSettings(result_store=ResultStoreTarget.parse("s3://results/jobs"))


def test_a_location_s_key_is_taken_whole() -> None:
    assert split_s3_location("s3://results/jobs/x/outputs/a#b?c") == ("results", "jobs/x/outputs/a#b?c")
    assert split_s3_location("s3://results") == ("results", "")
    assert split_s3_location("file:///x") == ("", "")
    assert STORE.result_store.holds("s3://results/jobs/x/outputs/a#b")
    assert not STORE.result_store.holds("s3://results/other/x#jobs/")


@pytest.mark.parametrize(
    "name", ["first.txt", "deep/second.bin", "a%23b", "q%3Fx", "caf%C3%A9/%E6%97%A5.txt", "100%25"]
)
def test_a_job_s_output_may_be_a_result_asset_s_input(name: str) -> None:
    url = f"s3://results/jobs/{JOB}/{PUBLISH}/outputs/{name}"
    # No C2D_S3_INPUT_BUCKETS needed: the provider alone knows such a location.
    assert STORE.check_s3_input(url) == ("results", f"jobs/{JOB}/{PUBLISH}/outputs/{name}")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"s3://results/jobs/{JOB}/outputs/first.txt", "may not name the result store"),  # no publish id
        (f"s3://results/jobs/{JOB}/{PUBLISH}/logs/algorithm.stdout.log", "may not name the result store"),
        (f"s3://results/jobs/{JOB}/{PUBLISH.upper()}/outputs/x", "may not name the result store"),
        (f"s3://results/jobs/{JOB}/{PUBLISH}/outputs/a b", "may not name the result store"),
        (f"s3://results/jobs/{JOB}/{PUBLISH}/outputs/a#b", "may not name the result store"),
        (f"s3://results/jobs/{JOB}/{PUBLISH}/outputs/", "must be a plain path"),
        (f"s3://results/jobs/{JOB}/{PUBLISH}/outputs/../../x", "must be a plain path"),
        (f"s3://results/./jobs/{JOB}/{PUBLISH}/outputs/x", "must be a plain path"),
        (f"s3://results//jobs/{JOB}/{PUBLISH}/outputs/x", "must be a plain path"),
        ("s3://results/elsewhere/data.csv", "serves no s3:// data"),  # outside the store: the usual rules
    ],
)
def test_nothing_else_of_the_result_store_may_be_an_input(url: str, reason: str) -> None:
    with pytest.raises(StorageRefused, match=reason):
        STORE.check_s3_input(url)


def test_outside_the_store_s_prefix_its_bucket_is_an_ordinary_input_bucket() -> None:
    shared = StorageSettings(
        result_store=ResultStoreTarget.parse("s3://shared/results"), s3=S3Settings(input_buckets=("shared",))
    )
    assert shared.check_s3_input("s3://shared/datasets/a.csv") == ("shared", "datasets/a.csv")


@pytest.mark.parametrize("raw", ["s3://results/jobs#x", "s3://results/jobs?x=1", "s3://results/jobs?"])
def test_a_store_prefix_with_url_delimiters_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="may not hold"):
        ResultStoreTarget.parse(raw)
