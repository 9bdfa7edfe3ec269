"""The consumer's side: the CLI's downloader (c2d_cli/download.py) fetches every result of a job
whose results live in S3 (moto's server) through the provider's GetResult, with one progress bar,
resuming a partial file and an interrupted stream, and refusing what does not match."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from c2d.common.v1 import job_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d_cli.client import ChecksumMismatch, ProviderClient
from c2d_cli.download import ProgressBar, UnsafeResultName, destination_of, download_all
from c2d_common.status import JobStatus
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER_KEY, Suite
from tests.integration import jobs
from tests.servers.s3 import S3Server, shared_s3_server
from tests.servers.storage_suite import storage_suite

pytestmark = requires_bwrap

MiB = 1024 * 1024
OUTPUTS = {
    "model/weights.bin": bytes(range(256)) * (3 * MiB // 256) + b"tail",
    "report.txt": b"accuracy: 0.93\n",
}
ALGORITHM = f"""
import os
os.makedirs("/data/outputs/model", exist_ok=True)
open("/data/outputs/model/weights.bin", "wb").write(bytes(range(256)) * ({3 * MiB} // 256) + b"tail")
open("/data/outputs/report.txt", "w").write("accuracy: 0.93\\n")
print("trained")
"""


@pytest.fixture(scope="module")
def s3() -> S3Server:
    return shared_s3_server()


class InterruptedOnce(ProviderClient):
    """The real client, whose first GetResult stream of each file breaks after one piece (as a
    provider restart would break it); records the offsets asked for."""

    def __init__(self, address: str, private_key: str):
        super().__init__(address, private_key)
        self.asked: list[tuple[str, int]] = []

    async def get_result(
        self, job_id: str, name: str, kind: int = 0, offset: int = 0
    ) -> AsyncIterator[pb.GetResultResponse]:
        first = all(asked_name != name for asked_name, _ in self.asked)
        self.asked.append((name, offset))
        async for response in super().get_result(job_id, name, kind, offset):
            yield response
            if first and response.data:
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "provider restarting",
                )


async def finished_job(suite: Suite, tmp_path: Path) -> job_pb2.Job:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    did = await jobs.publish_dataset(suite, [data])
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], ALGORITHM)).job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    return job


def check_folder(folder: Path) -> None:
    for name, data in OUTPUTS.items():
        assert (folder / "outputs" / name).read_bytes() == data
    assert (folder / "logs" / "algorithm.stdout.log").read_bytes() == b"trained\n"
    assert not list(folder.rglob("*.part"))


async def test_every_result_is_downloaded_verified_with_one_progress_bar(
    tmp_path: Path, s3: S3Server
) -> None:
    env = s3.env(C2D_RESULT_STORE=f"s3://{s3.bucket('c2d-download')}/results")
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await finished_job(suite, tmp_path)
        screen = io.StringIO()
        lines: list[str] = []
        async with ProviderClient(suite.provider_address, CONSUMER_KEY) as client:
            bar = ProgressBar(sum(r.size for r in job.results), len(job.results), screen, enabled=True)
            done = await download_all(client, job, tmp_path / "out", bar, lines.append)
        check_folder(tmp_path / "out")
        assert {d.path.relative_to(tmp_path / "out").as_posix() for d in done} == {
            *(f"outputs/{n}" for n in OUTPUTS),
            *(f"logs/{r.name}" for r in job.results if r.kind == job_pb2.RESULT_KIND_LOG),
        }
        assert len(lines) == len(job.results) and all("sha256 verified" in line for line in lines)
        final = screen.getvalue().rsplit("\r", 1)[-1]
        assert "100.0%" in final and f"{len(job.results)}/{len(job.results)} files" in final


async def test_a_partial_file_and_a_broken_stream_are_resumed(tmp_path: Path, s3: S3Server) -> None:
    env = s3.env(C2D_RESULT_STORE=f"s3://{s3.bucket('c2d-download')}/results")
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await finished_job(suite, tmp_path)
        folder = tmp_path / "out"
        weights = OUTPUTS["model/weights.bin"]
        partial = folder / "outputs" / "model" / "weights.bin.part"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(weights[: MiB + 17])  # an earlier download stopped here
        client = InterruptedOnce(suite.provider_address, CONSUMER_KEY)
        async with client:
            done = await download_all(client, job, folder, ProgressBar(1, 1, enabled=False))
        check_folder(folder)
        by_name = {d.path.name: d for d in done}
        assert by_name["weights.bin"].resumed_from == MiB + 17
        asked = [offset for name, offset in client.asked if name == "model/weights.bin"]
        # From the partial file's end, then (the stream broke after one piece) from where it broke.
        assert asked == [MiB + 17, 2 * MiB + 17], asked
        assert [offset for name, offset in client.asked if name == "report.txt"] == [
            0,
            len(OUTPUTS["report.txt"]),
        ]


async def test_a_partial_file_that_does_not_match_is_refused_and_discarded(
    tmp_path: Path, s3: S3Server
) -> None:
    env = s3.env(C2D_RESULT_STORE=f"s3://{s3.bucket('c2d-download')}/results")
    async with storage_suite(tmp_path / "suite", env) as suite:
        job = await finished_job(suite, tmp_path)
        folder = tmp_path / "out"
        partial = folder / "outputs" / "report.txt.part"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"ACCURACY")  # not the published bytes
        async with ProviderClient(suite.provider_address, CONSUMER_KEY) as client:
            with pytest.raises(ChecksumMismatch, match=r"report\.txt"):
                await download_all(client, job, folder, ProgressBar(1, 1, enabled=False))
            assert not partial.exists() and not (folder / "outputs" / "report.txt").exists()
            await download_all(client, job, folder, ProgressBar(1, 1, enabled=False))  # then from scratch
        check_folder(folder)
        published = {r.name: r.sha256 for r in job.results}
        assert (
            hashlib.sha256((folder / "outputs" / "report.txt").read_bytes()).hexdigest()
            == published["report.txt"]
        )


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "", "a//b", "./a"])
def test_a_result_name_that_would_leave_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeResultName):
        destination_of(tmp_path, job_pb2.ResultFile(name=name, kind=job_pb2.RESULT_KIND_OUTPUT))
