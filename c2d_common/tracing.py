"""OpenTelemetry tracing across the three gRPC hops.

Every server and channel carries the standard gRPC instrumentation, so a consumer's Start, the
operator's RegisterJob, the engine's RunJob and the engine's phases (configure, algorithm,
publish) form one trace per job: the operator drives each job from inside the RegisterJob that
created it, and the engine runs it inside that RunJob.

Where spans go is chosen per process with C2D_TRACES: unset for none, `console` to print them,
`file:PATH` to append them to a JSON-lines file (see docs/observability.md).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

tracer = trace.get_tracer("c2d")


class JsonLinesSpanExporter(SpanExporter):
    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(json.loads(span.to_json())) + "\n" for span in spans]
        with self._lock, open(self.path, "a") as sink:
            sink.writelines(lines)
        return SpanExportResult.SUCCESS


def configure_tracing(service: str, spec: str | None = None) -> None:
    spec = spec if spec is not None else os.environ.get("C2D_TRACES", "")
    if not spec:
        return
    exporter: SpanExporter
    if spec == "console":
        exporter = ConsoleSpanExporter()
    elif spec.startswith("file:"):
        exporter = JsonLinesSpanExporter(spec.removeprefix("file:"))
    else:
        raise ValueError(f"C2D_TRACES={spec!r}: use console or file:PATH")
    provider = TracerProvider(resource=Resource.create({"service.name": f"c2d-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def tracing_enabled() -> bool:
    """Whether spans go anywhere: a TracerProvider of the SDK is set (configure_tracing, or a
    test's). Without one, the gRPC instrumentation would only cost CPU on every call and every
    streamed message (a few percent of the services' CPU under load)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def server_interceptors() -> list[Any]:
    return [aio_server_interceptor()] if tracing_enabled() else []


def client_interceptors() -> list[Any]:
    return list(aio_client_interceptors()) if tracing_enabled() else []
