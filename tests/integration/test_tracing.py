"""One trace per job across the three gRPC hops: the consumer's Start, the operator's RegisterJob,
the engine's RunJob and its phases share a trace id."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from c2d_common.status import JobStatus
from tests.conftest import requires_bwrap
from tests.harness import running_suite
from tests.integration import jobs

pytestmark = requires_bwrap


def _exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_a_job_is_one_trace_across_the_services(tmp_path: Path) -> None:
    exporter = _exporter()
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    async with running_suite(tmp_path / "suite") as suite:
        did = await jobs.publish_dataset(suite, [data])
        exporter.clear()
        started = await jobs.start_raw(suite, [did], "print('traced')")
        job = await jobs.wait_terminal(suite, started.job_id)
        assert job.status == JobStatus.FINISHED
    spans = exporter.get_finished_spans()
    exporter.shutdown()  # the provider is process-wide: later tests need not keep their spans
    by_name = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    start = by_name["/c2d.provider.v1.ComputeService/Start"]
    trace_id = start[0].context.trace_id
    in_trace = {span.name for span in spans if span.context.trace_id == trace_id}
    for name in (
        "/c2d.operator.v1.OperatorService/RegisterJob",
        "/c2d.engine.v1.EngineService/RunJob",
        "configure",
        "algorithm",
        "publish",
    ):
        assert name in in_trace, f"{name} is not in the job's trace: {sorted(in_trace)}"
    phases = [s for s in spans if s.name in ("configure", "algorithm", "publish")]
    assert all(s.attributes.get("c2d.job_id") == started.job_id for s in phases)
