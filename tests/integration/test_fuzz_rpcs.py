"""Property-based fuzzing of every RPC of the three services, against real servers: whatever the
request (well-formed messages with arbitrary field values, or arbitrary bytes), the answer is one
of the documented status codes, never UNKNOWN or INTERNAL, and every server stays healthy: it
answers its health check and still runs a normal job to FINISHED.

Some generated ids are those of real jobs (finished or running, the signing consumer's or another
consumer's), so the owner and state checks behind validation are fuzzed too. The engine's default
environment is tiny (a few seconds, small phase limits): a fuzzed RunJob or RegisterJob that passes
validation starts a real job in a real sandbox, and each such job ends within seconds.

The suite runs on an event loop in a thread of its own; hypothesis drives it through blocking
gRPC clients, one call per example.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message as pb_message
from google.protobuf import struct_pb2
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from c2d.engine.v1 import service_pb2 as engine_service
from c2d.operator.v1 import service_pb2 as operator_service
from c2d.provider.v1 import service_pb2 as provider_service
from c2d_common.signing import NonceClock, SignatureError, sign_request
from c2d_common.status import JobStatus
from engine_svc.config import DEFAULT_ENVIRONMENTS, EngineSettings
from engine_svc.domain.model import Environment
from tests.conftest import requires_bwrap
from tests.harness import (
    CONSUMER,
    CONSUMER_KEY,
    OTHER_CONSUMER,
    PROVIDER,
    PUBLISHER,
    PUBLISHER_KEY,
    Suite,
    running_suite,
)
from tests.integration import jobs

pytestmark = requires_bwrap

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# A stream that legitimately stays open (a Watch of a running job) is ended by our deadline.
STREAM_EXTRA = {grpc.StatusCode.DEADLINE_EXCEEDED}
CALL_SECONDS = 3.0
FD = pb_descriptor.FieldDescriptor

# The first environment is the default one: what a fuzzed job runs in unless it names another.
TINY = Environment(
    id="local-tiny",
    description="fuzzed jobs: 3 s at most",
    cpus=1.0,
    memory_bytes=256 * 1024**2,
    disk_bytes=16 * 1024**2,
    max_duration_seconds=3,
)
ENGINE = EngineSettings(
    environments=(TINY, *DEFAULT_ENVIRONMENTS),
    configure_timeout_seconds=5,
    publish_timeout_seconds=5,
    max_concurrent_jobs=4,
)

# Real jobs, made by the servers fixture before any example is drawn: finished and running ones,
# the signing consumer's (CONSUMER) and another's.
REAL_JOB_IDS: list[str] = []
REAL_JOB_ID = st.integers(0, 63).map(lambda i: REAL_JOB_IDS[i % len(REAL_JOB_IDS)])

# Values that look almost right reach deeper than random text does.
JOB_ID_LIKE = st.one_of(
    st.text("0123456789abcdef", min_size=32, max_size=32), st.just("0" * 32), REAL_JOB_ID, REAL_JOB_ID
)
ADDRESS_LIKE = st.builds(lambda h: "0x" + h, st.text("0123456789abcdefABCDEF", min_size=40, max_size=40))
DID_LIKE = st.builds(lambda h: "did:op:" + h, st.text("0123456789abcdef", min_size=64, max_size=64))
TEXT = st.one_of(st.text(max_size=200), JOB_ID_LIKE, ADDRESS_LIKE, DID_LIKE, st.just(""))


def _scalar(field: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[object]:
    kind = field.type
    if kind == FD.TYPE_STRING:
        return TEXT
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=300)
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    if kind in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if kind == FD.TYPE_ENUM:
        return st.integers(-3, 100)
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == FD.TYPE_FLOAT else 64)
    return st.integers(0, 2**31 - 1)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def message_strategy(
    descriptor: pb_descriptor.Descriptor, depth: int = 0
) -> st.SearchStrategy[pb_message.Message]:
    cls = GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=20), JSON_VALUES, max_size=4).map(_struct)
    if descriptor.full_name == "google.protobuf.Timestamp" or depth > 2:
        return st.just(cls())
    fields = {}
    for field in descriptor.fields:
        if field.type == FD.TYPE_MESSAGE:
            value = message_strategy(field.message_type, depth + 1)
        else:
            value = _scalar(field)
        if field.is_repeated:
            fields[field.name] = st.lists(value, max_size=3)
        else:
            fields[field.name] = st.one_of(st.none(), value)
    return st.fixed_dictionaries(fields).map(lambda values: _build(cls, values))


def _struct(values: dict[str, object]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def _build(cls: type[pb_message.Message], values: dict[str, object]) -> pb_message.Message:
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = message.DESCRIPTOR.fields_by_name[name]
        try:
            if field.is_repeated:
                target = getattr(message, name)
                if field.type == FD.TYPE_MESSAGE:
                    for item in value:  # type: ignore[attr-defined]
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)  # type: ignore[arg-type]
            elif field.type == FD.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        except (ValueError, TypeError):
            continue  # e.g. an enum number the field refuses: leave the field unset
    return message


T = TypeVar("T")


@dataclass
class Servers:
    addresses: dict[str, str]
    suite: Suite
    loop: asyncio.AbstractEventLoop
    dataset: str

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the suite's loop (its channel belongs there) and waits for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)


async def _make_real_jobs(suite: Suite, dataset: str) -> list[str]:
    made = []
    for consumer in (CONSUMER, OTHER_CONSUMER):
        finished = await jobs.start_raw(suite, [dataset], "print('ok')", consumer=consumer)
        running = await jobs.start_raw(
            suite,
            [dataset],
            "import time\ntime.sleep(600)\n",
            consumer=consumer,
            environment_id=DEFAULT_ENVIRONMENTS[0].id,
        )
        made += [finished.job_id, running.job_id]
    # Finished and running before the first example, so that each is in the state it stands for.
    for index, job_id in enumerate(made):
        consumer = CONSUMER if index < 2 else OTHER_CONSUMER
        wanted = JobStatus.FINISHED if index % 2 == 0 else JobStatus.RUNNING
        for _ in range(1200):
            if (await jobs.details(suite, job_id, consumer)).job.status == wanted:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"job {job_id} never reached {wanted.name}")
    return made


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    holder: list[Servers] = []
    failure: list[BaseException] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        async with running_suite(root / "suite", engine_settings=ENGINE) as suite:
            data = root / "data.csv"
            data.write_text("a\n1\n")
            dataset = await jobs.publish_dataset(suite, [data])
            REAL_JOB_IDS[:] = await _make_real_jobs(suite, dataset)
            holder.append(
                Servers(
                    {
                        "provider": suite.provider_address,
                        "operator": f"127.0.0.1:{suite.operator.port}",
                        "engine": f"127.0.0.1:{suite.engine.port}",
                    },
                    suite,
                    asyncio.get_running_loop(),
                    dataset,
                )
            )
            ready.set()
            await stop[0].wait()

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(120), "the suite did not start"
    assert not failure, failure
    yield holder[0]
    holder[0].loop.call_soon_threadsafe(stop[0].set)
    thread.join(60)


SERVICES = [
    ("provider", provider_service.DESCRIPTOR.services_by_name["ComputeService"]),
    ("provider", provider_service.DESCRIPTOR.services_by_name["AssetService"]),
    ("operator", operator_service.DESCRIPTOR.services_by_name["OperatorService"]),
    ("engine", engine_service.DESCRIPTOR.services_by_name["EngineService"]),
]
# The calls that stop jobs last, so that the real running jobs are still running for the others.
METHODS = sorted(
    ((server, method) for server, service in SERVICES for method in service.methods),
    key=lambda item: item[1].name in ("Stop", "StopJob"),
)


def _call(address: str, method: pb_descriptor.MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    with grpc.insecure_channel(address) as channel:
        try:
            if method.server_streaming:
                call = channel.unary_stream(path)(payload, timeout=CALL_SECONDS)
                for _ in call:
                    pass
            else:
                channel.unary_unary(path)(payload, timeout=CALL_SECONDS)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


NONCES = NonceClock()


def _sign_as_test_identity(request: pb_message.Message, method: pb_descriptor.MethodDescriptor) -> None:
    """Half the fuzzed provider requests come signed by a test identity, so that they get past
    authentication into the rules behind it."""
    fields = method.input_type.fields_by_name
    if "auth" not in fields:
        return
    if "consumer_address" in fields:
        request.consumer_address, key = CONSUMER, CONSUMER_KEY  # type: ignore[attr-defined]
    else:
        request.publisher_address, key = PUBLISHER, PUBLISHER_KEY  # type: ignore[attr-defined]
    request.ClearField("auth")
    try:
        sign_request(request, method.full_name, PROVIDER, key, NONCES.next())
    except SignatureError:
        request.auth.nonce = NONCES.next()  # type: ignore[attr-defined]  # NaN: unsignable


def _allowed(method: pb_descriptor.MethodDescriptor) -> set[grpc.StatusCode]:
    return DOCUMENTED | (STREAM_EXTRA if method.server_streaming else set())


@pytest.mark.parametrize(("server", "method"), METHODS, ids=[f"{s}-{m.name}" for s, m in METHODS])
def test_well_formed_requests_get_documented_codes(servers: Servers, server: str, method) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(message_strategy(method.input_type), st.booleans())
    def check(request: pb_message.Message, sign: bool) -> None:
        if sign:
            _sign_as_test_identity(request, method)
        code = _call(servers.addresses[server], method, request.SerializeToString())
        assert code in _allowed(method), f"{method.name} answered {code.name} to {request!r}"

    check()


@pytest.mark.parametrize(("server", "method"), METHODS, ids=[f"{s}-{m.name}" for s, m in METHODS])
def test_arbitrary_bytes_get_documented_codes(servers: Servers, server: str, method) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.binary(max_size=256))
    def check(payload: bytes) -> None:
        code = _call(servers.addresses[server], method, payload)
        assert code in _allowed(method), f"{method.name} answered {code.name} to {payload!r}"

    check()


# DDOs close to valid ones, each part sometimes of the wrong type: validation is what gets fuzzed.
def _maybe(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(valid, valid, valid, JSON_VALUES)


FILE_ENTRY = st.fixed_dictionaries(
    {
        "url": _maybe(
            st.sampled_from(["https://example.org/d.csv", "file:///etc/passwd", "ipfs://Qm", "s3://b/k"])
        )
    },
    optional={
        "checksum": _maybe(st.text("0123456789abcdef", min_size=64, max_size=64)),
        "contentLength": _maybe(st.integers(-5, 2**70)),
    },
)
SERVICE = st.fixed_dictionaries(
    {
        "type": _maybe(st.sampled_from(["compute", "access", "other"])),
        "files": _maybe(st.lists(FILE_ENTRY, max_size=3)),
    },
    optional={
        "compute": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "allowRawAlgorithm": _maybe(st.booleans()),
                    "publisherTrustedAlgorithms": _maybe(
                        st.lists(st.fixed_dictionaries({"did": DID_LIKE}), max_size=2)
                    ),
                    "publisherTrustedAlgorithmPublishers": _maybe(st.lists(ADDRESS_LIKE, max_size=2)),
                },
            )
        )
    },
)
DDO = st.fixed_dictionaries(
    {
        "metadata": _maybe(
            st.fixed_dictionaries(
                {
                    "name": _maybe(st.text(max_size=30)),
                    "type": _maybe(st.sampled_from(["dataset", "algorithm"])),
                },
                optional={
                    "algorithm": _maybe(
                        st.fixed_dictionaries(
                            {
                                "container": _maybe(
                                    st.fixed_dictionaries(
                                        {},
                                        optional={
                                            "entrypoint": _maybe(st.text(max_size=40)),
                                            "runtime": _maybe(st.text(max_size=20)),
                                        },
                                    )
                                )
                            }
                        )
                    )
                },
            )
        ),
        "services": _maybe(st.lists(SERVICE, max_size=3)),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(DDO)
def test_ddo_shaped_documents_get_documented_codes(servers: Servers, ddo: dict) -> None:  # type: ignore[type-arg]
    method = provider_service.DESCRIPTOR.services_by_name["AssetService"].methods_by_name["PublishAsset"]
    request = GetMessageClass(method.input_type)(ddo=_struct(ddo))
    _sign_as_test_identity(request, method)
    code = _call(servers.addresses["provider"], method, request.SerializeToString())
    assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, f"{code.name} for {ddo!r}"


# Last in the module: after everything above.
def test_every_server_is_still_serving(servers: Servers) -> None:
    for address in servers.addresses.values():
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
    # And still does its work: a normal job runs to the end, its result intact.
    suite = servers.suite
    code = "open('/data/outputs/r', 'w').write('ok')\n"
    started = servers.run(jobs.start_raw(suite, [servers.dataset], code))
    job = servers.run(jobs.wait_terminal(suite, started.job_id))
    assert job.status == JobStatus.FINISHED, job.status_text
    _, data = servers.run(jobs.download(suite, job.job_id, "r", jobs.OUTPUT))
    assert data == b"ok"
