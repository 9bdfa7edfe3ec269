"""Crash recovery: services killed with SIGKILL at random moments of running jobs and started again.
Every job still reaches its correct terminal state, none is lost, none runs twice to completion."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
import pytest

from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d_cli.client import ProviderClient
from c2d_cli.main import dataset_ddo
from c2d_cli.processes import local_suite, restart_service
from c2d_common.server import insecure_channel
from c2d_common.signing import address_of, signing_interceptors
from c2d_common.status import JobStatus
from tests.conftest import requires_bwrap

pytestmark = [pytest.mark.e2e, requires_bwrap]

CONSUMER_KEY = "0x" + "ab" * 32
CONSUMER = address_of(CONSUMER_KEY)
KILLS = 50
JOBS = 24
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


async def _retrying(call, attempts: int = 400):  # type: ignore[no-untyped-def]
    """A client that outlives crashes: retries what a restart cures."""
    for _ in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the service never came back")


async def _signed_channel(address: str) -> grpc.aio.Channel:
    """Signs every call; the provider's address (which signatures name) survives its restarts."""
    async with ProviderClient(address, CONSUMER_KEY) as client:
        provider = client.provider_address
    return insecure_channel(address, signing_interceptors({CONSUMER: CONSUMER_KEY}, provider))


async def test_random_kills_lose_no_job(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    data = tmp_path / "data" / "d.csv"
    data.parent.mkdir()
    data.write_text("a\n1\n")
    extra = {
        "C2D_FILE_URL_ROOTS": str(data.parent),
        "C2D_ENGINE_RETRY_SECONDS": "120",
        "C2D_LOG_LEVEL": "warning",
    }
    async with local_suite(tmp_path / "state", extra_env=extra) as suite:
        channel = await _signed_channel(suite.provider_address)
        compute = provider_grpc.ComputeServiceStub(channel)
        try:
            async with ProviderClient(suite.provider_address, CONSUMER_KEY) as client:
                did = await client.publish_asset(dataset_ddo("d", [data.as_uri()]))
            job_ids: list[str] = []
            for index in range(JOBS):
                seconds = rng.uniform(0.2, 2.5)
                code = (
                    f"import time\ntime.sleep({seconds:.2f})\n"
                    f"open('/data/outputs/done.txt', 'w').write('{index}')\n"
                )
                request = pb.StartRequest(
                    consumer_address=CONSUMER,
                    dataset_did=did,
                    raw_algorithm=pb.RawAlgorithm(code=code.encode()),
                    request_id=f"crash-{index}",  # a retried Start after a crash is the same job
                )
                response = await _retrying(lambda r=request: compute.Start(r, timeout=10))
                job_ids.append(response.job_id)
                if index % 2:
                    await restart_service(suite, rng.choice(["provider", "operator", "engine"]))
            for _ in range(KILLS - JOBS // 2):
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                await restart_service(suite, rng.choice(["provider", "operator", "engine"]))

            async def final(job_id: str) -> pb.GetJobDetailsResponse:
                for _ in range(600):
                    details = await _retrying(
                        lambda: compute.GetJobDetails(
                            pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=job_id), timeout=10
                        )
                    )
                    if JobStatus(details.job.status).is_terminal:
                        return details
                    # Follow it live until it ends (a Watch is cut by the next crash, then resumed).
                    try:
                        async for _ in compute.Watch(
                            pb.WatchRequest(consumer_address=CONSUMER, job_id=job_id), timeout=30
                        ):
                            pass
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
                raise AssertionError(f"job {job_id} never ended")

            finals = await asyncio.gather(*(final(job_id) for job_id in job_ids))
        finally:
            await channel.close()
    assert len(set(job_ids)) == JOBS
    for index, details in enumerate(finals):
        job = details.job
        assert job.status == JobStatus.FINISHED, (index, job.status, job.status_text)
        outputs = [r for r in job.results if r.name == "done.txt"]
        assert len(outputs) == 1 and outputs[0].size == len(str(index))
        sequences = [e.sequence for e in details.history]
        assert sequences == list(range(1, len(sequences) + 1))
        assert details.history[-1].status == JobStatus.FINISHED
