"""A job's whole path through the real provider, operator and engine, with the real sandbox.

One job (two datasets, one of them with two files, and a raw algorithm that reports what it sees of
Ocean's runtime contract) is run once for the module; the tests below each check one promise about
it. Further tests run their own small jobs: failures, provisioning errors, idempotent Start.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from c2d.common.v1 import job_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.status import JobStatus
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, OTHER_CONSUMER, Suite, running_suite
from tests.integration import jobs
from tests.integration.jobs import LOG, OUTPUT, sha256_hex

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.asyncio(loop_scope="module")]

BIG_OUTPUT_BYTES = 2 * 1024 * 1024 + 654_321  # spans three 1 MiB GetResult pieces

CONTRACT_ALGORITHM = r"""
import hashlib, json, os, sys

def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else None

report = {"env": {name: os.environ.get(name) for name in ("DIDS", "TRANSFORMATION_DID")}}
dids = json.loads(os.environ["DIDS"])
report["inputs_listing"] = listing("/data/inputs")
report["inputs"] = {}
for did in dids:
    folder = f"/data/inputs/{did}"
    report["inputs"][did] = {name: open(f"{folder}/{name}", "rb").read().hex() for name in listing(folder)}
with open("/data/inputs/algoCustomData.json") as handle:
    report["custom_data"] = json.load(handle)
report["ddos"] = {}
for name in listing("/data/ddos"):
    with open(f"/data/ddos/{name}") as handle:
        report["ddos"][name] = json.load(handle)
report["algorithm_is_file"] = os.path.isfile("/data/transformations/algorithm")
report["transformations_listing"] = listing("/data/transformations")

os.makedirs("/data/outputs/a/b")
with open("/data/outputs/a/b/c.txt", "w") as handle:
    handle.write("nested\n")
open("/data/outputs/empty.txt", "wb").close()
big = os.urandom(BIG_OUTPUT_BYTES)
with open("/data/outputs/big.bin", "wb") as handle:
    handle.write(big)
report["big_sha256"] = hashlib.sha256(big).hexdigest()
with open("/data/logs/own.log", "w") as handle:
    handle.write("the algorithm's own log\n")
with open("/data/outputs/report.json", "w") as handle:
    json.dump(report, handle)
print("hello on stdout")
print("hello on stderr", file=sys.stderr)
""".replace("BIG_OUTPUT_BYTES", str(BIG_OUTPUT_BYTES))

PARAMETERS: dict[str, Any] = {
    "alpha": 0.5,
    "iterations": 3,
    "label": "contract check",
    "nested": {"flags": [True, False], "empty": None},
}

ONE_CSV = b"a,b\n1,2\n3,4\n"
TWO_BIN = bytes(range(256)) * 3
THREE_TXT = "third file, second dataset: \u00e9\u00e8\n".encode()

HAPPY_STATUSES = [
    JobStatus.QUEUED,
    JobStatus.STARTED,
    JobStatus.CONFIGURING,
    JobStatus.PROVISIONING_SUCCEEDED,
    JobStatus.RUNNING,
    JobStatus.PUBLISHING,
    JobStatus.FINISHED,
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Suite]:
    async with running_suite(tmp_path_factory.mktemp("suite")) as running:
        yield running


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@dataclass
class HappyJob:
    data_dir: Path
    first_did: str
    second_did: str
    started: job_pb2.Job
    live_watch: list[pb.WatchResponse]
    job: job_pb2.Job
    report: dict[str, Any]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def happy(suite: Suite, data_dir: Path) -> HappyJob:
    (data_dir / "one.csv").write_bytes(ONE_CSV)
    (data_dir / "two.bin").write_bytes(TWO_BIN)
    (data_dir / "three.txt").write_bytes(THREE_TXT)
    first = await jobs.publish_dataset(suite, [data_dir / "one.csv", data_dir / "two.bin"], name="first")
    second = await jobs.publish_dataset(suite, [data_dir / "three.txt"], name="second")
    started = await jobs.start_raw(suite, [first, second], CONTRACT_ALGORITHM, parameters=PARAMETERS)
    live_watch = await jobs.watch(suite, started.job_id)
    job = (await jobs.details(suite, started.job_id)).job
    assert job.status == JobStatus.FINISHED, job
    _, report = await jobs.download(suite, job.job_id, "report.json", OUTPUT)
    return HappyJob(data_dir, first, second, started, live_watch, job, jobs.report_from(report))


# --- Ocean's runtime contract, as the algorithm saw it ---------------------------------------------


async def test_algorithm_sees_dids_in_its_environment(happy: HappyJob) -> None:
    env = happy.report["env"]
    assert json.loads(env["DIDS"]) == [happy.first_did, happy.second_did]
    # A raw algorithm has no DID, but the variable is there as Ocean's algorithms expect it.
    assert env["TRANSFORMATION_DID"] == ""


async def test_algorithm_sees_each_dataset_file_in_order(happy: HappyJob) -> None:
    assert happy.report["inputs_listing"] == sorted(
        [happy.first_did, happy.second_did, "algoCustomData.json"]
    )
    assert happy.report["inputs"] == {
        happy.first_did: {"0": ONE_CSV.hex(), "1": TWO_BIN.hex()},
        happy.second_did: {"0": THREE_TXT.hex()},
    }


async def test_algorithm_sees_its_parameters(happy: HappyJob) -> None:
    assert happy.report["custom_data"] == PARAMETERS


async def test_algorithm_sees_the_public_ddos(suite: Suite, happy: HappyJob) -> None:
    ddos = happy.report["ddos"]
    assert sorted(ddos) == sorted([happy.first_did, happy.second_did])
    for did in (happy.first_did, happy.second_did):
        assert ddos[did] == await jobs.public_ddo(suite, did)
        assert ddos[did]["id"] == did
        assert all("files" not in service for service in ddos[did]["services"])
        assert str(happy.data_dir) not in json.dumps(ddos[did])


async def test_algorithm_sees_its_code(happy: HappyJob) -> None:
    assert happy.report["algorithm_is_file"] is True
    assert happy.report["transformations_listing"] == ["algorithm"]


# --- results -------------------------------------------------------------------------------------


async def test_outputs_and_logs_are_published(suite: Suite, happy: HappyJob) -> None:
    outputs = jobs.results_by_name(happy.job, OUTPUT)
    assert sorted(outputs) == ["a/b/c.txt", "big.bin", "empty.txt", "report.json"]
    nested = outputs["a/b/c.txt"]
    assert (nested.size, nested.sha256) == (7, sha256_hex(b"nested\n"))
    assert outputs["big.bin"].size == BIG_OUTPUT_BYTES
    assert outputs["big.bin"].sha256 == happy.report["big_sha256"]
    assert (outputs["empty.txt"].size, outputs["empty.txt"].sha256) == (0, sha256_hex(b""))

    log_results = jobs.results_by_name(happy.job, LOG)
    assert {"algorithm.stdout.log", "algorithm.stderr.log"} <= set(log_results)
    own = [name for name in log_results if name.rsplit("/", 1)[-1] == "own.log"]
    assert len(own) == 1, f"the algorithm's /data/logs/own.log is not among the logs: {sorted(log_results)}"
    expected = {
        "algorithm.stdout.log": b"hello on stdout\n",
        "algorithm.stderr.log": b"hello on stderr\n",
        own[0]: b"the algorithm's own log\n",
    }
    for name, content in expected.items():
        file, data = await jobs.download(suite, happy.job.job_id, name, LOG)
        assert data == content, name
        assert (file.size, file.sha256) == (len(content), sha256_hex(content))
        assert (log_results[name].size, log_results[name].sha256) == (len(content), sha256_hex(content))

    _, data = await jobs.download(suite, happy.job.job_id, "a/b/c.txt", OUTPUT)
    assert data == b"nested\n"


async def test_consumer_never_sees_a_result_location(suite: Suite, happy: HappyJob) -> None:
    job_id = happy.job.job_id
    seen: list[job_pb2.Job] = [happy.started, happy.job, (await jobs.details(suite, job_id)).job]
    seen += [m.job for m in happy.live_watch if m.HasField("job")]
    seen += [m.job for m in await jobs.watch(suite, job_id) if m.HasField("job")]
    listed = await suite.compute.List(pb.ListRequest(consumer_address=CONSUMER, page_size=1000))
    seen += [j for j in listed.jobs if j.job_id == job_id]
    seen.append(await jobs.stop(suite, job_id))
    finished = [job for job in seen if job.status == JobStatus.FINISHED]
    assert len(finished) >= 5
    for job in finished:
        assert len(job.results) == len(happy.job.results), "every view of the finished job lists its results"
    for job in seen:
        assert [r.location for r in job.results] == [""] * len(job.results)
    for result in happy.job.results:
        messages = await jobs.download_messages(suite, job_id, result.name, result.kind)
        assert messages[0].file.location == ""


async def test_nothing_of_the_job_remains_but_its_published_files(suite: Suite, happy: HappyJob) -> None:
    job_id = happy.job.job_id
    assert not (suite.engine_settings.work_dir / job_id).exists()
    published = {f"outputs/{r.name}" for r in happy.job.results if r.kind == OUTPUT}
    published |= {f"logs/{r.name}" for r in happy.job.results if r.kind == LOG}
    assert jobs.files_under(suite.engine_settings.results_dir / job_id) == published
    assert jobs.processes_mentioning(job_id) == []


# --- status history and Watch --------------------------------------------------------------------


async def test_history_lists_every_status_in_order(suite: Suite, happy: HappyJob) -> None:
    response = await jobs.details(suite, happy.job.job_id)
    history = list(response.history)
    assert [e.status for e in history] == HAPPY_STATUSES
    assert [e.sequence for e in history] == list(range(1, len(HAPPY_STATUSES) + 1))
    assert all(e.job_id == happy.job.job_id for e in history)
    assert all(e.HasField("time") and e.time.ToNanoseconds() > 0 for e in history)
    times = [e.time.ToNanoseconds() for e in history]
    assert times == sorted(times)
    job = response.job
    assert job.sequence == history[-1].sequence
    assert job.status == JobStatus.FINISHED and job.exit_code == 0 and job.HasField("exit_code")
    assert job.HasField("finished_at") and job.finished_at.ToNanoseconds() == times[-1]
    assert list(job.dataset_dids) == [happy.first_did, happy.second_did]
    assert job.owner == CONSUMER


async def test_live_watch_sends_the_job_then_every_change_until_the_end(
    suite: Suite, happy: HappyJob
) -> None:
    messages = happy.live_watch
    first, last = messages[0], messages[-1]
    assert first.HasField("job") and first.job.job_id == happy.job.job_id
    sequences = [m.event.sequence for m in messages]
    assert sequences == list(range(sequences[0], sequences[0] + len(messages))), "no event lost or repeated"
    history = (await jobs.details(suite, happy.job.job_id)).history
    by_sequence = {e.sequence: e for e in history}
    assert [m.event for m in messages] == [by_sequence[s] for s in sequences]
    assert last.event.status == JobStatus.FINISHED and last.HasField("job")
    assert last.job.status == JobStatus.FINISHED
    assert all(not m.HasField("job") for m in messages[1:-1]), "only the first and the terminal carry the job"


async def test_watch_resumes_after_a_sequence(suite: Suite, happy: HappyJob) -> None:
    job_id = happy.job.job_id
    resumed = await jobs.watch(suite, job_id, after_sequence=3)
    assert [m.event.sequence for m in resumed] == [4, 5, 6, 7]
    assert [m.event.status for m in resumed] == HAPPY_STATUSES[3:]
    assert resumed[-1].HasField("job") and resumed[-1].job.status == JobStatus.FINISHED

    current = await jobs.watch(suite, job_id)
    assert len(current) == 1, "on an ended job, Watch sends the current (terminal) state and ends"
    assert current[0].event.sequence == 7 and current[0].job.status == JobStatus.FINISHED

    assert await jobs.watch(suite, job_id, after_sequence=7) == []


async def test_watch_first_message_carries_the_job_as_of_its_event(suite: Suite, data_dir: Path) -> None:
    """The race needs a status change between two reads of the operator: many Watch calls, started
    a few milliseconds apart while a short job goes through its phases, show it in every run here."""
    (data_dir / "watched.csv").write_bytes(b"x\n")
    did = await jobs.publish_dataset(suite, [data_dir / "watched.csv"])

    async def first_message(job_id: str, delay: float) -> pb.WatchResponse:
        await asyncio.sleep(delay)
        return (await jobs.watch(suite, job_id))[0]

    for _ in range(10):
        job = await jobs.start_raw(suite, [did], "print('short')")
        firsts = await asyncio.gather(*(first_message(job.job_id, i * 0.005) for i in range(60)))
        for first in firsts:
            assert (first.job.status, first.job.sequence) == (first.event.status, first.event.sequence)


# --- GetResult -----------------------------------------------------------------------------------


async def test_get_result_streams_the_whole_file_and_resumes(suite: Suite, happy: HappyJob) -> None:
    job_id = happy.job.job_id
    file, whole = await jobs.download(suite, job_id, "big.bin", OUTPUT)
    assert len(whole) == BIG_OUTPUT_BYTES == file.size
    assert sha256_hex(whole) == file.sha256 == happy.report["big_sha256"]
    assert file.name == "big.bin" and file.kind == OUTPUT

    offset = 1_234_567
    messages = await jobs.download_messages(suite, job_id, "big.bin", OUTPUT, offset)
    assert messages[0].offset == offset
    assert messages[0].file.sha256 == file.sha256 and messages[0].file.size == file.size
    assert b"".join(m.data for m in messages) == whole[offset:]

    _, tail = await jobs.download(suite, job_id, "big.bin", OUTPUT, offset=file.size)
    assert tail == b""

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await jobs.download_messages(suite, job_id, "big.bin", OUTPUT, file.size + 1)
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_get_result_of_an_empty_file(suite: Suite, happy: HappyJob) -> None:
    messages = await jobs.download_messages(suite, happy.job.job_id, "empty.txt")
    assert len(messages) == 1
    assert messages[0].file.name == "empty.txt"
    assert (messages[0].file.size, messages[0].file.sha256) == (0, sha256_hex(b""))
    assert messages[0].data == b"" and messages[0].offset == 0


async def test_get_result_refuses_unknown_names_and_other_consumers(suite: Suite, happy: HappyJob) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await jobs.download_messages(suite, happy.job.job_id, "no-such-file")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    stream = suite.compute.GetResult(
        pb.GetResultRequest(consumer_address=OTHER_CONSUMER, job_id=happy.job.job_id, name="report.json")
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in stream:
            pass
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- GetLogs -------------------------------------------------------------------------------------


async def test_get_logs_replays_a_finished_job(suite: Suite, happy: HappyJob) -> None:
    chunks = await jobs.logs(suite, happy.job.job_id)
    assert [c.sequence for c in chunks] == list(range(1, len(chunks) + 1))
    assert "hello on stdout" in jobs.log_text(chunks, job_pb2.LOG_STREAM_STDOUT)
    assert "hello on stderr" in jobs.log_text(chunks, job_pb2.LOG_STREAM_STDERR)
    assert "exited with code 0" in jobs.log_text(chunks, job_pb2.LOG_STREAM_SYSTEM)
    assert all(c.HasField("time") for c in chunks)

    resumed = await jobs.logs(suite, happy.job.job_id, after_sequence=2)
    assert [c.sequence for c in resumed] == [c.sequence for c in chunks[2:]]


FOLLOWED_ALGORITHM = """
import os, sys, time
print("first line", flush=True)
# Wait for the test's go-ahead, so the second line surely comes after the first one was received.
deadline = time.monotonic() + 60
while not os.path.exists("/data/inputs/go-ahead"):
    if time.monotonic() > deadline:
        sys.exit("no go-ahead")
    time.sleep(0.02)
print("second line", flush=True)
"""


async def test_get_logs_follows_a_running_job_until_it_ends(suite: Suite, data_dir: Path) -> None:
    (data_dir / "follow.csv").write_bytes(b"x\n")
    did = await jobs.publish_dataset(suite, [data_dir / "follow.csv"])
    job = await jobs.start_raw(suite, [did], FOLLOWED_ALGORITHM)
    # The sandbox's /data/inputs is a read-only view of this host folder: the go-ahead appears there.
    go_ahead = suite.engine_settings.work_dir / job.job_id / "data" / "inputs" / "go-ahead"

    seen: list[job_pb2.LogChunk] = []
    status_at_first_line = None
    stream = suite.compute.GetLogs(
        pb.GetLogsRequest(consumer_address=CONSUMER, job_id=job.job_id, follow=True)
    )
    async with asyncio.timeout(jobs.WAIT_SECONDS):
        async for message in stream:
            seen.append(message.chunk)
            stdout = jobs.log_text(seen, job_pb2.LOG_STREAM_STDOUT)
            if status_at_first_line is None and "first line" in stdout:
                status_at_first_line = (await jobs.details(suite, job.job_id)).job.status
                assert "second line" not in stdout
                go_ahead.write_text("")
    assert status_at_first_line == JobStatus.RUNNING, "the first line came while the algorithm ran"
    stdout = jobs.log_text(seen, job_pb2.LOG_STREAM_STDOUT)
    assert stdout == "first line\nsecond line\n"
    # The stream ended because the job did.
    assert (await jobs.details(suite, job.job_id)).job.status == JobStatus.FINISHED
    assert [c.sequence for c in seen] == [c.sequence for c in await jobs.logs(suite, job.job_id)]


# --- failures ------------------------------------------------------------------------------------


async def test_failing_algorithm_ends_as_algorithm_failed_with_its_exit_code(
    suite: Suite, data_dir: Path
) -> None:
    (data_dir / "fail.csv").write_bytes(b"x\n")
    did = await jobs.publish_dataset(suite, [data_dir / "fail.csv"])
    code = "import sys\nprint('something went wrong', file=sys.stderr)\nsys.exit(3)\n"
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], code)).job_id)

    assert job.status == JobStatus.ALGORITHM_FAILED, job.status_text
    assert job.HasField("exit_code") and job.exit_code == 3
    assert "3" in job.status_text
    history = (await jobs.details(suite, job.job_id)).history
    assert history[-1].status == JobStatus.ALGORITHM_FAILED and history[-1].exit_code == 3
    assert JobStatus.FINISHED not in [e.status for e in history]
    _, stderr = await jobs.download(suite, job.job_id, "algorithm.stderr.log", LOG)
    assert stderr == b"something went wrong\n"
    assert not (suite.engine_settings.work_dir / job.job_id).exists()


async def test_missing_dataset_file_ends_as_data_provisioning_failed(suite: Suite, data_dir: Path) -> None:
    gone = data_dir / "gone.csv"
    gone.write_bytes(b"soon gone\n")
    did = await jobs.publish_dataset(suite, [gone])
    gone.unlink()
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print('never runs')")).job_id)

    assert job.status == JobStatus.DATA_PROVISIONING_FAILED, job.status_text
    assert did in job.status_text, "the status text says which dataset could not be provisioned"
    assert not job.HasField("exit_code")
    statuses = [e.status for e in (await jobs.details(suite, job.job_id)).history]
    assert JobStatus.RUNNING not in statuses
    assert not (suite.engine_settings.work_dir / job.job_id).exists()
    assert not (suite.engine_settings.results_dir / job.job_id).exists()


async def test_provisioning_failure_does_not_reveal_the_dataset_location(
    suite: Suite, data_dir: Path
) -> None:
    secret = data_dir / "secret-location" / "private.csv"
    secret.parent.mkdir()
    secret.write_bytes(b"private\n")
    did = await jobs.publish_dataset(suite, [secret])
    secret.unlink()
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print('never runs')")).job_id)
    assert job.status == JobStatus.DATA_PROVISIONING_FAILED

    response = await jobs.details(suite, job.job_id)
    shown = [response.job.status_text, *(e.status_text for e in response.history)]
    shown += [c.data.decode(errors="replace") for c in await jobs.logs(suite, job.job_id)]
    for text in shown:
        assert "secret-location" not in text, text


async def test_wrong_dataset_checksum_ends_as_data_provisioning_failed(suite: Suite, data_dir: Path) -> None:
    path = data_dir / "tampered.csv"
    path.write_bytes(b"content the publisher did not declare\n")
    did = await jobs.publish_dataset(suite, [jobs.file_entry(path, checksum="0" * 64)])
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print('never runs')")).job_id)

    assert job.status == JobStatus.DATA_PROVISIONING_FAILED, job.status_text
    assert "sha256" in job.status_text
    assert JobStatus.RUNNING not in [e.status for e in (await jobs.details(suite, job.job_id)).history]
    assert not (suite.engine_settings.work_dir / job.job_id).exists()


async def test_missing_algorithm_file_ends_as_algorithm_provisioning_failed(
    suite: Suite, data_dir: Path
) -> None:
    script = data_dir / "vanishing_algorithm.py"
    script.write_text("print('never runs')\n")
    algorithm_did = await jobs.publish_algorithm(suite, [script])
    (data_dir / "trusting.csv").write_bytes(b"x\n")
    dataset_did = await jobs.publish_dataset(
        suite,
        [data_dir / "trusting.csv"],
        compute={"publisherTrustedAlgorithms": [await jobs.trusted(suite, algorithm_did)]},
    )
    script.unlink()
    started = await jobs.start_asset(suite, [dataset_did], algorithm_did)
    job = await jobs.wait_terminal(suite, started.job_id)

    assert job.status == JobStatus.ALGORITHM_PROVISIONING_FAILED, job.status_text
    assert job.status_text, "the status text says what went wrong"
    assert job.algorithm_did == algorithm_did
    assert not (suite.engine_settings.work_dir / job.job_id).exists()


async def test_algorithm_asset_sees_its_did_and_its_further_files(suite: Suite, data_dir: Path) -> None:
    folder = data_dir / "algorithm-asset"
    folder.mkdir()
    (folder / "main.py").write_text(
        "import json, os\n"
        "report = {'did': os.environ.get('TRANSFORMATION_DID'),\n"
        "          'listing': sorted(os.listdir('/data/transformations')),\n"
        "          'helper': open('/data/transformations/1').read()}\n"
        "json.dump(report, open('/data/outputs/report.json', 'w'))\n"
    )
    (folder / "helper.txt").write_text("a helper file\n")
    algorithm_did = await jobs.publish_algorithm(suite, [folder / "main.py", folder / "helper.txt"])
    (folder / "data.csv").write_bytes(b"x\n")
    dataset_did = await jobs.publish_dataset(
        suite,
        [folder / "data.csv"],
        compute={"publisherTrustedAlgorithms": [await jobs.trusted(suite, algorithm_did)]},
    )
    job = await jobs.wait_terminal(
        suite, (await jobs.start_asset(suite, [dataset_did], algorithm_did)).job_id
    )

    assert job.status == JobStatus.FINISHED, job.status_text
    _, data = await jobs.download(suite, job.job_id, "report.json", OUTPUT)
    assert jobs.report_from(data) == {
        "did": algorithm_did,
        "listing": ["1", "algorithm"],
        "helper": "a helper file\n",
    }


async def test_output_whose_name_is_not_utf8_does_not_break_the_job(suite: Suite, data_dir: Path) -> None:
    (data_dir / "names.csv").write_bytes(b"x\n")
    did = await jobs.publish_dataset(suite, [data_dir / "names.csv"])
    code = (
        "open(b'/data/outputs/latin1-\\xe9t\\xe9.txt', 'wb').write(b'not utf-8 name\\n')\n"
        "open('/data/outputs/ok.txt', 'w').write('fine\\n')\n"
    )
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], code)).job_id)

    assert job.status in (JobStatus.FINISHED, JobStatus.RESULTS_UPLOAD_FAILED), job.status_text
    if job.status == JobStatus.FINISHED:
        assert "ok.txt" in jobs.results_by_name(job, OUTPUT)
    published = {f"{'outputs' if r.kind == OUTPUT else 'logs'}/{r.name}" for r in job.results}
    results_dir = suite.engine_settings.results_dir / job.job_id
    assert (jobs.files_under(results_dir) if results_dir.exists() else set()) == published


# --- idempotent Start ----------------------------------------------------------------------------


async def test_start_with_the_same_request_id_answers_the_same_job(suite: Suite, data_dir: Path) -> None:
    (data_dir / "idempotent.csv").write_bytes(b"x\n")
    did = await jobs.publish_dataset(suite, [data_dir / "idempotent.csv"])
    first = await jobs.start_raw(suite, [did], "print('once')", request_id="retry-me")
    again = await jobs.start_raw(suite, [did], "print('once')", request_id="retry-me")
    assert again.job_id == first.job_id
    other_owner = await jobs.start_raw(
        suite, [did], "print('once')", request_id="retry-me", consumer=OTHER_CONSUMER
    )
    assert other_owner.job_id != first.job_id, "a request_id is the consumer's own"
    # The same request id with other arguments is another request, not a retry: refused, rather
    # than answered with a job that never ran what was asked.
    for code, parameters in (("print('twice')", None), ("print('once')", {"k": 1})):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs.start_raw(suite, [did], code, request_id="retry-me", parameters=parameters)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"already started job {first.job_id} with other arguments" in (refused.value.details() or "")

    job = await jobs.wait_terminal(suite, first.job_id)
    assert job.status == JobStatus.FINISHED
    after_end = await jobs.start_raw(suite, [did], "print('once')", request_id="retry-me")
    assert after_end.job_id == first.job_id and after_end.status == JobStatus.FINISHED
    history = (await jobs.details(suite, first.job_id)).history
    assert [e.status for e in history].count(JobStatus.STARTED) == 1, "the job ran once"
    listed = await suite.compute.List(pb.ListRequest(consumer_address=CONSUMER, page_size=1000))
    assert [j.job_id for j in listed.jobs].count(first.job_id) == 1

    async with asyncio.timeout(jobs.WAIT_SECONDS):
        request = pb.WatchRequest(consumer_address=OTHER_CONSUMER, job_id=other_owner.job_id)
        messages = [m async for m in suite.compute.Watch(request)]
    assert messages[-1].event.status == JobStatus.FINISHED
    assert messages[-1].job.owner == OTHER_CONSUMER
