"""ComputeService: protobuf in, front-door calls, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc
from c2d_common.ids import check_address
from c2d_common.streams import until
from provider_svc.domain.compute import ComputeFrontDoor, RawAlgorithmRequest, StartJob


class ComputeServicer(service_pb2_grpc.ComputeServiceServicer):
    def __init__(self, front_door: ComputeFrontDoor, closing: asyncio.Event):
        self.front_door = front_door
        self.closing = closing

    async def Start(self, request: pb.StartRequest, context: grpc.aio.ServicerContext) -> pb.StartResponse:
        raw = None
        if request.WhichOneof("algorithm") == "raw_algorithm":
            raw = RawAlgorithmRequest(
                code=request.raw_algorithm.code,
                entrypoint=list(request.raw_algorithm.entrypoint),
                runtime=request.raw_algorithm.runtime,
            )
        job = await self.front_door.start(
            StartJob(
                consumer=check_address(request.consumer_address),
                dataset_dids=[request.dataset_did, *request.additional_dataset_dids],
                algorithm_did=request.algorithm_did,
                raw_algorithm=raw,
                environment_id=request.environment_id,
                parameters=request.algorithm_parameters,
                request_id=request.request_id,
            )
        )
        return pb.StartResponse(job_id=job.job_id, job=job)

    async def GetJobDetails(
        self, request: pb.GetJobDetailsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobDetailsResponse:
        job, history = await self.front_door.details(check_address(request.consumer_address), request.job_id)
        return pb.GetJobDetailsResponse(job=job, history=history)

    async def Stop(self, request: pb.StopRequest, context: grpc.aio.ServicerContext) -> pb.StopResponse:
        job = await self.front_door.stop(check_address(request.consumer_address), request.job_id)
        return pb.StopResponse(job=job)

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        jobs, token = await self.front_door.list_jobs(
            check_address(request.consumer_address),
            request.page_size,
            request.page_token,
            list(request.statuses),
        )
        return pb.ListResponse(jobs=jobs, next_page_token=token)

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchResponse]:
        consumer = check_address(request.consumer_address)
        watch = self.front_door.watch(consumer, request.job_id, request.after_sequence)
        async for event, job in until(self.closing, watch):
            response = pb.WatchResponse(event=event)
            if job is not None:
                response.job.CopyFrom(job)
            yield response

    async def GetResult(
        self, request: pb.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetResultResponse]:
        consumer = check_address(request.consumer_address)
        stream = self.front_door.result(consumer, request.job_id, request.name, request.kind, request.offset)
        async for file, offset, data in stream:
            response = pb.GetResultResponse(offset=offset, data=data)
            if file is not None:
                response.file.CopyFrom(file)
            yield response

    async def GetLogs(
        self, request: pb.GetLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetLogsResponse]:
        consumer = check_address(request.consumer_address)
        logs = self.front_door.logs(consumer, request.job_id, request.follow, request.after_sequence)
        async for chunk in until(self.closing, logs):
            yield pb.GetLogsResponse(chunk=chunk)

    async def GetEnvironments(
        self, request: pb.GetEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEnvironmentsResponse:
        return pb.GetEnvironmentsResponse(environments=await self.front_door.environments())
