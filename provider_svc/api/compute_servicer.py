"""ComputeService: protobuf in, authentication, front-door calls, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2, service_pb2_grpc
from c2d_common.errors import InvalidArgument
from c2d_common.ids import check_address
from c2d_common.result_wire import encode_piece
from c2d_common.streams import until
from provider_svc.domain.auth import Authenticator
from provider_svc.domain.compute import ComputeFrontDoor, OrderRef, RawAlgorithmRequest, StartJob

SERVICE = service_pb2.DESCRIPTOR.services_by_name["ComputeService"]


def _method(name: str) -> str:
    return str(SERVICE.methods_by_name[name].full_name)


class ComputeServicer(service_pb2_grpc.ComputeServiceServicer):
    def __init__(self, front_door: ComputeFrontDoor, auth: Authenticator, closing: asyncio.Event):
        self.front_door = front_door
        self.auth = auth
        self.closing = closing

    async def _consumer(self, name: str, request: Message) -> str:
        address = check_address(request.consumer_address)  # type: ignore[attr-defined]
        return await self.auth.authenticate(_method(name), request, address)

    async def _stream_consumer(self, name: str, request: Message, context: grpc.aio.ServicerContext) -> str:
        consumer = await self._consumer(name, request)
        # Tells the client at once that the call is authenticated (it may re-sign a stale nonce).
        await context.send_initial_metadata(())
        return consumer

    async def Start(self, request: pb.StartRequest, context: grpc.aio.ServicerContext) -> pb.StartResponse:
        consumer = await self._consumer("Start", request)
        raw = None
        if request.WhichOneof("algorithm") == "raw_algorithm":
            raw = RawAlgorithmRequest(
                code=request.raw_algorithm.code,
                entrypoint=list(request.raw_algorithm.entrypoint),
                runtime=request.raw_algorithm.runtime,
            )
        job = await self.front_door.start(
            StartJob(
                consumer=consumer,
                dataset_dids=[request.dataset_did, *request.additional_dataset_dids],
                algorithm_did=request.algorithm_did,
                raw_algorithm=raw,
                environment_id=request.environment_id,
                parameters=request.algorithm_parameters,
                request_id=request.request_id,
                orders=[OrderRef(did=o.did, tx_id=o.tx_id) for o in request.orders],
            )
        )
        return pb.StartResponse(job_id=job.job_id, job=job)

    async def GetJobDetails(
        self, request: pb.GetJobDetailsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobDetailsResponse:
        consumer = await self._consumer("GetJobDetails", request)
        job, history = await self.front_door.details(consumer, request.job_id)
        return pb.GetJobDetailsResponse(job=job, history=history)

    async def Stop(self, request: pb.StopRequest, context: grpc.aio.ServicerContext) -> pb.StopResponse:
        consumer = await self._consumer("Stop", request)
        return pb.StopResponse(job=await self.front_door.stop(consumer, request.job_id))

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        consumer = await self._consumer("List", request)
        jobs, token = await self.front_door.list_jobs(
            consumer, request.page_size, request.page_token, list(request.statuses)
        )
        return pb.ListResponse(jobs=jobs, next_page_token=token)

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchResponse]:
        consumer = await self._stream_consumer("Watch", request, context)
        watch = self.front_door.watch(consumer, request.job_id, request.after_sequence)
        async for event, job in until(self.closing, watch):
            response = pb.WatchResponse(event=event)
            if job is not None:
                response.job.CopyFrom(job)
            yield response

    async def GetResult(
        self, request: pb.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetResultResponse]:
        consumer = await self._stream_consumer("GetResult", request, context)
        stream = self.front_door.result(consumer, request.job_id, request.name, request.kind, request.offset)
        async for file, offset, data in stream:
            # Serialized here with the data copied once (c2d_common.result_wire); the server's
            # serializer for GetResult sends such bytes as they are.
            yield encode_piece(offset, data, file)  # type: ignore[misc]

    async def GetLogs(
        self, request: pb.GetLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetLogsResponse]:
        consumer = await self._stream_consumer("GetLogs", request, context)
        logs = self.front_door.logs(consumer, request.job_id, request.follow, request.after_sequence)
        async for chunk in until(self.closing, logs):
            yield pb.GetLogsResponse(chunk=chunk)

    async def GetEnvironments(
        self, request: pb.GetEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEnvironmentsResponse:
        return pb.GetEnvironmentsResponse(environments=await self.front_door.environments())

    async def GetNonce(
        self, request: pb.GetNonceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetNonceResponse:
        address = check_address(request.address, "address")
        last = await self.auth.ledger.last_nonce(address)
        return pb.GetNonceResponse(
            nonce=last,
            next_nonce=last + 1,
            provider_address=self.auth.provider_address,
            chain_id=self.front_door.chain_id,
        )

    async def PublishResults(
        self, request: pb.PublishResultsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishResultsResponse:
        consumer = await self._consumer("PublishResults", request)
        compute = None
        if request.HasField("compute"):
            try:
                compute = json_format.MessageToDict(request.compute)
            except ValueError:
                raise InvalidArgument("compute holds NaN or Infinity, which JSON cannot carry") from None
        did = await self.front_door.publish_results(
            consumer, request.job_id, request.name, list(request.result_names), compute
        )
        return pb.PublishResultsResponse(did=did)

    async def InitializeCompute(
        self, request: pb.InitializeComputeRequest, context: grpc.aio.ServicerContext
    ) -> pb.InitializeComputeResponse:
        consumer = await self._consumer("InitializeCompute", request)
        quotes = await self.front_door.initialize(
            consumer,
            [request.dataset_did, *request.additional_dataset_dids],
            request.algorithm_did,
            request.environment_id,
        )
        return pb.InitializeComputeResponse(quotes=quotes, chain_id=self.front_door.chain_id)
