"""Inputs from real servers, through the whole suite and the real sandbox: http(s) with the
publisher's headers from a range-capable file server, S3 from moto's server, IPFS from a js-ipfs
node; several files and datasets fetched at once; a broken connection resumed; and the hostile
cases, each ending in a clear status with its reason in the job's logs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from c2d.common.v1 import job_pb2
from c2d.engine.v1 import request_response_pb2 as engine_pb
from c2d.engine.v1 import service_pb2_grpc as engine_grpc
from c2d_common.server import insecure_channel
from c2d_common.status import JobStatus
from engine_svc.config import DEFAULT_ENVIRONMENTS, EngineSettings
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, Suite
from tests.integration import jobs
from tests.servers.http_files import FileServer, free_port
from tests.servers.ipfs import IpfsNode, shared_ipfs_node, unavailable_reason
from tests.servers.s3 import ACCESS_KEY, RESULT_ACCESS_KEY, S3Server, shared_s3_server
from tests.servers.storage_suite import storage_suite

pytestmark = requires_bwrap

TOKEN = "Bearer publisher-secret-7f3a9c"
MiB = 1024 * 1024

# Writes the sha256 of every input file it sees, by "<did>/<index>".
REPORT_ALGORITHM = """
import hashlib, json, os
report = {}
for did in json.loads(os.environ["DIDS"]):
    folder = f"/data/inputs/{did}"
    for name in sorted(os.listdir(folder), key=int):
        with open(f"{folder}/{name}", "rb") as handle:
            report[f"{did}/{name}"] = hashlib.sha256(handle.read()).hexdigest()
with open("/data/outputs/report.json", "w") as handle:
    json.dump(report, handle)
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declared(url: str, data: bytes, **more: Any) -> dict[str, Any]:
    return {"type": "url", "url": url, "checksum": sha(data), "contentLength": len(data), **more}


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def s3() -> S3Server:
    return shared_s3_server()


@pytest.fixture(scope="module")
def ipfs() -> IpfsNode:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return shared_ipfs_node()


async def run(
    suite: Suite, dataset_files: list[list[dict[str, Any]]], code: str = REPORT_ALGORITHM
) -> job_pb2.Job:
    dids = [
        await jobs.publish_dataset(suite, items, name=f"dataset {i}") for i, items in enumerate(dataset_files)
    ]
    started = await jobs.start_raw(suite, dids, code)
    return await jobs.wait_terminal(suite, started.job_id)


async def report(suite: Suite, job: job_pb2.Job) -> dict[str, str]:
    assert job.status == JobStatus.FINISHED, (JobStatus(job.status).name, job.status_text)
    _, data = await jobs.download(suite, job.job_id, "report.json", jobs.OUTPUT)
    result: dict[str, str] = json.loads(data)
    return result


async def system_log(suite: Suite, job_id: str) -> str:
    return jobs.log_text(await jobs.logs(suite, job_id), job_pb2.LOG_STREAM_SYSTEM)


# --- http(s) -------------------------------------------------------------------------------------------


async def test_http_inputs_with_publisher_headers_are_fetched_in_parallel(
    tmp_path: Path, files: FileServer
) -> None:
    contents = [[os.urandom(300_000 + 1000 * (d * 3 + f)) for f in range(3)] for d in range(2)]
    datasets = [
        [
            declared(
                files.add(f"/d{d}/f{f}", data, required_headers={"Authorization": TOKEN}, delay_seconds=0.02),
                data,
                headers={"Authorization": TOKEN},
            )
            for f, data in enumerate(row)
        ]
        for d, row in enumerate(contents)
    ]
    async with storage_suite(tmp_path / "suite", {}) as suite:
        job = await run(suite, datasets)
        seen = await report(suite, job)
        assert sorted(seen.values()) == sorted(sha(data) for row in contents for data in row)
        assert [seen[f"{job.dataset_dids[d]}/{f}"] for d in range(2) for f in range(3)] == [
            sha(data) for row in contents for data in row
        ]
        # Fetched at once, not one after the other (each file takes ~0.1 s to serve).
        assert files.max_active >= 2
        assert all(s.headers.get("Authorization") == TOKEN for s in files.seen)
        # The token is the publisher's: no consumer-facing answer or log holds it.
        shown = [
            str(await jobs.details(suite, job.job_id)),
            str(await jobs.public_ddo(suite, job.dataset_dids[0])),
            str(await jobs.logs(suite, job.job_id)),
        ]
        assert not any(TOKEN in text or "publisher-secret" in text for text in shown)


async def test_without_the_token_the_job_fails_without_revealing_it(
    tmp_path: Path, files: FileServer
) -> None:
    data = b"private rows\n"
    url = files.add("/private.csv", data, required_headers={"Authorization": TOKEN})
    async with storage_suite(tmp_path / "suite", {}) as suite:
        job = await run(suite, [[declared(url, data, headers={"Authorization": "Bearer wrong"})]])
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED
        assert "HTTP 401" in job.status_text
        assert "wrong" not in job.status_text and str(files.port) not in job.status_text


async def test_a_broken_connection_is_resumed_where_it_stopped(tmp_path: Path, files: FileServer) -> None:
    data = os.urandom(3_000_000)
    url = files.add("/big.bin", data, break_after=1_200_000, break_times=2)
    async with storage_suite(tmp_path / "suite", {}) as suite:
        job = await run(suite, [[declared(url, data)]])
        assert list((await report(suite, job)).values()) == [sha(data)]
    ranges = [s.headers.get("Range") for s in files.requests_for("/big.bin")]
    assert ranges == [None, "bytes=1200000-", "bytes=2400000-"], ranges
    # Resumed only while the content is the same one (If-Range with the first answer's ETag).
    assert all(s.headers.get("If-Range") for s in files.requests_for("/big.bin")[1:])


async def test_a_dataset_the_publisher_serves_by_post_is_fetched_with_post(
    tmp_path: Path, files: FileServer
) -> None:
    data = b"station,rain\nharbour,3\n"
    url = files.add("/query", data, methods=("POST",), required_headers={"Authorization": TOKEN})
    async with storage_suite(tmp_path / "suite", {}) as suite:
        job = await run(suite, [[declared(url, data, method="POST", headers={"Authorization": TOKEN})]])
        assert list((await report(suite, job)).values()) == [sha(data)]
    assert {s.method for s in files.requests_for("/query")} == {"POST"}


async def test_the_publishers_headers_never_follow_a_redirect_to_another_host(
    tmp_path: Path, files: FileServer
) -> None:
    elsewhere = FileServer()
    try:
        data = b"a,b\n1,2\n"
        target = elsewhere.add("/moved.csv", data)
        url = files.add("/old.csv", b"", redirect_to=target)
        async with storage_suite(tmp_path / "suite", {}) as suite:
            job = await run(suite, [[declared(url, data, headers={"Authorization": TOKEN})]])
            assert list((await report(suite, job)).values()) == [sha(data)]
        assert files.requests_for("/old.csv")[0].headers.get("Authorization") == TOKEN
        assert "Authorization" not in elsewhere.requests_for("/moved.csv")[0].headers
    finally:
        elsewhere.close()


# --- S3 ------------------------------------------------------------------------------------------------


async def test_s3_inputs_come_from_the_allowed_buckets(tmp_path: Path, s3: S3Server) -> None:
    bucket = s3.bucket("c2d-datasets")
    first, second = os.urandom(2_000_000), b"station,temperature\nharbour,15.2\n"
    client = s3.client()
    client.put_object(Bucket=bucket, Key="weather/big.bin", Body=first)
    client.put_object(Bucket=bucket, Key="weather/small.csv", Body=second)
    items: list[dict[str, Any]] = [
        {"type": "s3", "bucket": bucket, "objectPath": "weather/big.bin", "checksum": sha(first)},
        {"type": "s3", "url": f"s3://{bucket}/weather/small.csv", "contentLength": len(second)},
    ]
    async with storage_suite(tmp_path / "suite", s3.env(C2D_S3_INPUT_BUCKETS=bucket)) as suite:
        job = await run(suite, [items])
        assert list((await report(suite, job)).values()) == [sha(first), sha(second)]
        # The suite's S3 credentials reach podtools, never the consumer or the algorithm.
        assert "c2d-test-secret" not in str(await jobs.logs(suite, job.job_id))


async def test_each_phase_signs_with_its_own_key_the_datasets_key_never_publishes(
    tmp_path: Path, s3: S3Server
) -> None:
    """Inputs read with the datasets' key (C2D_S3_*), results written and served with the result
    store's (C2D_S3_RESULT_*): the server records which key signed each request."""
    data_bucket, result_bucket = s3.bucket("c2d-keyed-data"), s3.bucket("c2d-keyed-results")
    data = b"station,temperature\nharbour,15.2\n"
    s3.client().put_object(Bucket=data_bucket, Key="weather.csv", Body=data)
    env = s3.env(C2D_S3_INPUT_BUCKETS=data_bucket, C2D_RESULT_STORE=f"s3://{result_bucket}/results")
    since = s3.mark()
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, [[{"type": "s3", "bucket": data_bucket, "objectPath": "weather.csv"}]])
        assert list((await report(suite, job)).values()) == [sha(data)]
    assert s3.keys_used(data_bucket, since=since) == {ACCESS_KEY}
    # Publishing, GetResult and the engine's clean-up: the store's key, and only it.
    assert s3.keys_used(result_bucket, since=since) == {RESULT_ACCESS_KEY}
    assert s3.keys_used(result_bucket, ("PUT", "POST"), since=since) == {RESULT_ACCESS_KEY}


@pytest.mark.parametrize(
    ("allowed", "key", "expected"),
    [
        ("", "weather/small.csv", "serves no s3:// data"),
        ("other-bucket", "weather/small.csv", "must come from the buckets"),
        ("c2d-datasets", "weather/missing.csv", "the object does not exist"),
    ],
)
async def test_s3_inputs_that_cannot_be_read(
    tmp_path: Path, s3: S3Server, allowed: str, key: str, expected: str
) -> None:
    bucket = s3.bucket("c2d-datasets")
    s3.client().put_object(Bucket=bucket, Key="weather/small.csv", Body=b"x\n")
    async with storage_suite(tmp_path / "suite", s3.env(C2D_S3_INPUT_BUCKETS=allowed)) as suite:
        job = await run(suite, [[{"type": "s3", "bucket": bucket, "objectPath": key}]])
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED, job.status_text
        assert expected in job.status_text
        assert expected in await system_log(suite, job.job_id)
        assert key not in job.status_text


async def test_s3_inputs_never_come_from_the_result_store(tmp_path: Path, s3: S3Server) -> None:
    bucket = s3.bucket("c2d-shared")
    s3.client().put_object(Bucket=bucket, Key="results/someone-elses-job/outputs/x", Body=b"secret")
    env = s3.env(C2D_S3_INPUT_BUCKETS="*", C2D_RESULT_STORE=f"s3://{bucket}/results")
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(
            suite, [[{"type": "s3", "bucket": bucket, "objectPath": "results/someone-elses-job/outputs/x"}]]
        )
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED
        assert "may not name the result store" in job.status_text


# --- IPFS -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("through", ["gateway", "api"])
async def test_ipfs_inputs(tmp_path: Path, ipfs: IpfsNode, through: str) -> None:
    data = os.urandom(1_500_000) + through.encode()
    cid = ipfs.add(data)
    async with storage_suite(tmp_path / "suite", ipfs.env(gateway=through == "gateway")) as suite:
        job = await run(
            suite, [[{"type": "ipfs", "hash": cid, "checksum": sha(data), "contentLength": len(data)}]]
        )
        assert list((await report(suite, job)).values()) == [sha(data)]


async def test_an_ipfs_input_the_node_cannot_find_fails_within_its_timeout(
    tmp_path: Path, ipfs: IpfsNode
) -> None:
    missing = "QmPHE4SqpsdtJqgo3YpEXzFW1cyY2A76BB4ygQD32hbPpX"  # nobody has it (and the node is offline)
    env = {**ipfs.env(gateway=False), "C2D_IPFS_TIMEOUT_SECONDS": "1"}
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, [[{"type": "ipfs", "hash": missing}]])
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED
        assert "the IPFS node could not read the content" in job.status_text
        assert missing not in job.status_text


async def test_ipfs_inputs_need_a_node(tmp_path: Path) -> None:
    async with storage_suite(tmp_path / "suite", {}) as suite:
        job = await run(suite, [[{"type": "ipfs", "hash": "QmPHE4SqpsdtJqgo3YpEXzFW1cyY2A76BB4ygQD32hbPph"}]])
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED
        assert "C2D_IPFS_GATEWAY or C2D_IPFS_API" in job.status_text


# --- hostile inputs ---------------------------------------------------------------------------------------


def _unreachable(files: FileServer, data: bytes) -> dict[str, Any]:
    return declared(f"http://127.0.0.1:{free_port()}/data.csv", data)


def _stalling(files: FileServer, data: bytes) -> dict[str, Any]:
    return declared(files.add("/stall.bin", data, stall_after=100_000), data)


def _wrong_checksum(files: FileServer, data: bytes) -> dict[str, Any]:
    return {**declared(files.add("/data.bin", data), data), "checksum": sha(b"something else")}


def _larger_than_declared(files: FileServer, data: bytes) -> dict[str, Any]:
    return {**declared(files.add("/data.bin", data), data), "contentLength": len(data) - 1}


def _larger_than_declared_unannounced(files: FileServer, data: bytes) -> dict[str, Any]:
    # No Content-Length (chunked): the size is checked while the bytes arrive.
    return {**declared(files.add("/data.bin", data, chunked=True), data), "contentLength": 1000}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_unreachable, "the server refused the connection; gave up after 3 attempts"),
        (_stalling, "the server stopped sending"),
        (_wrong_checksum, "content does not match the declared sha256"),
        (_larger_than_declared, "the server announces 400000 bytes, more than the declared 399999"),
        (_larger_than_declared_unannounced, "more than the declared 1000 bytes"),
    ],
    ids=["unreachable host", "stalls mid-body", "wrong checksum", "larger than declared", "larger, chunked"],
)
async def test_hostile_inputs_end_as_data_provisioning_failed(
    tmp_path: Path, files: FileServer, make: Any, expected: str
) -> None:
    data = os.urandom(400_000)
    item = make(files, data)
    async with storage_suite(tmp_path / "suite", {"C2D_INPUT_STALL_SECONDS": "1"}) as suite:
        async with asyncio.timeout(30):  # never a stuck job
            job = await run(suite, [[item]])
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED, job.status_text
        assert expected in job.status_text
        assert f"provisioning failed: dataset {job.dataset_dids[0]} file 0: " in await system_log(
            suite, job.job_id
        )
        assert item["url"] not in job.status_text and "127.0.0.1" not in job.status_text
        assert not jobs.processes_mentioning(job.job_id)
        assert not (suite.root / "work" / job.job_id).exists()


@pytest.mark.parametrize(
    ("max_input_bytes", "limit"),
    [("", 4 * MiB), (str(1 * MiB), 1 * MiB)],
    ids=["the environment's disk", "C2D_MAX_INPUT_BYTES, smaller"],
)
async def test_inputs_of_unknown_size_stop_at_the_environment_s_disk(
    tmp_path: Path, files: FileServer, max_input_bytes: str, limit: int
) -> None:
    """A body that never ends, with no size declared or announced: without a limit it would fill
    the engine's disk until the configure timeout."""
    small = replace(DEFAULT_ENVIRONMENTS[0], disk_bytes=4 * MiB)
    settings = EngineSettings(environments=(small,), configure_timeout_seconds=30)
    env = {"C2D_MAX_INPUT_BYTES": max_input_bytes} if max_input_bytes else {}
    async with storage_suite(tmp_path / "suite", env, settings) as suite:
        async with asyncio.timeout(60):
            job = await run(suite, [[{"url": files.add("/endless", b"", endless=True)}]])
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED, job.status_text
        assert (
            f"the inputs exceed {limit} bytes, the most this job may fetch: its environment's disk"
            in job.status_text
        )
        assert "the inputs exceed" in await system_log(suite, job.job_id)
        assert not (suite.root / "work" / job.job_id).exists()


async def test_declared_sizes_over_the_environment_s_disk_fail_before_any_fetch(
    tmp_path: Path, files: FileServer
) -> None:
    small = replace(DEFAULT_ENVIRONMENTS[0], disk_bytes=4 * MiB)
    data = os.urandom(3 * MiB)
    items = [declared(files.add(f"/part{i}.bin", data), data) for i in range(2)]
    async with storage_suite(tmp_path / "suite", {}, EngineSettings(environments=(small,))) as suite:
        job = await run(suite, [items])
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED, job.status_text
        assert f"the inputs exceed {4 * MiB} bytes" in job.status_text
    assert not files.seen


@pytest.mark.parametrize(
    "did",
    ["did:op:../../etc", "did:op:a/../../b", "../outside", "/absolute", "did:op:x\0y"],
)
async def test_a_name_from_outside_never_escapes_the_inputs(
    tmp_path: Path, files: FileServer, did: str
) -> None:
    """A DID becomes a folder name. The provider checks DIDs, so this asks the engine directly,
    as a compromised operator could."""
    data = b"x\n"
    async with storage_suite(tmp_path / "suite", {}) as suite:
        spec = job_pb2.JobSpec(
            datasets=[job_pb2.DatasetInput(did=did, files=[job_pb2.FileLocation(url=files.add("/x", data))])],
            algorithm=job_pb2.AlgorithmInput(raw_code=b"print(1)", runtime="python3"),
        )
        channel = insecure_channel(f"127.0.0.1:{suite.engine.port}")
        try:
            stub = engine_grpc.EngineServiceStub(channel)
            statuses = []
            async with asyncio.timeout(30):
                async for message in stub.RunJob(
                    engine_pb.RunJobRequest(job_id="ab" * 16, owner=CONSUMER, spec=spec)
                ):
                    if message.HasField("status"):
                        statuses.append(message.status)
        except grpc.aio.AioRpcError as exc:  # refused before it ran: as good
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            return
        finally:
            await channel.close()
        last = statuses[-1]
        assert last.status == JobStatus.DATA_PROVISIONING_FAILED
        assert "cannot be used as a folder name" in last.status_text
        assert not files.seen  # refused before anything was fetched
    names = {p.name for p in tmp_path.rglob("*")}
    assert not names & {"etc", "b", "outside", "absolute"}, names
