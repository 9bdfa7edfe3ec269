"""Builds the provider: asset store, operator client, result store, gRPC server."""

from __future__ import annotations

from typing import Any

import grpc
import structlog

from c2d.provider.v1 import service_pb2, service_pb2_grpc
from c2d_common.database import make_engine
from c2d_common.result_wire import serialize_response
from c2d_common.server import ServiceServer
from c2d_common.signing import address_of
from provider_svc.api.asset_servicer import AssetServicer
from provider_svc.api.compute_servicer import ComputeServicer
from provider_svc.config import ProviderSettings
from provider_svc.domain.assets import AssetStore
from provider_svc.domain.auth import Authenticator
from provider_svc.domain.compute import ComputeFrontDoor, OrderChecking
from provider_svc.infra.ledger import Ledger, migrate
from provider_svc.infra.operator_client import OperatorClient
from provider_svc.infra.result_store import ResultStore

log = structlog.get_logger(__name__)

SERVICE_NAMES = [s.full_name for s in service_pb2.DESCRIPTOR.services_by_name.values()]


def build_provider(settings: ProviderSettings, orders: OrderChecking | None = None) -> ServiceServer:
    database = make_engine(settings.resolved_database_url())
    migrate(database)
    ledger = Ledger(database)
    key = settings.resolved_private_key()
    if settings.file_url_roots and not settings.publishers:
        log.warning(
            "C2D_FILE_URL_ROOTS is set but C2D_PUBLISHERS lists nobody: no one may publish file:// "
            "data; list the publishers' addresses in C2D_PUBLISHERS"
        )
    chain_id = orders.chain_id if orders is not None else 0
    server = ServiceServer("provider", settings.listen, SERVICE_NAMES, metrics_listen=settings.metrics_listen)
    public_url = settings.resolved_public_url(server.bind())
    assets = AssetStore(
        settings.assets_dir, settings.file_policy(), public_url, chain_id, settings.publisher_policy()
    )
    operator = OperatorClient(settings.operator_address)
    front_door = ComputeFrontDoor(
        assets, operator, ResultStore(settings.results_dir), ledger, public_url, orders
    )
    auth = Authenticator(ledger, address_of(key))
    service_pb2_grpc.add_ComputeServiceServicer_to_server(
        ComputeServicer(front_door, auth, server.closing), _PreSerializedResults(server.server)
    )
    service_pb2_grpc.add_AssetServiceServicer_to_server(AssetServicer(assets, auth), server.server)
    server.on_stop(operator.close)
    server.on_stop(database.dispose)
    return server


class _PreSerializedResults:
    """Registers the generated ComputeService handlers on the server with one change: GetResult's
    pieces, which the servicer serializes itself (c2d_common.result_wire), go out as they are."""

    def __init__(self, server: grpc.aio.Server):
        self._server = server

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # registered below, from the same handlers, with GetResult's serializer replaced

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        generated = handlers["GetResult"]
        handlers = {
            **handlers,
            "GetResult": grpc.unary_stream_rpc_method_handler(
                generated.unary_stream,
                request_deserializer=generated.request_deserializer,
                response_serializer=serialize_response,
            ),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        self._server.add_registered_method_handlers(service, handlers)


async def serve(settings: ProviderSettings) -> None:
    # web3 is imported only where a chain is configured: about a second of start-up otherwise.
    from provider_svc.infra.chain import ChainSettings, OrderChecker

    orders = None
    chain = ChainSettings.from_env(settings.resolved_private_key())
    if chain is not None:
        orders = OrderChecker(chain)
    server = build_provider(settings, orders)
    if orders is not None:
        server.on_stop(orders.close)
    await server.start(settings.port_file)
    await server.wait_for_termination_signal()
