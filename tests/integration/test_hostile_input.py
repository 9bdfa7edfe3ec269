"""Hostile and malformed input to every RPC of the provider, the operator and the engine.

Each request gets the status code that fits, never UNKNOWN or INTERNAL; and after the whole barrage
the jobs that were there are untouched, List shows exactly the jobs that were created, and every
server still says SERVING. The suite is shared by the module (one set of servers takes everything);
the last test checks the aftermath. Requests that once found a bug are tests of their own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from c2d.common.v1 import job_pb2
from c2d.common.v1 import job_status_pb2 as status_pb2
from c2d.engine.v1 import request_response_pb2 as epb
from c2d.engine.v1 import service_pb2_grpc as engine_grpc
from c2d.operator.v1 import request_response_pb2 as opb
from c2d.operator.v1 import service_pb2_grpc as operator_grpc
from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d_common.result_wire import varint
from c2d_common.server import insecure_channel
from c2d_common.status import TERMINAL_STATUSES, JobStatus
from engine_svc.config import EngineSettings
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, OTHER_CONSUMER, PUBLISHER, SECOND_PUBLISHER, Suite, running_suite

pytestmark = [pytest.mark.asyncio(loop_scope="module"), requires_bwrap]

CALL_TIMEOUT = 30
JOB_TIMEOUT = 90
MiB = 1024 * 1024
FINISHED_HISTORY = [
    JobStatus.QUEUED,
    JobStatus.STARTED,
    JobStatus.CONFIGURING,
    JobStatus.PROVISIONING_SUCCEEDED,
    JobStatus.RUNNING,
    JobStatus.PUBLISHING,
    JobStatus.FINISHED,
]
UPPERCASE_ALGORITHM = (
    b"import json, os, time\n"
    b"time.sleep(float(json.load(open('/data/inputs/algoCustomData.json')).get('sleep', 0)))\n"
    b"did = json.loads(os.environ['DIDS'])[0]\n"
    b"open('/data/outputs/out.txt', 'w').write(open(f'/data/inputs/{did}/0').read().upper())\n"
    b"print('done')\n"
)
DATA = "a,b\n1,2\n3,4\n"


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def unlimited_channel(address: str) -> grpc.aio.Channel:
    """A client that sends messages of any size, so that the server's own limit is what answers."""
    return grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    )


@dataclass
class World:
    suite: Suite
    operator: operator_grpc.OperatorServiceStub
    engine: engine_grpc.EngineServiceStub
    big_compute: provider_grpc.ComputeServiceStub
    big_assets: provider_grpc.AssetServiceStub
    big_operator: operator_grpc.OperatorServiceStub
    big_engine: engine_grpc.EngineServiceStub
    channels: list[grpc.aio.Channel]
    dataset_did: str
    no_raw_did: str
    access_only_did: str
    algorithm_did: str
    untrusted_algorithm_did: str
    done_job: str  # CONSUMER's, FINISHED before the barrage
    running_job: str  # CONSUMER's, sleeping through the barrage
    other_job: str  # OTHER_CONSUMER's, sleeping through the barrage
    page_token: str  # a real next_page_token of CONSUMER's List
    done_before: pb.GetJobDetailsResponse = field(default_factory=pb.GetJobDetailsResponse)

    @property
    def compute(self) -> provider_grpc.ComputeServiceStub:
        return self.suite.compute

    @property
    def assets(self) -> provider_grpc.AssetServiceStub:
        return self.suite.assets

    @property
    def created_jobs(self) -> dict[str, set[str]]:
        return {CONSUMER: {self.done_job, self.running_job}, OTHER_CONSUMER: {self.other_job}}


async def publish(suite: Suite, ddo: dict[str, Any], publisher: str = PUBLISHER) -> str:
    request = pb.PublishAssetRequest(publisher_address=publisher, ddo=struct(ddo))
    return (await suite.assets.PublishAsset(request, timeout=CALL_TIMEOUT)).did


def dataset_ddo(data: Path, **compute: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "data", "type": "dataset"},
        "services": [{"type": "compute", "files": [{"url": data.as_uri()}], "compute": compute}],
    }


def algorithm_ddo(code: Path, entrypoint: str = "python3 $ALGO", **container: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "algo",
            "type": "algorithm",
            "algorithm": {"container": {"entrypoint": entrypoint, **container}},
        },
        "services": [{"type": "access", "files": [{"url": code.as_uri()}]}],
    }


async def start_raw(suite: Suite, consumer: str, did: str, sleep: float = 0, **extra: Any) -> str:
    request = pb.StartRequest(
        consumer_address=consumer,
        dataset_did=did,
        raw_algorithm=pb.RawAlgorithm(code=UPPERCASE_ALGORITHM),
        algorithm_parameters=struct({"sleep": sleep}),
        **extra,
    )
    return (await suite.compute.Start(request, timeout=CALL_TIMEOUT)).job_id


async def wait_terminal(suite: Suite, consumer: str, job_id: str) -> pb.GetJobDetailsResponse:
    async with asyncio.timeout(JOB_TIMEOUT):
        async for message in suite.compute.Watch(pb.WatchRequest(consumer_address=consumer, job_id=job_id)):
            if message.event.status in TERMINAL_STATUSES:
                break
    request = pb.GetJobDetailsRequest(consumer_address=consumer, job_id=job_id)
    return await suite.compute.GetJobDetails(request, timeout=CALL_TIMEOUT)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data.csv"
    data.write_text(DATA)
    code = root / "algorithm.py"
    code.write_bytes(UPPERCASE_ALGORITHM)
    async with running_suite(root, engine_settings=EngineSettings(max_concurrent_jobs=4)) as suite:
        dataset_did = await publish(
            suite, dataset_ddo(data, allowRawAlgorithm=True, publisherTrustedAlgorithmPublishers=[PUBLISHER])
        )
        no_raw_did = await publish(
            suite,
            dataset_ddo(data, allowRawAlgorithm=False, publisherTrustedAlgorithmPublishers=[OTHER_CONSUMER]),
        )
        access_only = dataset_ddo(data)
        access_only["services"][0]["type"] = "access"
        access_only_did = await publish(suite, access_only)
        algorithm_did = await publish(suite, algorithm_ddo(code))
        untrusted_algorithm_did = await publish(suite, algorithm_ddo(code), publisher=SECOND_PUBLISHER)

        done_job = await start_raw(suite, CONSUMER, dataset_did)
        done = await wait_terminal(suite, CONSUMER, done_job)
        assert done.job.status == JobStatus.FINISHED, done.job.status_text
        # These two sleep through the barrage: hostile calls must not stop or disturb them.
        running_job = await start_raw(suite, CONSUMER, dataset_did, sleep=3)
        other_job = await start_raw(suite, OTHER_CONSUMER, dataset_did, sleep=3)

        first_page = await suite.compute.List(pb.ListRequest(consumer_address=CONSUMER, page_size=1))
        assert first_page.next_page_token

        operator_address = f"127.0.0.1:{suite.operator.port}"
        engine_address = f"127.0.0.1:{suite.engine.port}"
        operator_channel = insecure_channel(operator_address)
        engine_channel = insecure_channel(engine_address)
        big = [unlimited_channel(a) for a in (suite.provider_address, operator_address, engine_address)]
        world = World(
            suite=suite,
            operator=operator_grpc.OperatorServiceStub(operator_channel),
            engine=engine_grpc.EngineServiceStub(engine_channel),
            big_compute=provider_grpc.ComputeServiceStub(big[0]),
            big_assets=provider_grpc.AssetServiceStub(big[0]),
            big_operator=operator_grpc.OperatorServiceStub(big[1]),
            big_engine=engine_grpc.EngineServiceStub(big[2]),
            channels=[operator_channel, engine_channel, *big],
            dataset_did=dataset_did,
            no_raw_did=no_raw_did,
            access_only_did=access_only_did,
            algorithm_did=algorithm_did,
            untrusted_algorithm_did=untrusted_algorithm_did,
            done_job=done_job,
            running_job=running_job,
            other_job=other_job,
            page_token=first_page.next_page_token,
            done_before=done,
        )
        try:
            yield world
        finally:
            for channel in world.channels:
                await channel.close()


# --- the table ------------------------------------------------------------------------------------

Call = Callable[[World], Awaitable[Any]]


@dataclass(frozen=True)
class Case:
    id: str
    call: Call
    code: grpc.StatusCode
    # Text the error message must contain (the field at fault), when there is one to name.
    mentions: str = ""


INVALID = grpc.StatusCode.INVALID_ARGUMENT
T = CALL_TIMEOUT
UNKNOWN_JOB = uuid.uuid4().hex
UNKNOWN_DID = "did:op:" + "0" * 64
GOOD_CODE = pb.RawAlgorithm(code=b"print('hi')")

MALFORMED_JOB_IDS = {
    "empty": "",
    "too-short": "abc123",
    "uppercase": "A" * 32,
    "10kb": "a" * 10_240,
    "unicode": "ä" * 32,
    "dotdot": "../x",
    "dotdot-32-chars": "../" + "a" * 29,
    "nul": "a" * 31 + "\x00",
}
MALFORMED_ADDRESSES = {
    "empty": "",
    "no-0x": "c0" * 20,
    "short": "0x1234",
    "long": "0x" + "c0" * 21,
    "non-hex": "0x" + "zz" * 20,
    "10kb": "0x" + "a" * 10_240,
    "unicode": "0x" + "ä" * 40,
}


def _job_rpcs(job_id: Callable[[World], str], consumer: str = CONSUMER) -> dict[str, Call]:
    """Every RPC that names one job, at the provider, the operator and the engine."""
    return {
        "provider.GetJobDetails": lambda w: w.compute.GetJobDetails(
            pb.GetJobDetailsRequest(consumer_address=consumer, job_id=job_id(w)), timeout=T
        ),
        "provider.Stop": lambda w: w.compute.Stop(
            pb.StopRequest(consumer_address=consumer, job_id=job_id(w)), timeout=T
        ),
        "provider.Watch": lambda w: drain(
            w.compute.Watch(pb.WatchRequest(consumer_address=consumer, job_id=job_id(w)), timeout=T)
        ),
        "provider.GetResult": lambda w: drain(
            w.compute.GetResult(
                pb.GetResultRequest(consumer_address=consumer, job_id=job_id(w), name="out.txt"), timeout=T
            )
        ),
        "provider.GetLogs": lambda w: drain(
            w.compute.GetLogs(pb.GetLogsRequest(consumer_address=consumer, job_id=job_id(w)), timeout=T)
        ),
        "operator.GetJob": lambda w: w.operator.GetJob(opb.GetJobRequest(job_id=job_id(w)), timeout=T),
        "operator.StopJob": lambda w: w.operator.StopJob(opb.StopJobRequest(job_id=job_id(w)), timeout=T),
        "operator.WatchJob": lambda w: drain(
            w.operator.WatchJob(opb.WatchJobRequest(job_id=job_id(w)), timeout=T)
        ),
        "operator.GetJobLogs": lambda w: drain(
            w.operator.GetJobLogs(opb.GetJobLogsRequest(job_id=job_id(w)), timeout=T)
        ),
        "engine.RunJob": lambda w: drain(
            w.engine.RunJob(epb.RunJobRequest(job_id=job_id(w), owner=CONSUMER), timeout=T)
        ),
        "engine.StopJob": lambda w: w.engine.StopJob(epb.StopJobRequest(job_id=job_id(w)), timeout=T),
    }


def _consumer_rpcs(address: str) -> dict[str, Call]:
    """Every ComputeService RPC that names the consumer."""
    return {
        "Start": lambda w: w.compute.Start(
            pb.StartRequest(consumer_address=address, dataset_did=w.dataset_did, raw_algorithm=GOOD_CODE),
            timeout=T,
        ),
        "GetJobDetails": lambda w: w.compute.GetJobDetails(
            pb.GetJobDetailsRequest(consumer_address=address, job_id=w.done_job), timeout=T
        ),
        "Stop": lambda w: w.compute.Stop(
            pb.StopRequest(consumer_address=address, job_id=w.running_job), timeout=T
        ),
        "List": lambda w: w.compute.List(pb.ListRequest(consumer_address=address), timeout=T),
        "Watch": lambda w: drain(
            w.compute.Watch(pb.WatchRequest(consumer_address=address, job_id=w.done_job), timeout=T)
        ),
        "GetResult": lambda w: drain(
            w.compute.GetResult(
                pb.GetResultRequest(consumer_address=address, job_id=w.done_job, name="out.txt"), timeout=T
            )
        ),
        "GetLogs": lambda w: drain(
            w.compute.GetLogs(pb.GetLogsRequest(consumer_address=address, job_id=w.done_job), timeout=T)
        ),
    }


def _start(**fields: Any) -> Call:
    """A Start of CONSUMER with the good dataset and raw code, except for the given fields."""

    def call(w: World) -> Awaitable[Any]:
        values: dict[str, Any] = {
            "consumer_address": CONSUMER,
            "dataset_did": w.dataset_did,
            "raw_algorithm": GOOD_CODE,
        }
        for name, value in fields.items():
            values[name] = value(w) if callable(value) else value
        if values.get("algorithm_did"):
            values.pop("raw_algorithm")
        return w.compute.Start(
            pb.StartRequest(**{k: v for k, v in values.items() if v is not None}), timeout=T
        )

    return call


def _list(**fields: Any) -> Call:
    def call(w: World) -> Awaitable[Any]:
        values = {name: (value(w) if callable(value) else value) for name, value in fields.items()}
        return w.compute.List(pb.ListRequest(consumer_address=CONSUMER, **values), timeout=T)

    return call


def _operator_list(**fields: Any) -> Call:
    def call(w: World) -> Awaitable[Any]:
        values = {name: (value(w) if callable(value) else value) for name, value in fields.items()}
        return w.operator.ListJobs(opb.ListJobsRequest(**values), timeout=T)

    return call


def _result(name: str, offset: int = 0, kind: int = 0, job: str = "done_job") -> Call:
    return lambda w: drain(
        w.compute.GetResult(
            pb.GetResultRequest(
                consumer_address=CONSUMER,
                job_id=getattr(w, job),
                name=name,
                offset=offset,
                kind=kind,  # type: ignore[arg-type]
            ),
            timeout=T,
        )
    )


def _publish(ddo: dict[str, Any] | None, publisher: str = PUBLISHER) -> Call:
    def call(w: World) -> Awaitable[Any]:
        request = pb.PublishAssetRequest(publisher_address=publisher)
        if ddo is not None:
            request.ddo.CopyFrom(struct(ddo))
        return w.assets.PublishAsset(request, timeout=T)

    return call


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _valid_ddo() -> dict[str, Any]:
    return {
        "metadata": {"name": "d", "type": "dataset"},
        "services": [{"type": "compute", "files": [{"url": "https://example.org/d.csv"}]}],
    }


def _ddo_with(path: str, value: Any) -> dict[str, Any]:
    ddo = _valid_ddo()
    *parents, last = path.split(".")
    node: Any = ddo
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return ddo


def _spec(*, datasets: bool = True, algorithm: bool = True, raw_code: bytes = b"print(1)") -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(environment_id="local-small")
    if datasets:
        spec.datasets.add(did=UNKNOWN_DID, files=[job_pb2.FileLocation(url="https://example.org/x")])
    if algorithm:
        spec.algorithm.raw_code = raw_code
    return spec


def build_cases() -> list[Case]:
    cases: list[Case] = []

    # Malformed job ids, everywhere a job is named.
    for name, bad in MALFORMED_JOB_IDS.items():
        for rpc, call in _job_rpcs(lambda w, bad=bad: bad).items():
            cases.append(Case(f"{rpc}-job-id-{name}", call, INVALID, "job_id"))

    # Unknown but well-formed job ids (the engine answers these without an error; see its own test).
    for rpc, call in _job_rpcs(lambda w: UNKNOWN_JOB).items():
        if not rpc.startswith("engine."):
            cases.append(Case(f"{rpc}-unknown-job", call, grpc.StatusCode.NOT_FOUND, UNKNOWN_JOB))

    # Malformed or missing consumer addresses.
    for name, bad in MALFORMED_ADDRESSES.items():
        for rpc, call in _consumer_rpcs(bad).items():
            cases.append(Case(f"provider.{rpc}-consumer-{name}", call, INVALID, "consumer_address"))

    # Another consumer's job.
    for rpc, call in _job_rpcs(lambda w: w.other_job).items():
        if rpc.startswith("provider."):
            cases.append(
                Case(
                    f"{rpc}-another-consumers-job",
                    call,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "another consumer",
                )
            )

    # Start.
    cases += [
        Case("Start-no-dataset", _start(dataset_did=""), INVALID, "dataset_did"),
        Case("Start-dataset-1mb", _start(dataset_did="did:op:" + "a" * MiB), INVALID, "dataset did"),
        Case("Start-dataset-malformed", _start(dataset_did="did:op:XYZ"), INVALID, "dataset did"),
        Case("Start-dataset-unicode", _start(dataset_did="did:op:" + "é" * 64), INVALID, "dataset did"),
        Case(
            "Start-dataset-unknown", _start(dataset_did=UNKNOWN_DID), grpc.StatusCode.NOT_FOUND, UNKNOWN_DID
        ),
        Case(
            "Start-additional-dataset-empty",
            _start(additional_dataset_dids=[""]),
            INVALID,
            "dataset did",
        ),
        Case(
            "Start-dataset-twice",
            _start(additional_dataset_dids=lambda w: [w.dataset_did]),
            INVALID,
            "twice",
        ),
        Case(
            "Start-21-datasets",
            _start(additional_dataset_dids=[f"did:op:{i:064x}" for i in range(1, 21)]),
            INVALID,
            "at most 20",
        ),
        Case("Start-request-id-129", _start(request_id="r" * 129), INVALID, "request_id"),
        Case("Start-request-id-200", _start(request_id="r" * 200), INVALID, "request_id"),
        Case("Start-request-id-1mb", _start(request_id="r" * MiB), INVALID, "request_id"),
        Case("Start-no-algorithm", _start(raw_algorithm=None), INVALID, "algorithm"),
        Case(
            "Start-raw-code-empty",
            _start(raw_algorithm=pb.RawAlgorithm(code=b"")),
            INVALID,
            "raw_algorithm.code",
        ),
        Case(
            "Start-raw-code-over-1mib",
            _start(raw_algorithm=pb.RawAlgorithm(code=b"#" * (MiB + 1))),
            INVALID,
            "raw_algorithm.code",
        ),
        Case(
            "Start-raw-entrypoint-65-args",
            _start(raw_algorithm=pb.RawAlgorithm(code=b"1", entrypoint=["x"] * 65)),
            INVALID,
            "raw_algorithm.entrypoint",
        ),
        Case(
            "Start-raw-entrypoint-nul",
            _start(raw_algorithm=pb.RawAlgorithm(code=b"1", entrypoint=["python3", "$ALGO\x00"])),
            INVALID,
            "raw_algorithm.entrypoint",
        ),
        Case(
            "Start-raw-entrypoint-huge-arg",
            _start(raw_algorithm=pb.RawAlgorithm(code=b"1", entrypoint=["python3", "x" * 5000])),
            INVALID,
            "raw_algorithm.entrypoint",
        ),
        Case(
            "Start-raw-runtime-shell",
            _start(raw_algorithm=pb.RawAlgorithm(code=b"1", runtime="python3; rm -rf /")),
            INVALID,
            "raw_algorithm.runtime",
        ),
        Case(
            "Start-raw-runtime-long",
            _start(raw_algorithm=pb.RawAlgorithm(code=b"1", runtime="p" * 129)),
            INVALID,
            "raw_algorithm.runtime",
        ),
        Case(
            "Start-parameters-over-64kb",
            _start(algorithm_parameters=struct({"x": "y" * 70_000})),
            INVALID,
            "algorithm_parameters",
        ),
        Case("Start-environment-unknown", _start(environment_id="gpu-huge"), INVALID, "no environment"),
        Case("Start-environment-10kb", _start(environment_id="e" * 10_240), INVALID, "no environment"),
        Case(
            "Start-dataset-without-compute-service",
            _start(dataset_did=lambda w: w.access_only_did),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no compute service",
        ),
        Case(
            "Start-algorithm-as-dataset",
            _start(dataset_did=lambda w: w.algorithm_did),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not a dataset",
        ),
        Case(
            "Start-dataset-as-algorithm",
            _start(algorithm_did=lambda w: w.dataset_did),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not an algorithm",
        ),
        Case(
            "Start-raw-on-dataset-without-raw",
            _start(dataset_did=lambda w: w.no_raw_did),
            grpc.StatusCode.PERMISSION_DENIED,
            "raw algorithms",
        ),
        Case(
            "Start-raw-over-1mib-on-dataset-without-raw",
            _start(dataset_did=lambda w: w.no_raw_did, raw_algorithm=pb.RawAlgorithm(code=b"#" * (MiB + 1))),
            grpc.StatusCode.PERMISSION_DENIED,
            "raw algorithms",
        ),
        Case(
            "Start-untrusted-algorithm",
            _start(algorithm_did=lambda w: w.untrusted_algorithm_did),
            grpc.StatusCode.PERMISSION_DENIED,
            "does not trust",
        ),
        Case(
            "Start-trusted-algorithm-on-dataset-trusting-nobody",
            _start(dataset_did=lambda w: w.no_raw_did, algorithm_did=lambda w: w.algorithm_did),
            grpc.StatusCode.PERMISSION_DENIED,
            "does not trust",
        ),
        Case("Start-algorithm-malformed", _start(algorithm_did="algo"), INVALID, "algorithm_did"),
        Case(
            "Start-algorithm-unknown",
            _start(algorithm_did=UNKNOWN_DID),
            grpc.StatusCode.NOT_FOUND,
            UNKNOWN_DID,
        ),
    ]

    # List.
    junk_json = [
        ("token-garbage", "!!!!"),
        ("token-words", "give-me-everything"),
        ("token-non-ascii", "tökén"),
        ("token-b64-junk", _b64(b"\x00\x01junk\xff")),
        ("token-b64-object", _b64(json.dumps({"owner": OTHER_CONSUMER}).encode())),
        ("token-b64-bad-date", _b64(json.dumps(["tomorrow", "a" * 32]).encode())),
        ("token-b64-short-id", _b64(json.dumps(["2026-01-01T00:00:00", "a"]).encode())),
        ("token-1mb", "A" * MiB + "!"),
    ]
    for name, token in junk_json:
        cases.append(Case(f"List-{name}", _list(page_token=token), INVALID, "page_token"))
        cases.append(
            Case(f"operator.ListJobs-{name}", _operator_list(page_token=token), INVALID, "page_token")
        )
    cases += [
        Case(
            "List-token-truncated-half",
            _list(page_token=lambda w: w.page_token[: len(w.page_token) // 2]),
            INVALID,
            "page_token",
        ),
        Case(
            "List-token-truncated-by-one",
            _list(page_token=lambda w: w.page_token[:-1]),
            INVALID,
            "page_token",
        ),
        Case(
            "List-token-truncated-by-three",
            _list(page_token=lambda w: w.page_token[:-3]),
            INVALID,
            "page_token",
        ),
        Case(
            "List-token-first-char-dropped",
            _list(page_token=lambda w: w.page_token[1:]),
            INVALID,
            "page_token",
        ),
        Case("List-page-size-negative", _list(page_size=-1), INVALID, "page_size"),
        Case("List-page-size-min-int32", _list(page_size=-(2**31)), INVALID, "page_size"),
        Case("List-page-size-1001", _list(page_size=1001), INVALID, "page_size"),
        Case("List-page-size-max-int32", _list(page_size=2**31 - 1), INVALID, "page_size"),
        Case("List-status-unknown", _list(statuses=[999]), INVALID, "999"),
        Case("List-status-negative", _list(statuses=[-5]), INVALID, "-5"),
        Case("List-status-unspecified", _list(statuses=[0]), INVALID, "status"),
        Case("List-status-one-bad-among-good", _list(statuses=[70, 41, 12345]), INVALID, "12345"),
        Case("operator.ListJobs-owner-malformed", _operator_list(owner="0xnope"), INVALID, "owner"),
        Case("operator.ListJobs-page-size-negative", _operator_list(page_size=-1), INVALID, "page_size"),
        Case("operator.ListJobs-page-size-1001", _operator_list(page_size=1001), INVALID, "page_size"),
        Case("operator.ListJobs-status-unknown", _operator_list(statuses=[999]), INVALID, "999"),
    ]

    # GetResult.
    cases += [
        Case("GetResult-name-empty", _result(""), INVALID, "name"),
        Case("GetResult-name-unknown", _result("nope.txt"), grpc.StatusCode.NOT_FOUND, "nope.txt"),
        Case(
            "GetResult-name-traversal", _result("../../../etc/passwd"), grpc.StatusCode.NOT_FOUND, "no result"
        ),
        Case("GetResult-name-absolute", _result("/etc/passwd"), grpc.StatusCode.NOT_FOUND, "no result"),
        Case("GetResult-name-10kb", _result("n" * 10_240), grpc.StatusCode.NOT_FOUND, "no result"),
        Case("GetResult-kind-unknown", _result("out.txt", kind=99), grpc.StatusCode.NOT_FOUND, "out.txt"),
        Case(
            "GetResult-output-asked-as-log",
            _result("out.txt", kind=job_pb2.RESULT_KIND_LOG),
            grpc.StatusCode.NOT_FOUND,
            "out.txt",
        ),
        Case(
            "GetResult-offset-negative", _result("out.txt", offset=-1), grpc.StatusCode.OUT_OF_RANGE, "offset"
        ),
        Case(
            "GetResult-offset-min-int64",
            _result("out.txt", offset=-(2**63)),
            grpc.StatusCode.OUT_OF_RANGE,
            "offset",
        ),
        Case(
            "GetResult-offset-beyond-size",
            _result("out.txt", offset=len(DATA) + 1),
            grpc.StatusCode.OUT_OF_RANGE,
            "offset",
        ),
        Case(
            "GetResult-offset-max-int64",
            _result("out.txt", offset=2**63 - 1),
            grpc.StatusCode.OUT_OF_RANGE,
            "offset",
        ),
    ]

    # Watch and GetLogs resume points.
    cases += [
        Case(
            "Watch-after-sequence-negative",
            lambda w: drain(
                w.compute.Watch(
                    pb.WatchRequest(consumer_address=CONSUMER, job_id=w.done_job, after_sequence=-1),
                    timeout=T,
                )
            ),
            INVALID,
            "after_sequence",
        ),
        Case(
            "GetLogs-after-sequence-negative",
            lambda w: drain(
                w.compute.GetLogs(
                    pb.GetLogsRequest(consumer_address=CONSUMER, job_id=w.done_job, after_sequence=-1),
                    timeout=T,
                )
            ),
            INVALID,
            "after_sequence",
        ),
        Case(
            "operator.WatchJob-after-sequence-negative",
            lambda w: drain(
                w.operator.WatchJob(opb.WatchJobRequest(job_id=w.done_job, after_sequence=-1), timeout=T)
            ),
            INVALID,
            "after_sequence",
        ),
        Case(
            "operator.GetJobLogs-after-sequence-negative",
            lambda w: drain(
                w.operator.GetJobLogs(opb.GetJobLogsRequest(job_id=w.done_job, after_sequence=-1), timeout=T)
            ),
            INVALID,
            "after_sequence",
        ),
    ]

    # AssetService.
    cases += [
        Case(
            "GetAsset-did-empty",
            lambda w: w.assets.GetAsset(pb.GetAssetRequest(did=""), timeout=T),
            INVALID,
            "did",
        ),
        Case(
            "GetAsset-did-1mb",
            lambda w: w.assets.GetAsset(pb.GetAssetRequest(did="did:op:" + "a" * MiB), timeout=T),
            INVALID,
            "did",
        ),
        Case(
            "GetAsset-did-traversal",
            lambda w: w.assets.GetAsset(pb.GetAssetRequest(did="did:op:../../etc/passwd"), timeout=T),
            INVALID,
            "did",
        ),
        Case(
            "GetAsset-did-uppercase",
            lambda w: w.assets.GetAsset(pb.GetAssetRequest(did="did:op:" + "A" * 64), timeout=T),
            INVALID,
            "did",
        ),
        Case(
            "GetAsset-did-unknown",
            lambda w: w.assets.GetAsset(pb.GetAssetRequest(did=UNKNOWN_DID), timeout=T),
            grpc.StatusCode.NOT_FOUND,
            UNKNOWN_DID,
        ),
        Case("PublishAsset-no-ddo", _publish(None), INVALID, "ddo"),
        Case("PublishAsset-empty-ddo", _publish({}), INVALID, "metadata"),
        Case("PublishAsset-no-publisher", _publish(_valid_ddo(), publisher=""), INVALID, "publisher_address"),
        Case(
            "PublishAsset-publisher-malformed",
            _publish(_valid_ddo(), publisher="0xbad"),
            INVALID,
            "publisher_address",
        ),
        Case(
            "PublishAsset-publisher-10kb",
            _publish(_valid_ddo(), publisher="0x" + "a" * 10_240),
            INVALID,
            "publisher_address",
        ),
    ]
    invalid_ddos = {
        "metadata-string": (_ddo_with("metadata", "x"), "metadata"),
        "name-missing": (_ddo_with("metadata", {"type": "dataset"}), "metadata.name"),
        "name-too-long": (_ddo_with("metadata.name", "n" * 513), "metadata.name"),
        "type-unknown": (_ddo_with("metadata.type", "model"), "metadata.type"),
        "algorithm-container-string": (
            _ddo_with("metadata", {"name": "a", "type": "algorithm", "algorithm": {"container": "python"}}),
            "metadata.algorithm.container",
        ),
        "algorithm-entrypoint-number": (
            _ddo_with(
                "metadata", {"name": "a", "type": "algorithm", "algorithm": {"container": {"entrypoint": 5}}}
            ),
            "metadata.algorithm.container.entrypoint",
        ),
        "services-missing": ({"metadata": {"name": "d", "type": "dataset"}}, "services"),
        "services-empty": (_ddo_with("services", []), "services"),
        "services-17": (_ddo_with("services", _valid_ddo()["services"] * 17), "services"),
        "service-string": (_ddo_with("services.0", "compute"), "services[0]"),
        "service-type-unknown": (_ddo_with("services.0.type", "download"), "services[0].type"),
        "files-missing": (_ddo_with("services.0", {"type": "compute"}), "services[0].files"),
        "files-101": (_ddo_with("services.0.files", [{"url": "https://x/y"}] * 101), "services[0].files"),
        "url-missing": (_ddo_with("services.0.files.0", {}), "services[0].files[0].url"),
        "url-number": (_ddo_with("services.0.files.0.url", 5), "services[0].files[0].url"),
        "url-ftp": (_ddo_with("services.0.files.0.url", "ftp://x/y"), "services[0].files[0].url"),
        "url-relative": (_ddo_with("services.0.files.0.url", "../../etc/passwd"), "services[0].files[0].url"),
        "checksum-uppercase": (
            _ddo_with("services.0.files.0.checksum", "A" * 64),
            "services[0].files[0].checksum",
        ),
        "content-length-negative": (
            _ddo_with("services.0.files.0.contentLength", -1),
            "services[0].files[0].contentLength",
        ),
        "content-length-string": (
            _ddo_with("services.0.files.0.contentLength", "9"),
            "services[0].files[0].contentLength",
        ),
        "compute-string": (_ddo_with("services.0.compute", "yes"), "services[0].compute"),
        "trusted-algorithms-string": (
            _ddo_with("services.0.compute", {"publisherTrustedAlgorithms": "all"}),
            "services[0].compute.publisherTrustedAlgorithms",
        ),
        "trusted-publishers-object": (
            _ddo_with("services.0.compute", {"publisherTrustedAlgorithmPublishers": {"a": 1}}),
            "services[0].compute.publisherTrustedAlgorithmPublishers",
        ),
        "over-256kb": (_ddo_with("metadata.description", "x" * 300_000), "larger than"),
    }
    for name, (ddo, named) in invalid_ddos.items():
        cases.append(Case(f"PublishAsset-ddo-{name}", _publish(ddo), INVALID, named))

    # The operator's and the engine's own checks.
    cases += [
        Case(
            "operator.RegisterJob-no-owner",
            lambda w: w.operator.RegisterJob(opb.RegisterJobRequest(spec=_spec()), timeout=T),
            INVALID,
            "owner",
        ),
        Case(
            "operator.RegisterJob-owner-malformed",
            lambda w: w.operator.RegisterJob(opb.RegisterJobRequest(owner="alice", spec=_spec()), timeout=T),
            INVALID,
            "owner",
        ),
        Case(
            "operator.RegisterJob-request-id-200",
            lambda w: w.operator.RegisterJob(
                opb.RegisterJobRequest(owner=CONSUMER, request_id="r" * 200, spec=_spec()), timeout=T
            ),
            INVALID,
            "request_id",
        ),
        Case(
            "operator.RegisterJob-no-spec",
            lambda w: w.operator.RegisterJob(opb.RegisterJobRequest(owner=CONSUMER), timeout=T),
            INVALID,
            "spec.datasets",
        ),
        Case(
            "operator.RegisterJob-no-algorithm",
            lambda w: w.operator.RegisterJob(
                opb.RegisterJobRequest(owner=CONSUMER, spec=_spec(algorithm=False)), timeout=T
            ),
            INVALID,
            "spec.algorithm",
        ),
        Case(
            "engine.RunJob-no-owner",
            lambda w: drain(
                w.engine.RunJob(epb.RunJobRequest(job_id=uuid.uuid4().hex, spec=_spec()), timeout=T)
            ),
            INVALID,
            "owner",
        ),
        Case(
            "engine.RunJob-owner-malformed",
            lambda w: drain(
                w.engine.RunJob(
                    epb.RunJobRequest(job_id=uuid.uuid4().hex, owner="0x1", spec=_spec()), timeout=T
                )
            ),
            INVALID,
            "owner",
        ),
    ]

    # Above the servers' 8 MiB message limit: gRPC itself refuses, before any handler runs.
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    nine_mib = 9 * MiB
    cases += [
        Case(
            "provider.Start-9mib",
            lambda w: w.big_compute.Start(
                pb.StartRequest(
                    consumer_address=CONSUMER,
                    dataset_did=w.dataset_did,
                    raw_algorithm=pb.RawAlgorithm(code=b"#" * nine_mib),
                ),
                timeout=T,
            ),
            exhausted,
        ),
        Case(
            "provider.GetJobDetails-9mib-job-id",
            lambda w: w.big_compute.GetJobDetails(
                pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id="a" * nine_mib), timeout=T
            ),
            exhausted,
        ),
        Case(
            "provider.Watch-9mib-job-id",
            lambda w: drain(
                w.big_compute.Watch(
                    pb.WatchRequest(consumer_address=CONSUMER, job_id="a" * nine_mib), timeout=T
                )
            ),
            exhausted,
        ),
        Case(
            "provider.PublishAsset-9mib",
            lambda w: w.big_assets.PublishAsset(
                pb.PublishAssetRequest(
                    publisher_address=PUBLISHER, ddo=struct(_ddo_with("metadata.description", "x" * nine_mib))
                ),
                timeout=T,
            ),
            exhausted,
        ),
        Case(
            "operator.RegisterJob-9mib",
            lambda w: w.big_operator.RegisterJob(
                opb.RegisterJobRequest(owner=CONSUMER, spec=_spec(raw_code=b"#" * nine_mib)), timeout=T
            ),
            exhausted,
        ),
        Case(
            "engine.RunJob-9mib",
            lambda w: drain(
                w.big_engine.RunJob(
                    epb.RunJobRequest(
                        job_id=uuid.uuid4().hex, owner=CONSUMER, spec=_spec(raw_code=b"#" * nine_mib)
                    ),
                    timeout=T,
                )
            ),
            exhausted,
        ),
        Case(
            "engine.StopJob-9mib",
            lambda w: w.big_engine.StopJob(epb.StopJobRequest(job_id="a" * nine_mib), timeout=T),
            exhausted,
        ),
    ]
    return cases


CASES = build_cases()


async def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_hostile_request_gets_a_fitting_status(world: World, case: Case) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await case.call(world)
    error = caught.value
    details = error.details() or ""
    assert error.code() == case.code, f"{error.code().name}: {details[:500]}"
    assert details, "an error says what is wrong"
    assert len(details) < 2000, "the request's oversized values are not echoed back"
    assert case.mentions in details


# --- well-formed calls around the edges ------------------------------------------------------------


async def test_engine_stop_of_an_unknown_job_answers_not_running(world: World) -> None:
    response = await world.engine.StopJob(epb.StopJobRequest(job_id=uuid.uuid4().hex), timeout=T)
    assert response.was_running is False


async def test_get_environments_answers_at_every_level(world: World) -> None:
    provider = await world.compute.GetEnvironments(pb.GetEnvironmentsRequest(), timeout=T)
    operator = await world.operator.GetEnvironments(opb.GetEnvironmentsRequest(), timeout=T)
    engine = await world.engine.GetEnvironments(epb.GetEnvironmentsRequest(), timeout=T)
    assert [e.id for e in provider.environments] == ["local-small"]
    assert list(provider.environments) == list(operator.environments) == list(engine.environments)


async def test_get_asset_never_shows_file_locations(world: World) -> None:
    for did in (world.dataset_did, world.algorithm_did, world.access_only_did):
        ddo = (await world.assets.GetAsset(pb.GetAssetRequest(did=did), timeout=T)).ddo
        assert "file://" not in str(ddo)
        for service in ddo["services"]:
            assert "files" not in service


async def test_get_result_at_the_very_end_answers_no_bytes(world: World) -> None:
    size = len(DATA)
    messages = await _result("out.txt", offset=size)(world)
    assert len(messages) == 1
    assert messages[0].file.name == "out.txt"
    assert messages[0].file.size == size
    assert not messages[0].file.location
    assert messages[0].offset == size
    assert messages[0].data == b""


async def test_get_result_from_an_offset(world: World) -> None:
    messages = await _result("out.txt", offset=4)(world)
    assert b"".join(m.data for m in messages) == DATA.upper().encode()[4:]
    assert messages[0].offset == 4


async def test_stop_of_a_finished_job_changes_nothing(world: World) -> None:
    job = (
        await world.compute.Stop(pb.StopRequest(consumer_address=CONSUMER, job_id=world.done_job), timeout=T)
    ).job
    assert job.status == JobStatus.FINISHED
    assert job == world.done_before.job


async def test_a_flood_of_bad_requests_is_answered_one_by_one(world: World) -> None:
    async def one(index: int) -> grpc.StatusCode:
        calls = [
            lambda: world.compute.GetJobDetails(
                pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=f"x{index}"), timeout=T
            ),
            lambda: world.compute.List(
                pb.ListRequest(consumer_address=CONSUMER, page_token=f"junk{index}"), timeout=T
            ),
            lambda: world.assets.GetAsset(pb.GetAssetRequest(did=f"did:op:{index}"), timeout=T),
            lambda: world.operator.GetJob(opb.GetJobRequest(job_id=str(index)), timeout=T),
            lambda: world.engine.StopJob(epb.StopJobRequest(job_id=str(index)), timeout=T),
        ]
        try:
            await calls[index % len(calls)]()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(one(i) for i in range(400)))
    assert set(codes) == {INVALID}


# --- requests that find bugs -----------------------------------------------------------------------


def _nested_struct_bytes(depth: int) -> bytes:
    """A google.protobuf.Struct nested `depth` levels deep, serialized by hand (the client library
    refuses to build it)."""

    def field_bytes(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    struct_bytes = b""
    for _ in range(depth):
        value = field_bytes(5, struct_bytes)  # Value.struct_value
        entry = field_bytes(1, b"a") + field_bytes(2, value)  # map entry: key, value
        struct_bytes = field_bytes(1, entry)  # Struct.fields
    return struct_bytes


UNDECODABLE_REASON = (
    "BUG: a request that does not parse as its message is answered UNKNOWN ('Unexpected DecodeError') by "
    "grpc.aio. c2d_common/errors.py DomainErrorInterceptor re-wraps every handler with the original "
    "request_deserializer; wrap it too (catch google.protobuf.message.DecodeError, return a sentinel) and "
    "abort INVALID_ARGUMENT when the handler receives the sentinel"
)


@pytest.mark.parametrize(
    ("server", "method", "payload"),
    [
        ("provider", "/c2d.provider.v1.ComputeService/GetJobDetails", b"\xff\xff\xff\xff"),
        ("provider", "/c2d.provider.v1.AssetService/GetAsset", b"\x0a\x05ab"),
        (
            "provider",
            "/c2d.provider.v1.AssetService/PublishAsset",
            b"\x12" + varint(len(_nested_struct_bytes(150))) + _nested_struct_bytes(150),
        ),
        ("operator", "/c2d.operator.v1.OperatorService/GetJob", b"\xff\xff\xff\xff"),
        ("engine", "/c2d.engine.v1.EngineService/StopJob", b"\x0a\xff\xff\xff\xff\x0f"),
    ],
    ids=[
        "provider-corrupt",
        "asset-truncated",
        "asset-nested-150-deep",
        "operator-corrupt",
        "engine-corrupt",
    ],
)
async def test_undecodable_request_is_invalid_argument(
    world: World, server: str, method: str, payload: bytes
) -> None:
    port = {
        "provider": world.suite.provider.port,
        "operator": world.suite.operator.port,
        "engine": world.suite.engine.port,
    }[server]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method)  # raw bytes in, raw bytes out
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(payload, timeout=T)
    assert caught.value.code() == INVALID, caught.value.details()


TRAILING_NEWLINE_REASON = (
    "BUG: c2d_common/ids.py and provider_svc/domain/assets.py DID_PATTERN check with re.match('^...$'); "
    "'$' matches before a final newline, so 'value\\n' passes validation and is then looked up or stored "
    "as a different value. Use re.fullmatch (or \\Z)"
)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda w: w.compute.GetJobDetails(
                pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=w.done_job + "\n"), timeout=T
            ),
            id="provider-job-id",
        ),
        pytest.param(
            lambda w: w.compute.GetJobDetails(
                pb.GetJobDetailsRequest(consumer_address=CONSUMER + "\n", job_id=w.done_job), timeout=T
            ),
            id="provider-consumer-address",
        ),
        pytest.param(
            lambda w: w.compute.List(pb.ListRequest(consumer_address=CONSUMER + "\n"), timeout=T),
            id="provider-list-consumer-address",
        ),
        pytest.param(
            lambda w: w.assets.GetAsset(pb.GetAssetRequest(did=w.dataset_did + "\n"), timeout=T),
            id="asset-did",
        ),
        pytest.param(
            lambda w: w.operator.GetJob(opb.GetJobRequest(job_id=w.done_job + "\n"), timeout=T),
            id="operator-job-id",
        ),
        pytest.param(
            lambda w: w.engine.StopJob(epb.StopJobRequest(job_id=uuid.uuid4().hex + "\n"), timeout=T),
            id="engine-job-id",
        ),
    ],
)
async def test_values_with_a_trailing_newline_are_invalid_argument(world: World, call: Call) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(world)
    assert caught.value.code() == INVALID, f"{caught.value.code().name}: {caught.value.details()}"


@pytest.mark.parametrize(
    "ddo",
    [
        pytest.param(
            _ddo_with("metadata", {"name": "a", "type": "algorithm", "algorithm": "x"}),
            id="algorithm-section-string",
        ),
        pytest.param(
            _ddo_with("services.0.files.0.url", "http://["),
            id="url-bad-ipv6",
        ),
        pytest.param(
            _ddo_with("metadata.extra", float("nan")),
            id="nan-number",
        ),
        pytest.param(
            _ddo_with("services.0.files.0.url", "a" * 20_000 + "://x"),
            id="20kb-url-scheme",
        ),
    ],
)
async def test_invalid_ddos_that_crash_publish(world: World, ddo: dict[str, Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _publish(ddo)(world)
    assert caught.value.code() == INVALID, f"{caught.value.code().name}: {caught.value.details()[:300]}"


# Bugs whose requests may create jobs: each runs on a suite of its own, so that the barrage's job
# count holds whatever the outcome.


@pytest.mark.parametrize(
    "asset",
    [
        pytest.param(
            {"entrypoint": 'python3 "$ALGO'},
            id="entrypoint-unbalanced-quote",
        ),
        pytest.param(
            {"runtime": 3},
            id="runtime-number",
        ),
        pytest.param(
            {"contentLength": 1e300},
            id="content-length-1e300",
        ),
    ],
)
async def test_published_assets_that_crash_start(tmp_path: Path, asset: dict[str, Any]) -> None:
    data = tmp_path / "d.csv"
    data.write_text(DATA)
    code = tmp_path / "algo.py"
    code.write_text("print(1)")
    async with running_suite(tmp_path) as suite:
        dataset = dataset_ddo(data, allowRawAlgorithm=True, publisherTrustedAlgorithmPublishers=[PUBLISHER])
        # Refused when published (validation) or when started: either way a clear status, never INTERNAL.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if "contentLength" in asset:
                dataset["services"][0]["files"][0]["contentLength"] = asset["contentLength"]
                start = pb.StartRequest(
                    consumer_address=CONSUMER,
                    dataset_did=await publish(suite, dataset),
                    raw_algorithm=GOOD_CODE,
                )
            else:
                start = pb.StartRequest(
                    consumer_address=CONSUMER,
                    dataset_did=await publish(suite, dataset),
                    algorithm_did=await publish(suite, algorithm_ddo(code, **asset)),
                )
            await suite.compute.Start(start, timeout=T)
        assert caught.value.code() in (INVALID, grpc.StatusCode.FAILED_PRECONDITION), caught.value.details()


async def test_non_finite_algorithm_parameters_are_invalid_argument(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text(DATA)
    async with running_suite(tmp_path) as suite:
        did = await publish(suite, dataset_ddo(data, allowRawAlgorithm=True))
        request = pb.StartRequest(
            consumer_address=CONSUMER,
            dataset_did=did,
            raw_algorithm=GOOD_CODE,
            algorithm_parameters=struct({"threshold": float("nan")}),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            job_id = (await suite.compute.Start(request, timeout=T)).job_id
            await wait_terminal(suite, CONSUMER, job_id)
        assert caught.value.code() == INVALID


async def test_engine_run_without_a_spec_is_invalid_argument(tmp_path: Path) -> None:
    async with (
        running_suite(tmp_path) as suite,
        insecure_channel(f"127.0.0.1:{suite.engine.port}") as channel,
    ):
        engine = engine_grpc.EngineServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await drain(engine.RunJob(epb.RunJobRequest(job_id=uuid.uuid4().hex, owner=CONSUMER), timeout=T))
        assert caught.value.code() == INVALID


async def test_output_file_name_that_is_not_utf8_does_not_break_the_suite(tmp_path: Path) -> None:
    """Regression: such a name used to break the engine's RunJob stream and end the job as
    SYSTEM_ERROR; podtools publish now leaves it out."""
    data = tmp_path / "d.csv"
    data.write_text(DATA)
    async with running_suite(tmp_path) as suite:
        did = await publish(suite, dataset_ddo(data, allowRawAlgorithm=True))
        code = (
            b"open(b'/data/outputs/\\xff.txt', 'w').write('x')\n"
            b"open('/data/outputs/ok.txt', 'w').write('y')\n"
        )
        request = pb.StartRequest(
            consumer_address=CONSUMER, dataset_did=did, raw_algorithm=pb.RawAlgorithm(code=code)
        )
        job_id = (await suite.compute.Start(request, timeout=T)).job_id
        details = await wait_terminal(suite, CONSUMER, job_id)
        assert details.job.status == JobStatus.FINISHED, details.job.status_text
        names = {r.name for r in details.job.results}
        assert "ok.txt" in names
        for name in names:
            name.encode("utf-8")  # raises on a lone surrogate


async def test_a_dataset_cannot_point_at_the_suites_own_files(tmp_path: Path) -> None:
    async with running_suite(tmp_path) as suite:
        secret = tmp_path / "operator.db"  # the operator's SQLite database, in the suite's state
        assert secret.exists()
        ddo = {
            "metadata": {"name": "innocent", "type": "dataset"},
            "services": [
                {
                    "type": "compute",
                    "files": [{"url": secret.as_uri()}],
                    "compute": {"allowRawAlgorithm": True},
                }
            ],
        }
        code = (
            b"import json, os, shutil\n"
            b"did = json.loads(os.environ['DIDS'])[0]\n"
            b"shutil.copy(f'/data/inputs/{did}/0', '/data/outputs/copy.bin')\n"
        )
        try:
            did = await publish(suite, ddo, publisher=OTHER_CONSUMER)  # anyone may call PublishAsset
            start = pb.StartRequest(
                consumer_address=CONSUMER, dataset_did=did, raw_algorithm=pb.RawAlgorithm(code=code)
            )
            job_id = (await suite.compute.Start(start, timeout=T)).job_id
        except grpc.aio.AioRpcError as refused:
            assert refused.code() in (
                INVALID,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.FAILED_PRECONDITION,
            )
            return
        details = await wait_terminal(suite, CONSUMER, job_id)
        for result in details.job.results:
            request = pb.GetResultRequest(
                consumer_address=CONSUMER, job_id=job_id, name=result.name, kind=result.kind
            )
            content = b"".join([m.data async for m in suite.compute.GetResult(request, timeout=T)])
            assert not content.startswith(b"SQLite format 3"), f"{result.name} is the operator's database"


# --- after the barrage (keep this last in the module) ----------------------------------------------


async def test_after_the_barrage_jobs_are_untouched_and_servers_serve(world: World) -> None:
    suite = world.suite

    # The job that was done before is exactly as it was.
    done = await suite.compute.GetJobDetails(
        pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=world.done_job), timeout=T
    )
    assert done == world.done_before

    # The jobs that ran through the barrage end normally, with their whole history and results.
    for consumer, job_id in ((CONSUMER, world.running_job), (OTHER_CONSUMER, world.other_job)):
        details = await wait_terminal(suite, consumer, job_id)
        assert details.job.owner == consumer
        assert details.job.status == JobStatus.FINISHED, details.job.status_text
        assert details.job.exit_code == 0
        assert [e.status for e in details.history] == FINISHED_HISTORY
        assert [e.sequence for e in details.history] == list(range(1, len(FINISHED_HISTORY) + 1))
        result = await drain(
            suite.compute.GetResult(
                pb.GetResultRequest(consumer_address=consumer, job_id=job_id, name="out.txt")
            )
        )
        assert b"".join(m.data for m in result) == DATA.upper().encode()

    # List shows exactly the jobs that were created, to each consumer and to the operator.
    for consumer, expected in world.created_jobs.items():
        listed = await suite.compute.List(pb.ListRequest(consumer_address=consumer), timeout=T)
        assert {j.job_id for j in listed.jobs} == expected
        assert not listed.next_page_token
    everyone = await world.operator.ListJobs(opb.ListJobsRequest(), timeout=T)
    assert {j.job_id for j in everyone.jobs} == {world.done_job, world.running_job, world.other_job}
    assert all(j.status == status_pb2.JOB_STATUS_FINISHED for j in everyone.jobs)

    # Every server still answers its health checks.
    for server in (suite.provider, suite.operator, suite.engine):
        async with insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ["", *server.service_names]:
                response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=T)
                assert response.status == health_pb2.HealthCheckResponse.SERVING, (server.name, service)
