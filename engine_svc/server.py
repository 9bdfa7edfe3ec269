"""Builds the engine: backend, runner, gRPC server."""

from __future__ import annotations

from c2d.engine.v1 import service_pb2, service_pb2_grpc
from c2d_common.server import ServiceServer
from engine_svc.api.servicer import EngineServicer
from engine_svc.config import EngineSettings
from engine_svc.domain.runner import JobRunner, RunnerSettings
from engine_svc.domain.runs import RunRegistry
from engine_svc.infra.local_backend import LocalBackend, LocalBackendSettings, default_runtimes

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name


def build_engine(settings: EngineSettings) -> tuple[ServiceServer, JobRunner]:
    backend = LocalBackend(
        LocalBackendSettings(
            work_dir=settings.work_dir,
            results_dir=settings.results_dir,
            file_policy=settings.file_policy(),
            allow_private_input_hosts=settings.allow_private_input_hosts,
            runtimes={**default_runtimes(), **settings.runtimes},
        )
    )
    runner = JobRunner(
        backend,
        list(settings.environments),
        RunnerSettings(
            max_concurrent_jobs=settings.max_concurrent_jobs,
            configure_timeout_seconds=settings.configure_timeout_seconds,
            publish_timeout_seconds=settings.publish_timeout_seconds,
        ),
        RunRegistry(),
    )
    server = ServiceServer("engine", settings.listen, [SERVICE_NAME], metrics_listen=settings.metrics_listen)
    service_pb2_grpc.add_EngineServiceServicer_to_server(EngineServicer(runner), server.server)

    server.before_stop(runner.shutdown)
    server.on_stop(backend.close)
    return server, runner


async def serve(settings: EngineSettings) -> None:
    server, _runner = build_engine(settings)
    await server.start(settings.port_file)
    await server.wait_for_termination_signal()
