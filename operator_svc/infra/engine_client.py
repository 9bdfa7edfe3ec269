"""The operator's side of the engine's gRPC API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from c2d.common.v1 import job_pb2
from c2d.engine.v1 import request_response_pb2 as engine_pb2
from c2d.engine.v1 import service_pb2_grpc as engine_grpc
from c2d_common.server import insecure_channel
from operator_svc.domain.model import (
    EngineUnavailable,
    LogPiece,
    ProgressCursor,
    StatusUpdate,
    StopAnswer,
)
from operator_svc.infra.job_store import NewResult

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


def _unavailable_or(exc: grpc.aio.AioRpcError) -> Exception:
    """EngineUnavailable for what a retry may cure; the error itself otherwise."""
    if exc.code() in _RETRYABLE:
        return EngineUnavailable(f"{exc.code().name}: {exc.details()}")
    return exc


class GrpcEngineGateway:
    def __init__(self, address: str):
        self.address = address
        self.channel = insecure_channel(address)
        self.stub = engine_grpc.EngineServiceStub(self.channel)

    async def run_job(
        self, job_id: str, owner: str, spec: bytes, after: ProgressCursor
    ) -> AsyncIterator[StatusUpdate | LogPiece]:
        request = engine_pb2.RunJobRequest(
            job_id=job_id,
            owner=owner,
            spec=job_pb2.JobSpec.FromString(spec),
            run_id=after.run_id,
            after_progress=after.position,
        )
        try:
            async for response in self.stub.RunJob(request, wait_for_ready=False):
                which = response.WhichOneof("progress")
                cursor = ProgressCursor(response.run_id, response.progress_index)
                if which == "log":
                    yield LogPiece(stream=response.log.stream, data=response.log.data, cursor=cursor)
                elif which == "status":
                    status = response.status
                    yield StatusUpdate(
                        status=status.status,
                        status_text=status.status_text,
                        exit_code=status.exit_code if status.HasField("exit_code") else None,
                        out_of_memory=status.out_of_memory,
                        results=[
                            NewResult(r.name, r.kind, r.size, r.sha256, r.location) for r in status.results
                        ],
                        cursor=cursor,
                    )
        except grpc.aio.AioRpcError as exc:
            raise _unavailable_or(exc) from exc

    async def stop_job(self, job_id: str) -> StopAnswer:
        try:
            response = await self.stub.StopJob(engine_pb2.StopJobRequest(job_id=job_id), timeout=60)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable_or(exc) from exc
        if response.was_running:
            return StopAnswer.STOPPED
        return StopAnswer.ALREADY_ENDED if response.already_ended else StopAnswer.NOT_RUNNING

    async def environments(self) -> list[job_pb2.ComputeEnvironment]:
        try:
            response = await self.stub.GetEnvironments(engine_pb2.GetEnvironmentsRequest(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable_or(exc) from exc
        return list(response.environments)

    async def close(self) -> None:
        await self.channel.close()
