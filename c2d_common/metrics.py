"""Prometheus metrics: what every service exposes, and the HTTP endpoint that serves them.

Each service serves /metrics on C2D_METRICS_LISTEN (host:port; unset: no endpoint). Every RPC is
counted by method and status code, and unary RPCs are timed; each service adds its own (jobs by
status in the operator, phase durations in the engine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from c2d_common.interceptors import HandlerWrappingInterceptor, Stream, Unary

RPCS_HANDLED = Counter(
    "c2d_grpc_server_handled_total", "RPCs completed, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "c2d_grpc_server_handling_seconds",
    "Time to answer a unary RPC",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _ended_with(exc: BaseException, context: grpc.aio.ServicerContext) -> str:
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL"


class MetricsInterceptor(HandlerWrappingInterceptor):
    """Outermost of ours: sees the status every call ends with, domain errors included."""

    def wrap_unary(self, method: str, inner: Unary) -> Unary:
        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException as exc:
                code = _ended_with(exc, context)
                raise
            finally:
                RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
                RPCS_HANDLED.labels(method, code).inc()

        return unary_unary

    def wrap_stream(self, method: str, inner: Stream) -> Stream:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            code = "OK"
            try:
                async for item in inner(request, context):
                    yield item
            except BaseException as exc:
                code = _ended_with(exc, context)
                raise
            finally:
                RPCS_HANDLED.labels(method, code).inc()

        return unary_stream


def serve_metrics(listen: str | None) -> int | None:
    """Starts the /metrics endpoint (a thread); answers its port, or None when not configured."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    return int(server.server_port)
