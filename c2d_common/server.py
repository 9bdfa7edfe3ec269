"""The grpc.aio server every service runs: health, reflection, error mapping, graceful shutdown.

A service builds a `ServiceServer`, registers its servicers, calls `start()` (which binds, possibly
on port 0, and reports the real port) and then `wait_for_termination_signal()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from c2d_common.errors import DomainErrorInterceptor
from c2d_common.metrics import MetricsInterceptor, serve_metrics
from c2d_common.tracing import client_interceptors, server_interceptors

log = structlog.get_logger(__name__)

# Result chunks are up to 1 MiB; leave room for the envelope.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    # Notice a client that vanished without closing its connection (its Watch would otherwise
    # hold a stream, an operator stream and a subscription for hours).
    ("grpc.keepalive_time_ms", 60000),
    ("grpc.keepalive_timeout_ms", 20000),
]
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
]


def insecure_channel(
    address: str, extra_interceptors: Iterable[grpc.aio.ClientInterceptor] = ()
) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address, options=CHANNEL_OPTIONS, interceptors=[*client_interceptors(), *extra_interceptors]
    )


async def _run_all(callbacks: list[Callable[[], object]]) -> None:
    for callback in callbacks:
        result = callback()
        if asyncio.iscoroutine(result):
            await result


def _settle_garbage_collector() -> None:
    """Once the service is up, everything loaded so far (modules, protobuf descriptors, web3's and
    SQLAlchemy's machinery: ~150,000 objects) moves to the permanent generation, which collections
    skip. A full collection over them took ~120 ms here, a pause every stream of the service felt
    (it showed as the tail of Watch delivery under load); after the freeze it takes well under a
    millisecond. Young collections come every 50,000 allocations instead of 700, and a full one
    every ten million, so cyclic garbage is still collected as the service runs."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


class ServiceServer:
    def __init__(
        self,
        name: str,
        listen: str,
        service_names: Iterable[str],
        grace_seconds: float = 10.0,
        metrics_listen: str | None = None,
    ):
        self.name = name
        self.listen = listen
        self.grace_seconds = grace_seconds
        self.metrics_listen = metrics_listen
        self.metrics_port: int | None = None
        # Metrics outermost, so that it sees the status code the error mapping chose.
        self.server = grpc.aio.server(
            interceptors=[*server_interceptors(), MetricsInterceptor(), DomainErrorInterceptor()],
            options=SERVER_OPTIONS,
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0
        # Set when shutdown begins: long-lived streams end on it (see c2d_common.streams.until).
        self.closing = asyncio.Event()
        self._before_stop: list[Callable[[], object]] = []
        self._on_stop: list[Callable[[], object]] = []

    def before_stop(self, callback: Callable[[], object]) -> None:
        """Runs (awaited if a coroutine) once health says NOT_SERVING, before calls are drained:
        the place to end long-lived streams so that draining does not wait for them."""
        self._before_stop.append(callback)

    def on_stop(self, callback: Callable[[], object]) -> None:
        """Runs (awaited if a coroutine) after the server stopped accepting calls."""
        self._on_stop.append(callback)

    def bind(self) -> int:
        """Binds the listen address (once) and returns the port, before the server starts: a
        service whose public address names its port learns it here when it listens on port 0."""
        if self.port == 0:
            self.port = self.server.add_insecure_port(self.listen)
            if self.port == 0:
                raise RuntimeError(f"{self.name}: could not bind {self.listen}")
        return self.port

    async def start(self, port_file: str | None = None) -> int:
        self.bind()
        await self.server.start()
        _settle_garbage_collector()
        self.metrics_port = serve_metrics(self.metrics_listen)
        if self.metrics_port is not None and self.metrics_listen:
            log.info(
                "metrics", address=f"{self.metrics_listen.rsplit(':', 1)[0]}:{self.metrics_port}/metrics"
            )
        for service in ["", *self.service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        host = self.listen.rsplit(":", 1)[0]
        log.info("listening", address=f"{host}:{self.port}")
        if port_file:
            # Written atomically: whoever waits for it (tests, the demo) never reads half a number.
            tmp = Path(port_file + ".tmp")
            tmp.write_text(str(self.port))
            tmp.replace(port_file)
        return self.port

    async def stop(self) -> None:
        self.closing.set()
        await self.health.enter_graceful_shutdown()
        await _run_all(self._before_stop)
        await self.server.stop(self.grace_seconds)
        await _run_all(self._on_stop)
        log.info("stopped")

    async def wait_for_termination_signal(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.ensure_future(self.server.wait_for_termination())
        signalled = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if signalled.done():
            log.info("termination signal received, shutting down gracefully")
        await self.stop()
        waiter.cancel()
        signalled.cancel()
