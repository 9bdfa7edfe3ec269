"""Results to real stores, through the whole suite and the real sandbox: S3 (moto's server, over
HTTP; multipart for large files) and IPFS (a js-ipfs node, Kubo's RPC API); GetResult streams them
back from any offset; the per-job quota, a store that is down and symbolic links in the outputs
each end in a clear status with the reason in the job's logs."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import replace
from pathlib import Path

import pytest

from c2d.common.v1 import job_pb2
from c2d_common.errors import FailedPrecondition
from c2d_common.status import JobStatus
from c2d_common.storage import delete_job_results
from engine_svc.config import DEFAULT_ENVIRONMENTS, EngineSettings
from provider_svc.infra.result_store import ResultStore
from tests.conftest import requires_bwrap
from tests.harness import Suite
from tests.integration import jobs
from tests.servers.http_files import free_port
from tests.servers.ipfs import IpfsNode, shared_ipfs_node, unavailable_reason
from tests.servers.s3 import S3Server, shared_s3_server
from tests.servers.storage_suite import storage_environment, storage_suite

pytestmark = requires_bwrap

MiB = 1024 * 1024

# Nested outputs, one of them larger than two S3 parts, and a log file of its own.
WRITE_OUTPUTS = """
import os
os.makedirs("/data/outputs/tables/2026", exist_ok=True)
with open("/data/outputs/summary.txt", "w") as f:
    f.write("stations: 3\\n")
with open("/data/outputs/tables/2026/rows.csv", "w") as f:
    f.write("station,value\\n" + "harbour,1\\n" * 1000)
with open("/data/outputs/large.bin", "wb") as f:
    for i in range(12):
        f.write(bytes([i]) * (1024 * 1024))
open("/data/outputs/empty", "w").close()
with open("/data/logs/progress.log", "w") as f:
    f.write("done\\n")
print("algorithm says hello")
"""

EXPECTED_OUTPUTS = {
    "summary.txt": b"stations: 3\n",
    "tables/2026/rows.csv": b"station,value\n" + b"harbour,1\n" * 1000,
    "large.bin": b"".join(bytes([i]) * MiB for i in range(12)),
    "empty": b"",
}


@pytest.fixture(scope="module")
def s3() -> S3Server:
    return shared_s3_server()


@pytest.fixture(scope="module")
def ipfs() -> IpfsNode:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return shared_ipfs_node()


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("station,value\nharbour,1\n")
    return path


async def run(suite: Suite, data_file: Path, code: str) -> job_pb2.Job:
    did = await jobs.publish_dataset(suite, [data_file])
    return await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], code)).job_id)


async def locations(suite: Suite, job_id: str) -> dict[str, str]:
    """Where the operator recorded each result (consumers never see these)."""
    record = await suite.registry.get(job_id)
    return {
        f"{'log' if r.kind == job_pb2.RESULT_KIND_LOG else 'output'}:{r.name}": r.location
        for r in record.results
    }


async def check_results_and_get_result(suite: Suite, job: job_pb2.Job) -> None:
    """The result list is complete and right, and GetResult serves every file whole and from an offset."""
    assert job.status == JobStatus.FINISHED, (JobStatus(job.status).name, job.status_text)
    outputs = jobs.results_by_name(job, jobs.OUTPUT)
    assert set(outputs) == set(EXPECTED_OUTPUTS)
    for name, data in EXPECTED_OUTPUTS.items():
        result = outputs[name]
        assert (result.size, result.sha256, result.location) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
            "",
        )
        shown, got = await jobs.download(suite, job.job_id, name, jobs.OUTPUT)
        assert got == data and shown.sha256 == result.sha256 and not shown.location
        for offset in {len(data) // 3, len(data)}:
            _, rest = await jobs.download(suite, job.job_id, name, jobs.OUTPUT, offset=offset)
            assert rest == data[offset:]
    logs = jobs.results_by_name(job, jobs.LOG)
    assert {"algorithm.stdout.log", "algorithm.stderr.log", "algorithm-logs/progress.log"} <= set(logs)
    _, stdout = await jobs.download(suite, job.job_id, "algorithm.stdout.log", jobs.LOG)
    assert stdout == b"algorithm says hello\n"


# --- S3 ------------------------------------------------------------------------------------------------


async def test_results_go_to_s3_and_come_back_through_get_result(
    tmp_path: Path, s3: S3Server, data_file: Path
) -> None:
    bucket = s3.bucket("c2d-results")
    env = s3.env(C2D_RESULT_STORE=f"s3://{bucket}/jobs/v1", C2D_S3_PART_BYTES=str(5 * MiB))
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, data_file, WRITE_OUTPUTS)
        await check_results_and_get_result(suite, job)
        where = await locations(suite, job.job_id)
        # Under the job's folder, in a folder named by a random id of this publish.
        publish_id = where["output:summary.txt"].split("/")[-3]
        assert re.fullmatch(r"[0-9a-f]{32}", publish_id)
        prefix = f"jobs/v1/{job.job_id}/{publish_id}/"
        assert where["output:tables/2026/rows.csv"] == f"s3://{bucket}/{prefix}outputs/tables/2026/rows.csv"
        assert (
            where["log:algorithm-logs/progress.log"]
            == f"s3://{bucket}/{prefix}logs/algorithm-logs/progress.log"
        )
        assert set(s3.keys(bucket, f"jobs/v1/{job.job_id}/")) == {
            loc.removeprefix(f"s3://{bucket}/") for loc in where.values()
        }
        client = s3.client()
        large = client.get_object(Bucket=bucket, Key=f"{prefix}outputs/large.bin")
        assert large["Body"].read() == EXPECTED_OUTPUTS["large.bin"]
        assert large["ETag"].endswith('-3"'), "12 MiB in parts of 5 MiB: a multipart upload"
        # Nothing of the job is left on the engine's disk: the results live in S3 only.
        assert not (suite.root / "results" / job.job_id).exists()
        assert not (suite.root / "work" / job.job_id).exists()


async def test_a_result_store_that_is_down_ends_as_results_upload_failed(
    tmp_path: Path, data_file: Path
) -> None:
    env = {
        "C2D_RESULT_STORE": "s3://c2d-results/jobs",
        "C2D_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "C2D_S3_ACCESS_KEY_ID": "key",
        "C2D_S3_SECRET_ACCESS_KEY": "secret",
    }
    async with storage_suite(tmp_path / "suite", env) as suite:
        async with asyncio.timeout(60):  # never a stuck job
            job = await run(suite, data_file, WRITE_OUTPUTS)
        assert job.status == JobStatus.RESULTS_UPLOAD_FAILED
        assert job.status_text == "the S3 result store failed: the S3 endpoint cannot be reached"
        assert not job.results
        assert job.exit_code == 0
        system = jobs.log_text(await jobs.logs(suite, job.job_id), job_pb2.LOG_STREAM_SYSTEM)
        assert "publishing failed: the S3 result store failed: the S3 endpoint cannot be reached" in system
        assert not (suite.root / "work" / job.job_id).exists()


async def test_results_over_the_quota_are_not_published_at_all(
    tmp_path: Path, s3: S3Server, data_file: Path
) -> None:
    bucket = s3.bucket("c2d-quota")
    env = s3.env(C2D_RESULT_STORE=f"s3://{bucket}", C2D_RESULT_QUOTA_BYTES=str(4 * MiB))
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, data_file, WRITE_OUTPUTS)
        assert job.status == JobStatus.RESULTS_UPLOAD_FAILED
        assert (
            "more than this engine's quota of 4194304 bytes per job; nothing was published" in job.status_text
        )
        assert not job.results
        assert s3.keys(bucket) == []
        assert "quota" in jobs.log_text(await jobs.logs(suite, job.job_id), job_pb2.LOG_STREAM_SYSTEM)
        # Under the quota, the same job publishes.
        small = await run(suite, data_file, "open('/data/outputs/a', 'w').write('a')")
        assert small.status == JobStatus.FINISHED


async def test_results_in_s3_the_provider_may_not_read(tmp_path: Path, s3: S3Server, data_file: Path) -> None:
    """A location outside the provider's own store (a database row changed, a store moved) is
    refused, not read with the provider's credentials."""
    bucket = s3.bucket("c2d-results")
    async with storage_suite(tmp_path / "suite", s3.env(C2D_RESULT_STORE=f"s3://{bucket}/a")) as suite:
        store = ResultStore(suite.root / "results")
        for location in (f"s3://{bucket}/b/x", "s3://other-bucket/a/x", f"s3://{bucket}/a/../b/x"):
            with pytest.raises(FailedPrecondition, match="outside this provider's result store"):
                async for _ in store.read(location, 0):
                    pass


# Names a location could be misread at: "#" and "?" end a URL's path, "%" starts an escape.
ODD_NAMES = {
    "a": b"the file named a\n",
    "a#b": b"not a's bytes\n",
    "q?x": b"a query is not a name\n",
    "100%": b"percent\n",
    "%41": b"not A\n",
    "A": b"A\n",
    "with space.txt": b"spaced\n",
    "caf\u00e9/\u65e5\u672c \u00fc.txt": "unicod\u00e9\n".encode(),
}
WRITE_ODD_NAMES = f"""
import os
for name, data in {ODD_NAMES!r}.items():
    os.makedirs(os.path.dirname("/data/outputs/" + name) or "/data/outputs", exist_ok=True)
    open("/data/outputs/" + name, "wb").write(data)
"""


@pytest.mark.parametrize("store", ["s3", "local"])
async def test_output_names_with_url_characters_come_back_as_they_are(
    tmp_path: Path, s3: S3Server, data_file: Path, store: str
) -> None:
    """Each output comes back by its own name with its own bytes (not a's for "a#b", not
    "missing" for "q?x"), whatever characters its name holds."""
    bucket = s3.bucket("c2d-odd-names")
    env = s3.env(C2D_RESULT_STORE=f"s3://{bucket}/jobs") if store == "s3" else {}
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, data_file, WRITE_ODD_NAMES)
        assert job.status == JobStatus.FINISHED, job.status_text
        outputs = jobs.results_by_name(job, jobs.OUTPUT)
        assert set(outputs) == set(ODD_NAMES)
        for name, data in ODD_NAMES.items():
            shown, got = await jobs.download(suite, job.job_id, name, jobs.OUTPUT)
            assert got == data, name
            assert shown.sha256 == outputs[name].sha256 == hashlib.sha256(data).hexdigest()
            _, rest = await jobs.download(suite, job.job_id, name, jobs.OUTPUT, offset=2)
            assert rest == data[2:], name
        if store == "s3":
            # The names are percent-encoded in the keys: each location is a plain URL.
            for name, location in (await locations(suite, job.job_id)).items():
                assert re.fullmatch(r"s3://[a-z0-9.-]+/[A-Za-z0-9._~%/-]+", location), (name, location)


async def test_locations_stored_before_names_were_encoded_are_still_read(
    tmp_path: Path, s3: S3Server
) -> None:
    """A location recorded by an older podtools names the key as it is, "#" and "?" included."""
    bucket = s3.bucket("c2d-old-locations")
    client = s3.client()
    job_id = "0f" * 16
    for name, data in (("a", b"a's bytes"), ("a#b", b"a#b's bytes"), ("q?x", b"q?x's bytes")):
        client.put_object(Bucket=bucket, Key=f"jobs/{job_id}/outputs/{name}", Body=data)
    with storage_environment(s3.env(C2D_RESULT_STORE=f"s3://{bucket}/jobs")) as settings:
        store = ResultStore(tmp_path / "results", settings)
        for name in ("a#b", "q?x", "a"):
            pieces = [data async for _, data in store.read(f"s3://{bucket}/jobs/{job_id}/outputs/{name}", 0)]
            assert b"".join(pieces) == f"{name}'s bytes".encode()


# --- IPFS -----------------------------------------------------------------------------------------------


async def test_results_go_to_ipfs_and_come_back_through_get_result(
    tmp_path: Path, ipfs: IpfsNode, data_file: Path
) -> None:
    async with storage_suite(tmp_path / "suite", {**ipfs.env(), "C2D_RESULT_STORE": "ipfs"}) as suite:
        job = await run(suite, data_file, WRITE_OUTPUTS)
        await check_results_and_get_result(suite, job)
        where = await locations(suite, job.job_id)
        for key, location in where.items():
            assert location.startswith("ipfs://Qm"), (key, location)
        rows = EXPECTED_OUTPUTS["tables/2026/rows.csv"]
        assert ipfs.cat(where["output:tables/2026/rows.csv"].removeprefix("ipfs://")) == rows
        # Kept in the node's MFS under the job's folder (so no garbage collection takes it).
        listing = ipfs.rpc("files/ls", f"arg=/c2d-results/{job.job_id}/outputs/tables/2026")
        assert b"rows.csv" in listing


async def test_an_ipfs_store_that_is_down_ends_as_results_upload_failed(
    tmp_path: Path, data_file: Path
) -> None:
    env = {"C2D_RESULT_STORE": "ipfs", "C2D_IPFS_API": f"http://127.0.0.1:{free_port()}"}
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, data_file, WRITE_OUTPUTS)
        assert job.status == JobStatus.RESULTS_UPLOAD_FAILED
        assert job.status_text == "the IPFS result store failed: the node refused the connection"


# --- the local store, hostile outputs ------------------------------------------------------------------


LINKS = """
import os
open("/data/outputs/real.txt", "w").write("real")
os.symlink("/etc/passwd", "/data/outputs/passwd")
os.symlink("/data/inputs", "/data/outputs/inputs")
os.symlink("real.txt", "/data/outputs/alias.txt")
os.mkfifo("/data/outputs/pipe")
os.symlink("/c2d", "/data/logs/escape")
"""


# The algorithm takes its own permissions away: a file, a folder (and what is in it), a folder
# whose names can be listed but not reached, a log file.
UNREADABLE = """
import os
open("/data/outputs/kept.txt", "w").write("kept")
os.makedirs("/data/outputs/locked/inner")
open("/data/outputs/locked/inner/secret.txt", "w").write("in a locked folder")
open("/data/outputs/unreadable.txt", "w").write("unreadable")
os.makedirs("/data/outputs/names-only")
open("/data/outputs/names-only/f.txt", "w").write("f")
open("/data/logs/private.log", "w").write("private")
open("/data/logs/kept.log", "w").write("kept")
os.chmod("/data/outputs/locked", 0)
os.chmod("/data/outputs/unreadable.txt", 0)
os.chmod("/data/outputs/names-only", 0o444)
os.chmod("/data/logs/private.log", 0)
print("done")
"""


@pytest.mark.parametrize("store", ["local", "s3"])
async def test_what_the_algorithm_made_unreadable_is_reported_and_the_rest_published(
    tmp_path: Path, s3: S3Server, data_file: Path, store: str
) -> None:
    env = {} if store == "local" else s3.env(C2D_RESULT_STORE=f"s3://{s3.bucket('c2d-unreadable')}")
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, data_file, UNREADABLE)
        assert job.status == JobStatus.FINISHED, job.status_text
        assert set(jobs.results_by_name(job, jobs.OUTPUT)) == {"kept.txt"}
        logs = jobs.results_by_name(job, jobs.LOG)
        assert {"algorithm.stdout.log", "algorithm-logs/kept.log", "publish.log"} <= set(logs)
        assert "algorithm-logs/private.log" not in logs
        _, stdout = await jobs.download(suite, job.job_id, "algorithm.stdout.log", jobs.LOG)
        assert stdout == b"done\n"
        _, text = await jobs.download(suite, job.job_id, "publish.log", jobs.LOG)
        # In the walk's order: a folder's files, then its subfolders.
        assert text.decode().splitlines() == [
            "outputs/unreadable.txt cannot be read (its permissions deny it): not published",
            "outputs/locked cannot be read (its permissions deny it): nothing in it is published",
            "outputs/names-only/f.txt cannot be read (its permissions deny it): not published",
            "logs/private.log cannot be read (its permissions deny it): not published",
        ]
        # Removed after the job, locked folders included.
        assert not (suite.root / "work" / job.job_id).exists()


@pytest.mark.parametrize("store", ["local", "s3"])
async def test_output_symlinks_are_refused_not_followed(
    tmp_path: Path, s3: S3Server, data_file: Path, store: str
) -> None:
    env = {} if store == "local" else s3.env(C2D_RESULT_STORE=f"s3://{s3.bucket('c2d-links')}")
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await run(suite, data_file, LINKS)
        assert job.status == JobStatus.FINISHED, job.status_text
        assert set(jobs.results_by_name(job, jobs.OUTPUT)) == {"real.txt"}
        assert not any("escape" in r.name for r in job.results)
        system = jobs.log_text(await jobs.logs(suite, job.job_id), job_pb2.LOG_STREAM_SYSTEM)
        assert "outputs/passwd is a symbolic link (to a path outside outputs): not published" in system
        assert "outputs/inputs is a symbolic link (to a path outside outputs): not published" in system
        assert "outputs/alias.txt is a symbolic link (to a path inside outputs): not published" in system
        assert "outputs/pipe is not a regular file: not published" in system
        assert "logs/escape is a symbolic link (to a path outside logs): not published" in system
        if store == "local":
            published = {p.name for p in (suite.root / "results" / job.job_id).rglob("*")}
            assert "passwd" not in published and "inputs" not in published


async def test_an_output_too_large_for_its_environment_publishes_only_the_logs_in_s3(
    tmp_path: Path, s3: S3Server, data_file: Path
) -> None:
    bucket = s3.bucket("c2d-disk")
    env = s3.env(C2D_RESULT_STORE=f"s3://{bucket}")
    small = replace(DEFAULT_ENVIRONMENTS[0], disk_bytes=2 * MiB)
    async with storage_suite(tmp_path / "suite", env, EngineSettings(environments=(small,))) as suite:
        job = await run(suite, data_file, WRITE_OUTPUTS)
        assert job.status == JobStatus.DISK_QUOTA_EXCEEDED
        assert not jobs.results_by_name(job, jobs.OUTPUT)
        assert jobs.results_by_name(job, jobs.LOG)
        keys = s3.keys(bucket, job.job_id)
        assert keys and all(re.match(rf"{job.job_id}/[0-9a-f]{{32}}/logs/", key) for key in keys)


# --- nothing half-published ------------------------------------------------------------------------------

SLOW_TO_PUBLISH = """
open("/data/outputs/a-first.txt", "w").write("stored first")
open("/data/outputs/b-stalls.txt", "w").write("never stored: the store stalls on it")
"""


async def test_a_publish_cut_short_leaves_nothing_in_the_store(
    tmp_path: Path, s3: S3Server, data_file: Path
) -> None:
    """The publish sandbox is killed at its time limit after it stored a first file (the store
    stalls on the second): the engine removes what it had stored, so no half result stays."""
    bucket = s3.bucket("c2d-cut")
    env = s3.env(C2D_RESULT_STORE=f"s3://{bucket}", C2D_S3_CONCURRENCY="1")
    s3.stalled_uploads.add("b-stalls.txt")
    since = s3.mark()
    try:
        async with storage_suite(tmp_path / "suite", env, EngineSettings(publish_timeout_seconds=2)) as suite:
            job = await run(suite, data_file, SLOW_TO_PUBLISH)
    finally:
        s3.stalled_uploads.discard("b-stalls.txt")
    assert job.status == JobStatus.RESULTS_UPLOAD_FAILED, job.status_text
    assert job.status_text == "publishing took longer than 2 s"
    stored = [r.path for r in s3.requests[since:] if r.method == "PUT" and "a-first.txt" in r.path]
    assert stored, "the first file reached the store before the publish was cut short"
    assert s3.keys(bucket, job.job_id) == []


async def test_a_jobs_files_are_removed_from_an_ipfs_store(ipfs: IpfsNode) -> None:
    cid = ipfs.add(b"partial result")
    ipfs.rpc("files/mkdir", "arg=/c2d-results/job-to-remove/outputs&parents=true")
    ipfs.rpc("files/cp", f"arg=/ipfs/{cid}&arg=/c2d-results/job-to-remove/outputs/x")
    with storage_environment({**ipfs.env(), "C2D_RESULT_STORE": "ipfs"}) as settings:
        await asyncio.to_thread(delete_job_results, settings, "job-to-remove")
        await asyncio.to_thread(delete_job_results, settings, "job-to-remove")  # already gone: fine
    assert b"job-to-remove" not in ipfs.rpc("files/ls", "arg=/c2d-results")
