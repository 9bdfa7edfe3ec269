"""EngineService: protobuf in, runner calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from c2d.common.v1 import job_pb2
from c2d.engine.v1 import request_response_pb2 as pb
from c2d.engine.v1 import service_pb2_grpc
from c2d_common.convert import check_job_spec, result_file_proto
from c2d_common.errors import Unavailable
from c2d_common.ids import check_address, check_job_id
from engine_svc.domain.model import Environment, LogOutput, StatusChange
from engine_svc.domain.runner import EngineShuttingDown, JobRunner, StopOutcome


def environment_to_proto(env: Environment) -> job_pb2.ComputeEnvironment:
    return job_pb2.ComputeEnvironment(
        id=env.id,
        description=env.description,
        cpus=env.cpus,
        memory_bytes=env.memory_bytes,
        disk_bytes=env.disk_bytes,
        max_duration_seconds=env.max_duration_seconds,
        network_allowed=env.network_allowed,
        free=env.free,
        runtimes=list(env.runtimes),
        gpus=env.gpus,
    )


def _status_to_proto(change: StatusChange) -> pb.StatusUpdate:
    update = pb.StatusUpdate(
        status=change.status,  # type: ignore[arg-type]
        status_text=change.status_text,
        out_of_memory=change.out_of_memory,
        results=[result_file_proto(r) for r in change.results],
    )
    if change.exit_code is not None:
        update.exit_code = change.exit_code
    return update


class EngineServicer(service_pb2_grpc.EngineServiceServicer):
    def __init__(self, runner: JobRunner):
        self.runner = runner

    async def RunJob(
        self, request: pb.RunJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunJobResponse]:
        job_id = check_job_id(request.job_id)
        owner = check_address(request.owner, "owner")
        check_job_spec(request.spec)
        try:
            run = self.runner.attach_or_start(job_id, owner, request.spec)
        except EngineShuttingDown as exc:
            raise Unavailable(str(exc)) from None
        async for position, progress in run.follow(request.run_id, request.after_progress):
            if isinstance(progress, LogOutput):
                yield pb.RunJobResponse(
                    log=job_pb2.LogChunk(stream=progress.stream, data=progress.data),  # type: ignore[arg-type]
                    run_id=run.run_id,
                    progress_index=position,
                )
            else:
                yield pb.RunJobResponse(
                    status=_status_to_proto(progress), run_id=run.run_id, progress_index=position
                )

    async def StopJob(
        self, request: pb.StopJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopJobResponse:
        outcome = await self.runner.stop(check_job_id(request.job_id))
        return pb.StopJobResponse(
            was_running=outcome is StopOutcome.STOPPED, already_ended=outcome is StopOutcome.ALREADY_ENDED
        )

    async def GetEnvironments(
        self, request: pb.GetEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEnvironmentsResponse:
        return pb.GetEnvironmentsResponse(
            environments=[environment_to_proto(e) for e in self.runner.environments.values()]
        )
