"""file:// inputs and what a job spec holds inline, laid out by the engine itself (no configuration
sandbox): linked when on the workspace's filesystem, copied otherwise, checked against their DDO,
and never revealing where they live, not even through /proc/self/mountinfo."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from c2d_common.status import JobStatus
from engine_svc.infra.local_inputs import LocalFile, LocalProvisioningFailed, provide_files, write_inline
from tests.conftest import requires_bwrap
from tests.harness import Suite, running_suite
from tests.integration import jobs

# Reports what the algorithm sees of its first dataset file and of its mounts.
INSPECT = """
import hashlib, json, os
did = json.loads(os.environ["DIDS"])[0]
path = f"/data/inputs/{did}/0"
info = os.stat(path)
with open(path, "rb") as handle:
    digest = hashlib.sha256(handle.read()).hexdigest()
try:
    open(path, "ab").write(b"tampered")
    writable = True
except OSError:
    writable = False
report = {
    "sha256": digest,
    "links": info.st_nlink,
    "writable": writable,
    "mountinfo": open("/proc/self/mountinfo").read(),
    "custom": json.load(open("/data/inputs/algoCustomData.json")),
    "ddo_id": json.load(open(f"/data/ddos/{did}"))["id"],
    "algorithm": open("/data/transformations/algorithm").read()[:20],
}
open("/data/outputs/report.json", "w").write(json.dumps(report))
"""


async def _report(suite: Suite, job_id: str) -> dict[str, object]:
    _, data = await jobs.download(suite, job_id, "report.json")
    return jobs.report_from(data)


@requires_bwrap
async def test_a_local_dataset_is_linked_read_only_and_its_location_stays_hidden(tmp_path: Path) -> None:
    secret_folder = tmp_path / "publisher-private-folder-9d2e"
    secret_folder.mkdir()
    data = secret_folder / "patients-2026.csv"
    data.write_bytes(b"id,age\n1,40\n2,51\n")
    before = data.read_bytes()
    async with running_suite(tmp_path / "suite") as suite:
        did = await jobs.publish_dataset(suite, [data])
        started = await jobs.start_raw(suite, [did], INSPECT, parameters={"k": 3})
        job = await jobs.wait_terminal(suite, started.job_id)
        assert job.status == JobStatus.FINISHED, job.status_text
        report = await _report(suite, job.job_id)
    assert report["sha256"] == hashlib.sha256(before).hexdigest()
    assert report["links"] == 2, "the input is the publisher's file itself, linked, not a copy"
    assert report["writable"] is False
    mountinfo = str(report["mountinfo"])
    assert "publisher-private-folder-9d2e" not in mountinfo and "patients-2026" not in mountinfo
    assert report["custom"] == {"k": 3}
    assert report["ddo_id"] == did
    assert str(report["algorithm"]).startswith("\nimport hashlib")
    # The job's end removed the link, never the publisher's file.
    assert data.read_bytes() == before and os.stat(data).st_nlink == 1


@requires_bwrap
@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"checksum": "0" * 64}, "does not match the sha256 its DDO declares"),
        ({"contentLength": 5}, "has 17 bytes, not the 5 its DDO declares"),
    ],
    ids=["wrong sha256", "wrong size"],
)
async def test_a_local_dataset_that_is_not_what_its_ddo_declares_is_refused(
    tmp_path: Path, entry: dict[str, object], reason: str
) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b"id,age\n1,40\n2,51\n")
    async with running_suite(tmp_path / "suite") as suite:
        did = await jobs.publish_dataset(suite, [{"url": data.as_uri(), **entry}])
        started = await jobs.start_raw(suite, [did], "print('never')")
        job = await jobs.wait_terminal(suite, started.job_id)
    assert job.status == JobStatus.DATA_PROVISIONING_FAILED
    assert f"dataset {did} file 0 {reason}" in job.status_text
    assert str(tmp_path) not in job.status_text


@requires_bwrap
async def test_a_fifo_in_place_of_a_local_dataset_fails_at_once(tmp_path: Path) -> None:
    """A named pipe would block a plain open for ever: the job must fail, not hang."""
    data = tmp_path / "d.csv"
    data.write_text("a\n")
    async with running_suite(tmp_path / "suite") as suite:
        did = await jobs.publish_dataset(suite, [{"url": data.as_uri()}])
        data.unlink()
        os.mkfifo(data)
        started = await jobs.start_raw(suite, [did], "print('never')")
        job = await jobs.wait_terminal(suite, started.job_id)
    assert job.status == JobStatus.DATA_PROVISIONING_FAILED
    assert "is not a regular file" in job.status_text


# --- the copy, where the kernel cannot link (another filesystem) -----------------------------------

SHM = Path("/dev/shm")


def _other_filesystem_source(tmp_path: Path, data: bytes) -> Path:
    if not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's folder")
    source = SHM / f"c2d-test-{os.getpid()}-{threading.get_ident()}.bin"
    source.write_bytes(data)
    return source


def _layout(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for name in ("inputs", "transformations", "ddos"):
        (root / name).mkdir(parents=True)
    (root / "inputs" / "did:op:abc").mkdir()
    return root


def _file(source: Path, data: bytes, **changes: object) -> LocalFile:
    fields: dict[str, object] = {
        "source": str(source),
        "folder": ("inputs", "did:op:abc"),
        "name": "0",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "failed_input": "data",
        "label": "dataset did:op:abc file 0",
    }
    fields.update(changes)
    return LocalFile(**fields)  # type: ignore[arg-type]


def test_a_file_on_another_filesystem_is_copied_within_the_budget(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = _other_filesystem_source(tmp_path, data)
    try:
        root = _layout(tmp_path)
        copied = provide_files(root, [_file(source, data)], 8 * 1024 * 1024, threading.Event())
        target = root / "inputs" / "did:op:abc" / "0"
        assert copied == len(data)
        assert target.read_bytes() == data and os.stat(target).st_nlink == 1
        with pytest.raises(LocalProvisioningFailed, match="larger than its environment's disk"):
            provide_files(
                _layout(tmp_path / "again"), [_file(source, data)], len(data) - 1, threading.Event()
            )
    finally:
        source.unlink()


def test_a_cancelled_copy_stops(tmp_path: Path) -> None:
    data = os.urandom(1024 * 1024)
    source = _other_filesystem_source(tmp_path, data)
    try:
        cancelled = threading.Event()
        cancelled.set()
        with pytest.raises(LocalProvisioningFailed, match="cancelled"):
            provide_files(_layout(tmp_path), [_file(source, data, sha256="")], None, cancelled)
    finally:
        source.unlink()


def test_a_file_linked_where_the_kernel_allows_takes_no_budget(tmp_path: Path) -> None:
    data = b"same filesystem\n"
    source = tmp_path / "source.csv"
    source.write_bytes(data)
    root = _layout(tmp_path)
    assert provide_files(root, [_file(source, data)], 1, threading.Event()) == 0
    assert os.path.samefile(source, root / "inputs" / "did:op:abc" / "0")


def test_a_link_planted_at_a_source_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the provider's key")
    planted = tmp_path / "dataset.csv"
    planted.symlink_to(secret)
    with pytest.raises(LocalProvisioningFailed, match="is not a readable file"):
        provide_files(_layout(tmp_path), [_file(planted, b"", sha256="", size=0)], None, threading.Event())


def test_inline_inputs_refuse_a_did_twice(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    with pytest.raises(LocalProvisioningFailed, match="cannot be laid out"):
        write_inline(root, [("did:op:abc", {}), ("did:op:abc", {})], {}, b"")
    assert json.loads((root / "ddos" / "did:op:abc").read_text()) == {}
