"""Builds the provider: asset store, operator client, result store, gRPC server."""

from __future__ import annotations

from c2d.provider.v1 import service_pb2, service_pb2_grpc
from c2d_common.server import ServiceServer
from provider_svc.api.asset_servicer import AssetServicer
from provider_svc.api.compute_servicer import ComputeServicer
from provider_svc.config import ProviderSettings
from provider_svc.domain.assets import AssetStore
from provider_svc.domain.compute import ComputeFrontDoor
from provider_svc.infra.operator_client import OperatorClient
from provider_svc.infra.result_store import LocalResultStore

SERVICE_NAMES = [s.full_name for s in service_pb2.DESCRIPTOR.services_by_name.values()]


def build_provider(settings: ProviderSettings) -> ServiceServer:
    assets = AssetStore(settings.assets_dir, settings.file_policy())
    operator = OperatorClient(settings.operator_address)
    front_door = ComputeFrontDoor(assets, operator, LocalResultStore(settings.results_dir))
    server = ServiceServer("provider", settings.listen, SERVICE_NAMES, metrics_listen=settings.metrics_listen)
    service_pb2_grpc.add_ComputeServiceServicer_to_server(
        ComputeServicer(front_door, server.closing), server.server
    )
    service_pb2_grpc.add_AssetServiceServicer_to_server(AssetServicer(assets), server.server)
    server.on_stop(operator.close)
    return server


async def serve(settings: ProviderSettings) -> None:
    server = build_provider(settings)
    await server.start(settings.port_file)
    await server.wait_for_termination_signal()
