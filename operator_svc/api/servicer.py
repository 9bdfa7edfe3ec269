"""OperatorService: protobuf in, registry calls, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from c2d.operator.v1 import request_response_pb2 as pb
from c2d.operator.v1 import service_pb2_grpc
from c2d_common.convert import check_job_spec
from c2d_common.errors import Unavailable
from c2d_common.ids import check_address, check_job_id, check_request_id
from c2d_common.streams import until
from operator_svc.api.convert import event_to_proto, job_to_proto, log_to_proto
from operator_svc.domain.model import EngineUnavailable
from operator_svc.domain.registry import JobRegistry


class OperatorServicer(service_pb2_grpc.OperatorServiceServicer):
    def __init__(self, registry: JobRegistry, closing: asyncio.Event):
        self.registry = registry
        self.closing = closing

    async def RegisterJob(
        self, request: pb.RegisterJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterJobResponse:
        owner = check_address(request.owner, "owner")
        check_request_id(request.request_id)
        spec = check_job_spec(request.spec)
        record, created = await self.registry.register(
            owner=owner,
            request_id=request.request_id or None,
            spec=spec.SerializeToString(),
            dataset_dids=[d.did for d in spec.datasets],
            algorithm_did=spec.algorithm.did,
            environment_id=spec.environment_id,
        )
        return pb.RegisterJobResponse(job=job_to_proto(record), created=created)

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        job_id = check_job_id(request.job_id)
        record = await self.registry.get(job_id)
        history = await self.registry.history(job_id)
        return pb.GetJobResponse(job=job_to_proto(record), history=[event_to_proto(e) for e in history])

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        owner = check_address(request.owner, "owner") if request.owner else None
        records, token = await self.registry.list_jobs(
            owner=owner,
            statuses=list(request.statuses),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListJobsResponse(jobs=[job_to_proto(r) for r in records], next_page_token=token)

    async def StopJob(
        self, request: pb.StopJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopJobResponse:
        record = await self.registry.stop(check_job_id(request.job_id))
        return pb.StopJobResponse(job=job_to_proto(record))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchJobResponse]:
        job_id = check_job_id(request.job_id)
        async for item in until(self.closing, self.registry.watch(job_id, request.after_sequence)):
            response = pb.WatchJobResponse(event=event_to_proto(item.event))
            if item.job is not None:
                response.job.CopyFrom(job_to_proto(item.job))
            yield response

    async def GetJobLogs(
        self, request: pb.GetJobLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetJobLogsResponse]:
        job_id = check_job_id(request.job_id)
        async for row in until(
            self.closing, self.registry.logs(job_id, request.follow, request.after_sequence)
        ):
            yield pb.GetJobLogsResponse(chunk=log_to_proto(row))

    async def GetEnvironments(
        self, request: pb.GetEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEnvironmentsResponse:
        try:
            environments = await self.registry.environments()
        except EngineUnavailable as exc:
            raise Unavailable("the engine is unreachable; try again shortly") from exc
        return pb.GetEnvironmentsResponse(environments=environments)
