"""Builds the engine: backend, runner, gRPC server.

The backend is chosen by C2D_BACKEND: `local` (sandboxes on this machine, the default) or
`kubernetes` (a pod per phase, configured by C2D_K8S_*; see docs/kubernetes.md).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import structlog
from grpc_health.v1 import health_pb2

from c2d.engine.v1 import service_pb2, service_pb2_grpc
from c2d_common.env import ConfigError
from c2d_common.server import ServiceServer
from engine_svc.api.servicer import EngineServicer
from engine_svc.config import EngineSettings
from engine_svc.domain.model import Backend
from engine_svc.domain.runner import JobRunner, RunnerSettings
from engine_svc.domain.runs import RunRegistry
from engine_svc.infra.local_backend import LocalBackend, LocalBackendSettings, default_runtimes

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from engine_svc.infra.kubernetes import KubernetesSettings

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name
BACKENDS = ("local", "kubernetes")


def build_engine(
    settings: EngineSettings,
    *,
    backend: str | None = None,
    kubernetes: KubernetesSettings | None = None,
) -> tuple[ServiceServer, JobRunner]:
    """backend: "local" or "kubernetes" (default: C2D_BACKEND, else local); kubernetes: that
    backend's settings (default: from C2D_K8S_*)."""
    name = backend or os.environ.get("C2D_BACKEND", "") or "local"
    if name not in BACKENDS:
        raise ConfigError(f"C2D_BACKEND={name!r}: use local or kubernetes")
    server = ServiceServer("engine", settings.listen, [SERVICE_NAME], metrics_listen=settings.metrics_listen)
    chosen: Backend
    if name == "kubernetes":
        # Imported only when chosen: the Kubernetes client takes seconds to import.
        from engine_svc.infra.kubernetes import KubernetesBackend, KubernetesSettings

        k8s = KubernetesBackend(
            kubernetes or KubernetesSettings.from_env(),
            results_dir=settings.results_dir,
            allow_private_input_hosts=settings.allow_private_input_hosts,
            storage=settings.storage,
        )
        # Before the runner cancels its runs: the jobs' pods keep running for the next engine.
        server.before_stop(k8s.detach)
        server.on_stop(k8s.close)
        chosen = k8s
    else:
        with_gpus = [e.id for e in settings.environments if e.gpus]
        if with_gpus:
            raise ConfigError(
                f"environment {with_gpus[0]} offers GPUs, which the local backend cannot give an "
                "algorithm: offer GPUs on the Kubernetes backend (C2D_BACKEND=kubernetes)"
            )
        local = LocalBackend(
            LocalBackendSettings(
                work_dir=settings.work_dir,
                results_dir=settings.results_dir,
                file_policy=settings.file_policy(),
                allow_private_input_hosts=settings.allow_private_input_hosts,
                storage=settings.storage,
                runtimes={**default_runtimes(), **settings.runtimes},
                sandbox_nice=settings.sandbox_nice,
                sandbox_user=settings.sandbox_uid,
            )
        )
        server.on_stop(local.close)
        chosen = local
    runner = JobRunner(
        chosen,
        list(settings.environments),
        RunnerSettings(
            max_concurrent_jobs=settings.max_concurrent_jobs,
            configure_timeout_seconds=settings.configure_timeout_seconds,
            publish_timeout_seconds=settings.publish_timeout_seconds,
        ),
        RunRegistry(),
    )
    service_pb2_grpc.add_EngineServiceServicer_to_server(EngineServicer(runner), server.server)
    server.before_stop(runner.shutdown)
    return server, runner


async def start_backend(runner: JobRunner) -> None:
    """Connects a Kubernetes backend at start-up, so that a wrong kubeconfig stops the engine at
    once and the jobs an earlier engine left are found (the local backend needs nothing)."""
    start = getattr(runner.backend, "start", None)
    if start is not None:
        await start(wait_for_sync=False)


async def report_ready_when_synced(server: ServiceServer, runner: JobRunner) -> asyncio.Task[None] | None:
    """The engine service is NOT_SERVING until a Kubernetes backend has listed its pods (the API
    server answers, and the Role allows what the engine does), then SERVING: a readiness probe on
    the service sees a cluster the engine cannot use, where the overall health ("", for liveness)
    stays SERVING. The local backend is ready at once."""
    watcher = getattr(runner.backend, "watcher", None)
    if watcher is None:
        return None
    await server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def wait() -> None:
        await watcher.synced.wait()
        await server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info("kubernetes backend synced: serving")

    return asyncio.create_task(wait(), name="c2d-engine-ready")


async def serve(settings: EngineSettings) -> None:
    server, runner = build_engine(settings)
    await start_backend(runner)
    await server.start(settings.port_file)
    ready = await report_ready_when_synced(server, runner)
    try:
        await server.wait_for_termination_signal()
    finally:
        if ready is not None:
            ready.cancel()
