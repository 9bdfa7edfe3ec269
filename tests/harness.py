"""Starts the three services in this process on port 0, on temporary state, for integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d_common.server import ServiceServer, insecure_channel
from engine_svc.config import EngineSettings
from engine_svc.domain.runner import JobRunner
from engine_svc.server import build_engine
from operator_svc.config import OperatorSettings
from operator_svc.domain.registry import JobRegistry
from operator_svc.server import build_operator
from provider_svc.config import ProviderSettings
from provider_svc.server import build_provider

CONSUMER = "0x" + "c0" * 20
OTHER_CONSUMER = "0x" + "0d" * 20
PUBLISHER = "0x" + "9b" * 20


@dataclass
class Suite:
    root: Path
    engine: ServiceServer
    runner: JobRunner
    operator: ServiceServer
    registry: JobRegistry
    provider: ServiceServer
    channel: grpc.aio.Channel
    engine_settings: EngineSettings

    @property
    def compute(self) -> provider_grpc.ComputeServiceStub:
        return provider_grpc.ComputeServiceStub(self.channel)

    @property
    def assets(self) -> provider_grpc.AssetServiceStub:
        return provider_grpc.AssetServiceStub(self.channel)

    @property
    def provider_address(self) -> str:
        return f"127.0.0.1:{self.provider.port}"


@contextlib.asynccontextmanager
async def running_suite(
    root: Path,
    database_url: str | None = None,
    engine_settings: EngineSettings | None = None,
    metrics: bool = False,
) -> AsyncIterator[Suite]:
    """With metrics, each service also serves /metrics on a port of its own (ServiceServer.metrics_port)."""
    metrics_listen = "127.0.0.1:0" if metrics else None
    engine_settings = replace(
        engine_settings or EngineSettings(),
        listen="127.0.0.1:0",
        work_dir=root / "work",
        results_dir=root / "results",
        # Tests publish files from their own temporary folders, beside or inside the suite's root.
        file_url_roots=(root.parent,),
        file_url_denied=(root / "operator.db",),
        metrics_listen=metrics_listen,
    )
    engine, runner = build_engine(engine_settings)
    engine_port = await engine.start()
    operator, registry = await build_operator(
        OperatorSettings(
            listen="127.0.0.1:0",
            database_url=database_url or f"sqlite:///{root}/operator.db",
            engine_addresses=(f"127.0.0.1:{engine_port}",),
            engine_retry_seconds=5,
            metrics_listen=metrics_listen,
        )
    )
    operator_port = await operator.start()
    provider = build_provider(
        ProviderSettings(
            listen="127.0.0.1:0",
            operator_address=f"127.0.0.1:{operator_port}",
            assets_dir=root / "assets",
            results_dir=root / "results",
            file_url_roots=(root.parent,),
            file_url_denied=(root / "operator.db",),
            metrics_listen=metrics_listen,
        )
    )
    await provider.start()
    channel = insecure_channel(f"127.0.0.1:{provider.port}")
    try:
        yield Suite(root, engine, runner, operator, registry, provider, channel, engine_settings)
    finally:
        await channel.close()
        await provider.stop()
        await operator.stop()
        await engine.stop()
