"""Result assets (the seed's "creation of new assets"): a finished job's outputs published as a new
dataset owned by the consumer, whose files are the stored results, usable as input to later jobs,
from the local result store, S3 (moto's server) or IPFS (a js-ipfs node); a publisher's DDO still
reads nothing of the result store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.status import JobStatus
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, OTHER_CONSUMER, Suite, running_suite
from tests.integration import jobs
from tests.servers.ipfs import shared_ipfs_node, unavailable_reason
from tests.servers.s3 import RESULT_ACCESS_KEY, S3Server, shared_s3_server
from tests.servers.storage_suite import storage_suite

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.asyncio(loop_scope="module")]

T = 30
PRODUCER = (
    "import os\n"
    "os.makedirs('/data/outputs/deep', exist_ok=True)\n"
    "open('/data/outputs/first.txt', 'w').write('first result\\n')\n"
    "open('/data/outputs/deep/second.bin', 'wb').write(bytes(range(256)) * 100)\n"
)
READER = (
    "import json, os, hashlib\n"
    "did = json.loads(os.environ['DIDS'])[0]\n"
    "folder = f'/data/inputs/{did}'\n"
    "files = {n: hashlib.sha256(open(f'{folder}/{n}', 'rb').read()).hexdigest()\n"
    "         for n in sorted(os.listdir(folder))}\n"
    "json.dump(files, open('/data/outputs/seen.json', 'w'))\n"
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Suite]:
    async with running_suite(tmp_path_factory.mktemp("suite")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def finished(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> str:
    data = tmp_path_factory.mktemp("data") / "d.csv"
    data.write_text("x\n1\n")
    did = await jobs.publish_dataset(suite, [data])
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], PRODUCER)).job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    return job.job_id


async def _publish(suite: Suite, job_id: str, **fields: object) -> str:
    request = pb.PublishResultsRequest(consumer_address=CONSUMER, job_id=job_id)
    for key, value in fields.items():
        if key == "compute":
            request.compute.update(value)  # type: ignore[arg-type]
        elif key == "result_names":
            request.result_names.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request, key, value)
    return (await suite.compute.PublishResults(request, timeout=T)).did


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code(), raised.value.details() or ""


async def test_results_become_an_asset_a_later_job_reads_byte_for_byte(suite: Suite, finished: str) -> None:
    did = await _publish(suite, finished, name="my results", compute={"allowRawAlgorithm": True})
    ddo = await jobs.public_ddo(suite, did)
    assert ddo["metadata"]["name"] == "my results"
    assert ddo["metadata"]["additionalInformation"]["c2dJob"] == finished
    assert "files" not in ddo["services"][0], "where the results are stays private"

    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], READER)).job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    _, data = await jobs.download(suite, job.job_id, "seen.json", jobs.OUTPUT)
    produced = {
        r.name: r.sha256 for r in (await jobs.details(suite, finished)).job.results if r.kind == jobs.OUTPUT
    }
    # Inputs are numbered in the order of the asset's files: the job's outputs, by name.
    assert sorted(json.loads(data).values()) == sorted(produced.values())


async def test_by_default_only_the_owner_s_algorithms_may_run_on_it(suite: Suite, finished: str) -> None:
    did = await _publish(suite, finished, result_names=["first.txt"])
    ddo = await jobs.public_ddo(suite, did)
    assert ddo["services"][0]["compute"]["publisherTrustedAlgorithmPublishers"] == [CONSUMER]
    code, details = await _code(jobs.start_raw(suite, [did], READER))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "raw algorithms" in details


async def test_only_the_owner_may_publish_a_job_s_results(suite: Suite, finished: str) -> None:
    request = pb.PublishResultsRequest(consumer_address=OTHER_CONSUMER, job_id=finished)
    code, _ = await _code(suite.compute.PublishResults(request, timeout=T))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_an_unknown_output_is_not_found(suite: Suite, finished: str) -> None:
    code, details = await _code(_publish(suite, finished, result_names=["../../etc/passwd"]))
    assert code == grpc.StatusCode.NOT_FOUND and "no output named" in details


async def test_an_unfinished_job_s_results_cannot_be_published(suite: Suite, tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("x\n")
    did = await jobs.publish_dataset(suite, [tmp_path / "d.csv"])
    failed = await jobs.wait_terminal(
        suite,
        (
            await jobs.start_raw(
                suite, [did], "open('/data/outputs/x', 'w').write('x')\nraise SystemExit(3)\n"
            )
        ).job_id,
    )
    assert failed.status == JobStatus.ALGORITHM_FAILED
    code, details = await _code(_publish(suite, failed.job_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "has not finished" in details


@pytest.mark.parametrize(
    ("compute", "named"),
    [
        ({"allowRawAlgorithm": "yes"}, "allowRawAlgorithm"),
        ({"publisherTrustedAlgorithms": [{"did": "x"}]}, "did"),
    ],
)
async def test_malformed_compute_options_are_invalid(
    suite: Suite, finished: str, compute: dict, named: str
) -> None:  # type: ignore[type-arg]
    code, details = await _code(_publish(suite, finished, compute=compute))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details


async def test_a_publisher_still_cannot_name_the_result_store_in_a_ddo(suite: Suite, finished: str) -> None:
    stolen = next((suite.root / "results").rglob("first.txt"))
    code, details = await _code(jobs.publish_dataset(suite, [jobs.url_entry(stolen.as_uri())]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "file://" in details


# --- result assets in a remote result store -------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> S3Server:
    return shared_s3_server()


def _store_env(store: str, s3: S3Server) -> dict[str, str]:
    if store == "s3":
        # No C2D_S3_INPUT_BUCKETS: a result asset needs none, as a local one needs no file:// roots.
        return s3.env(C2D_RESULT_STORE=f"s3://{s3.bucket('c2d-asset-results')}/results")
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return {**shared_ipfs_node().env(), "C2D_RESULT_STORE": "ipfs"}


async def _finished_in(suite: Suite, tmp_path: Path, code: str = PRODUCER) -> str:
    (tmp_path / "d.csv").write_text("x\n1\n")
    did = await jobs.publish_dataset(suite, [tmp_path / "d.csv"])
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], code)).job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    return job.job_id


@pytest.mark.parametrize("store", ["s3", "ipfs"])
async def test_results_in_a_remote_store_become_an_asset_a_later_job_reads(
    tmp_path: Path, s3: S3Server, store: str
) -> None:
    producer = PRODUCER + "open('/data/outputs/odd #1?.txt', 'w').write('odd name\\n')\n"
    env = _store_env(store, s3)
    since = s3.mark()
    async with storage_suite(tmp_path / "suite", env) as suite:
        finished_job = await _finished_in(suite, tmp_path, producer)
        did = await _publish(suite, finished_job, compute={"allowRawAlgorithm": True})
        job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], READER)).job_id)
        assert job.status == JobStatus.FINISHED, job.status_text
        _, data = await jobs.download(suite, job.job_id, "seen.json", jobs.OUTPUT)
        produced = {
            r.name: r.sha256
            for r in (await jobs.details(suite, finished_job)).job.results
            if r.kind == jobs.OUTPUT
        }
        assert len(produced) == 3
        assert sorted(json.loads(data).values()) == sorted(produced.values())
    if store == "s3":
        # The later job's configuration read the asset with the result store's key, as publishing
        # wrote it: the datasets' key (C2D_S3_*) never touched the store.
        assert s3.keys_used("c2d-asset-results", since=since) == {RESULT_ACCESS_KEY}


async def test_a_publisher_s_ddo_cannot_read_the_s3_result_store(tmp_path: Path, s3: S3Server) -> None:
    """Only the provider's own result assets know where results are (a random publish id in the
    key). A job id is no secret (a result asset's DDO shows it), so a key made from it, a log's
    real location, a wrong publish id or a dotted path all read nothing, even with every bucket
    allowed as input."""
    bucket = s3.bucket("c2d-guarded-results")
    env = s3.env(C2D_RESULT_STORE=f"s3://{bucket}/results", C2D_S3_INPUT_BUCKETS="*")
    async with storage_suite(tmp_path / "suite", env) as suite:
        finished_job = await _finished_in(suite, tmp_path)
        record = await suite.registry.get(finished_job)
        real = {r.name: r.location for r in record.results}
        output, log = real["first.txt"], real["algorithm.stdout.log"]
        attempts = {
            f"s3://{bucket}/results/{finished_job}/outputs/first.txt": "may not name the result store",
            log: "may not name the result store",
            output.replace(output.split("/")[-3], "0" * 32): "the object does not exist",
            f"s3://{bucket}/./results/{finished_job}/outputs/first.txt": "must be a plain path",
        }
        for url, expected in attempts.items():
            did = await jobs.publish_dataset(suite, [{"type": "s3", "url": url}])
            job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], READER)).job_id)
            assert job.status == JobStatus.DATA_PROVISIONING_FAILED, (url, job.status_text)
            assert expected in job.status_text, (url, job.status_text)
            assert finished_job not in job.status_text
