"""Starts the three services in this process on port 0, on temporary state, for integration tests."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d_common.server import ServiceServer, insecure_channel
from c2d_common.signing import address_of, signing_interceptors
from engine_svc.config import EngineSettings
from engine_svc.domain.runner import JobRunner
from engine_svc.server import build_engine
from operator_svc.config import OperatorSettings
from operator_svc.domain.registry import JobRegistry
from operator_svc.server import build_operator
from provider_svc.config import ProviderSettings
from provider_svc.domain.compute import OrderChecking
from provider_svc.server import build_provider


def _test_key(name: str) -> str:
    return "0x" + hashlib.sha256(f"c2d test key: {name}".encode()).hexdigest()


# Every test identity has a key: the suite's channel signs each call whose consumer (or publisher)
# is one of them. A test that needs an unsigned or wrongly signed call sets `auth` itself, or uses
# an address outside this table.
CONSUMER_KEY = _test_key("consumer")
OTHER_CONSUMER_KEY = _test_key("other consumer")
PUBLISHER_KEY = _test_key("publisher")
SECOND_PUBLISHER_KEY = _test_key("second publisher")
NOBODY_KEY = _test_key("nobody")
PROVIDER_KEY = _test_key("provider")
CONSUMER = address_of(CONSUMER_KEY)
OTHER_CONSUMER = address_of(OTHER_CONSUMER_KEY)
PUBLISHER = address_of(PUBLISHER_KEY)
SECOND_PUBLISHER = address_of(SECOND_PUBLISHER_KEY)
NOBODY = address_of(NOBODY_KEY)  # signs, but owns nothing
PROVIDER = address_of(PROVIDER_KEY)
TEST_KEYS = {
    CONSUMER: CONSUMER_KEY,
    OTHER_CONSUMER: OTHER_CONSUMER_KEY,
    PUBLISHER: PUBLISHER_KEY,
    SECOND_PUBLISHER: SECOND_PUBLISHER_KEY,
    NOBODY: NOBODY_KEY,
}


def signed_channel(address: str, keys: dict[str, str] | None = None) -> grpc.aio.Channel:
    """A channel to a provider (whose key is PROVIDER_KEY) that signs for the test identities."""
    return insecure_channel(address, signing_interceptors(keys or TEST_KEYS, PROVIDER))


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
    orders: OrderChecking | None = None,
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
            private_key=PROVIDER_KEY,
            # The test identities publish file:// data from the tests' folders (C2D_PUBLISHERS).
            publishers=tuple(TEST_KEYS),
        ),
        orders,
    )
    await provider.start()
    channel = signed_channel(f"127.0.0.1:{provider.port}")
    try:
        yield Suite(root, engine, runner, operator, registry, provider, channel, engine_settings)
    finally:
        await channel.close()
        await provider.stop()
        await operator.stop()
        await engine.stop()
