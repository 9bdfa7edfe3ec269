"""Builds the operator: database (migrated), engine gateway, registry, gRPC server."""

from __future__ import annotations

import asyncio

import structlog

from c2d.operator.v1 import service_pb2, service_pb2_grpc
from c2d_common.server import ServiceServer
from operator_svc.api.servicer import OperatorServicer
from operator_svc.config import OperatorSettings
from operator_svc.domain.engines import EngineSet
from operator_svc.domain.hub import EventHub
from operator_svc.domain.registry import JobRegistry, RegistrySettings
from operator_svc.infra.database import make_engine, migrate
from operator_svc.infra.engine_client import GrpcEngineGateway
from operator_svc.infra.job_store import JobStore
from operator_svc.infra.job_writer import JobWriter
from operator_svc.infra.metrics import JOB_COUNTS

log = structlog.get_logger(__name__)
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name


async def build_operator(settings: OperatorSettings) -> tuple[ServiceServer, JobRegistry]:
    # No pre-ping: a round trip more for every connection taken from the pool, on the path of every
    # status change. A connection the database dropped fails one read (which the store retries on a
    # new one) or one batch of writes (which the writer retries, then the job's driver).
    db = make_engine(settings.database_url, pre_ping=False)
    await asyncio.to_thread(migrate, db)
    gateways = {address: GrpcEngineGateway(address) for address in settings.engine_addresses}
    writer = JobWriter(db)
    registry = JobRegistry(
        JobStore(db),
        writer,
        EngineSet(dict(gateways)),
        EventHub(),
        RegistrySettings(
            log_limit_bytes=settings.log_limit_bytes, engine_retry_seconds=settings.engine_retry_seconds
        ),
    )
    server = ServiceServer(
        "operator", settings.listen, [SERVICE_NAME], metrics_listen=settings.metrics_listen
    )
    JOB_COUNTS.attach(registry.store)
    server.on_stop(lambda: JOB_COUNTS.detach(registry.store))
    service_pb2_grpc.add_OperatorServiceServicer_to_server(
        OperatorServicer(registry, server.closing), server.server
    )

    async def release() -> None:
        for gateway in gateways.values():
            await gateway.close()
        await asyncio.to_thread(writer.close)
        db.dispose()

    # Jobs go on in the engine; the next operator re-attaches to them (resume_unfinished).
    server.before_stop(registry.close)
    server.on_stop(release)
    return server, registry


async def serve(settings: OperatorSettings) -> None:
    server, registry = await build_operator(settings)
    await server.start(settings.port_file)
    resumed = await registry.resume_unfinished()
    if resumed:
        log.info("resumed unfinished jobs", count=resumed)
    await server.wait_for_termination_signal()
