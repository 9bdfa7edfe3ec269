"""The provider's side of the operator's gRPC API (errors pass through as gRPC status codes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from c2d.common.v1 import job_pb2
from c2d.operator.v1 import request_response_pb2 as pb
from c2d.operator.v1 import service_pb2_grpc
from c2d_common.server import insecure_channel


class OperatorClient:
    def __init__(self, address: str):
        self.channel = insecure_channel(address)
        self.stub = service_pb2_grpc.OperatorServiceStub(self.channel)

    async def register(self, owner: str, request_id: str, spec: job_pb2.JobSpec) -> job_pb2.Job:
        response = await self.stub.RegisterJob(
            pb.RegisterJobRequest(owner=owner, request_id=request_id, spec=spec), timeout=30
        )
        return response.job

    async def get(self, job_id: str) -> pb.GetJobResponse:
        return await self.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)

    async def list_jobs(
        self, owner: str, page_size: int, page_token: str, statuses: list[int]
    ) -> pb.ListJobsResponse:
        return await self.stub.ListJobs(
            pb.ListJobsRequest(owner=owner, page_size=page_size, page_token=page_token, statuses=statuses),  # type: ignore[arg-type]
            timeout=30,
        )

    async def stop(self, job_id: str) -> job_pb2.Job:
        response = await self.stub.StopJob(pb.StopJobRequest(job_id=job_id), timeout=120)
        return response.job

    async def watch(self, job_id: str, after_sequence: int) -> AsyncIterator[pb.WatchJobResponse]:
        async for response in self.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
        ):
            yield response

    async def logs(self, job_id: str, follow: bool, after_sequence: int) -> AsyncIterator[job_pb2.LogChunk]:
        request = pb.GetJobLogsRequest(job_id=job_id, follow=follow, after_sequence=after_sequence)
        async for response in self.stub.GetJobLogs(request):
            yield response.chunk

    async def environments(self) -> list[job_pb2.ComputeEnvironment]:
        response = await self.stub.GetEnvironments(pb.GetEnvironmentsRequest(), timeout=10)
        return list(response.environments)

    async def close(self) -> None:
        await self.channel.close()
