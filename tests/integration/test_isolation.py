"""What an algorithm can and cannot do inside the local backend's sandbox.

One algorithm probes its surroundings (identity, network, host files, writable places, processes,
environment) and reports every finding as JSON in /data/outputs; each test asserts on one part of
that report. The paths and ports to probe reach it through algoCustomData.json.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from c2d_common.status import JobStatus
from engine_svc.config import EngineSettings, GiB
from engine_svc.domain.model import Environment
from tests.conftest import requires_bwrap
from tests.harness import Suite, running_suite
from tests.integration import jobs

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.asyncio(loop_scope="module")]

SECRET_VARIABLE = "C2D_TEST_SERVICE_SECRET"
MiB = 1024**2

PROBE = r"""
import json, os, socket, sys

with open("/data/inputs/algoCustomData.json") as handle:
    params = json.load(handle)
did = json.loads(os.environ["DIDS"])[0]
report = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid()}

def connect(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect((host, port))
        return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()

report["connect"] = {name: connect("127.0.0.1", int(port)) for name, port in params["ports"].items()}
report["connect_outside"] = connect("1.1.1.1", 443)
with open("/proc/net/dev") as handle:
    report["interfaces"] = sorted(line.split(":")[0].strip() for line in handle.readlines()[2:])

report["visible"] = {path: os.path.lexists(path) for path in params["host_paths"]}

def write(path):
    try:
        with open(path, "a") as handle:
            handle.write("written by the algorithm\n")
        return "ok"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"

report["write"] = {
    path: write(path)
    for path in (
        "/data/inputs/new-file.txt",
        f"/data/inputs/{did}/0",
        f"/data/inputs/{did}/new-file.txt",
        "/data/inputs/algoCustomData.json",
        "/data/ddos/new-file.txt",
        "/data/transformations/algorithm",
        "/usr/new-file.txt",
        "/new-file.txt",
        "/tmp/scratch.txt",
        "/data/outputs/written.txt",
        "/data/logs/written.txt",
    )
}
try:
    os.unlink(f"/data/inputs/{did}/0")
    report["delete_input"] = "ok"
except OSError as exc:
    report["delete_input"] = f"{type(exc).__name__}: {exc.strerror}"
with open(f"/data/inputs/{did}/0", "rb") as handle:
    report["input_after"] = handle.read().decode()

pids = [name for name in os.listdir("/proc") if name.isdigit()]
report["processes"] = {}
for pid in pids:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            report["processes"][pid] = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
report["environment"] = sorted(os.environ)
with open("/proc/self/status") as handle:
    report["capabilities"] = {
        key: value.strip() for key, value in (line.split(":", 1) for line in handle) if key.startswith("Cap")
    }
report["hostname"] = socket.gethostname()
with open("/proc/self/uid_map") as handle:
    report["uid_map"] = [line.split() for line in handle]
with open("/proc/self/mountinfo") as handle:
    # mount point -> its mount options (the 6th field)
    report["mounts"] = {fields[4]: fields[5].split(",") for fields in (line.split() for line in handle)}
report["niceness"] = os.nice(0)

with open("/data/outputs/isolation.json", "w") as handle:
    json.dump(report, handle)
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def report(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("suite")
    data_dir = tmp_path_factory.mktemp("datasets")
    (data_dir / "data.csv").write_bytes(b"a,b\n1,2\n")
    # The services' process holds a secret: the sandbox must not inherit it.
    os.environ[SECRET_VARIABLE] = "do-not-leak"
    try:
        async with running_suite(root) as suite:
            did = await jobs.publish_dataset(suite, [data_dir / "data.csv"])
            parameters = {
                "ports": {
                    "provider": suite.provider.port,
                    "operator": suite.operator.port,
                    "engine": suite.engine.port,
                },
                "host_paths": host_paths(suite, data_dir),
            }
            started = await jobs.start_raw(suite, [did], PROBE, parameters=parameters)
            job = await jobs.wait_terminal(suite, started.job_id)
            assert job.status == JobStatus.FINISHED, job.status_text
            _, data = await jobs.download(suite, job.job_id, "isolation.json", jobs.OUTPUT)
            result = jobs.report_from(data)
            result["job"] = job
            result["did"] = did
            result["data_dir"] = str(data_dir)
            yield result
    finally:
        os.environ.pop(SECRET_VARIABLE, None)


def host_paths(suite: Suite, data_dir: Path) -> list[str]:
    return [
        "/work",
        "/root",
        "/home",
        "/etc/passwd",
        "/etc/shadow",
        "/etc",
        str(Path(__file__).resolve().parents[2]),  # this repository, services' code included
        str(suite.root),  # the services' state: jobs database, assets, work and results
        str(suite.root / "operator.db"),
        str(suite.engine_settings.work_dir),
        str(suite.engine_settings.results_dir),
        str(data_dir),  # where the datasets really are
        str(data_dir / "data.csv"),
    ]


async def test_algorithm_runs_as_nobody(report: dict[str, Any]) -> None:
    assert (report["uid"], report["euid"], report["gid"]) == (65534, 65534, 65534)
    assert int(report["capabilities"]["CapEff"], 16) == 0
    assert int(report["capabilities"]["CapPrm"], 16) == 0
    assert int(report["capabilities"]["CapBnd"], 16) == 0, "no capability can ever be regained"
    assert report["hostname"] != os.uname().nodename


@pytest.mark.skipif(os.geteuid() != 0, reason="an unprivileged engine's sandboxes run as its own uid")
async def test_an_engine_running_as_root_runs_algorithms_as_nobody_on_the_host_too(
    report: dict[str, Any],
) -> None:
    """Not only inside its user namespace: uid 65534 there is uid 65534 on the host, so whatever
    escaped the sandbox would be nobody, not the engine's root."""
    mapped = {int(inside): int(outside) for inside, outside, _count in report["uid_map"]}
    assert mapped[65534] == 65534, report["uid_map"]


async def test_algorithm_yields_the_cpu_to_the_services(report: dict[str, Any]) -> None:
    # C2D_SANDBOX_NICE's default, added to the niceness of the process that runs the tests.
    assert report["niceness"] == os.nice(0) + 10


async def test_algorithm_has_no_network(report: dict[str, Any]) -> None:
    assert report["interfaces"] == ["lo"]
    for service, outcome in report["connect"].items():
        assert outcome.startswith("ConnectionRefusedError"), f"{service}: {outcome}"
    assert outcome_is_failure(report["connect_outside"]), report["connect_outside"]


def outcome_is_failure(outcome: str) -> bool:
    return outcome != "connected" and "Error" in outcome


async def test_host_files_are_not_visible(report: dict[str, Any]) -> None:
    visible = {path for path, seen in report["visible"].items() if seen}
    assert visible == set(), f"the algorithm sees host paths: {sorted(visible)}"


async def test_inputs_are_read_only(report: dict[str, Any]) -> None:
    did = report["did"]
    for path in (
        "/data/inputs/new-file.txt",
        f"/data/inputs/{did}/0",
        f"/data/inputs/{did}/new-file.txt",
        "/data/inputs/algoCustomData.json",
        "/data/ddos/new-file.txt",
        "/data/transformations/algorithm",
        "/usr/new-file.txt",
    ):
        outcome = report["write"][path]
        assert outcome != "ok", f"the algorithm could write {path}"
    # Refused by the input's mode (it is not the algorithm's), and by the mount were it not.
    refused = report["write"][f"/data/inputs/{did}/0"]
    assert refused.startswith(("OSError: Read-only file system", "PermissionError")), refused
    for folder in ("/data/inputs", "/data/ddos", "/data/transformations"):
        assert "ro" in report["mounts"][folder], (folder, report["mounts"].get(folder))
    assert "rw" in report["mounts"]["/data/outputs"]
    assert report["delete_input"] != "ok"
    assert report["input_after"] == "a,b\n1,2\n"


async def test_outputs_logs_and_tmp_are_writable(report: dict[str, Any]) -> None:
    for path in ("/data/outputs/written.txt", "/data/logs/written.txt", "/tmp/scratch.txt"):
        assert report["write"][path] == "ok", path
    outputs = jobs.results_by_name(report["job"], jobs.OUTPUT)
    assert "written.txt" in outputs
    assert outputs["written.txt"].size == len("written by the algorithm\n")


async def test_host_processes_are_not_visible(report: dict[str, Any]) -> None:
    processes = report["processes"]
    # A new PID namespace: the sandbox's init (bwrap) and the algorithm, numbered from 1.
    assert len(processes) <= 3, processes
    assert all(int(pid) < 10 for pid in processes), processes
    assert any("/data/transformations/algorithm" in cmdline for cmdline in processes.values())


async def test_root_filesystem_is_read_only(report: dict[str, Any]) -> None:
    assert report["write"]["/new-file.txt"] != "ok", "the algorithm could write /new-file.txt"


async def test_services_environment_is_not_inherited(report: dict[str, Any]) -> None:
    assert SECRET_VARIABLE not in report["environment"]
    assert {"DIDS", "TRANSFORMATION_DID", "PATH", "HOME"} <= set(report["environment"])


TINY_DISK = Environment(
    id="local-tiny-disk",
    description="Local sandbox with a 64 MiB disk quota",
    cpus=1.0,
    memory_bytes=GiB,
    disk_bytes=64 * MiB,
    max_duration_seconds=120,
)

FILL_SCRATCH = r"""
import json
written = {}
for folder in ("/tmp", ""):
    written[folder or "/"] = 0
    try:
        for index in range(3):
            with open(f"{folder}/fill-{index}.bin", "wb") as handle:
                for _ in range(4):
                    handle.write(b"\1" * (8 << 20))
                    written[folder or "/"] += 8 << 20
    except OSError as exc:
        written[(folder or "/") + " error"] = str(exc)
with open("/data/outputs/written.json", "w") as handle:
    json.dump(written, handle)
"""


async def test_scratch_space_counts_against_the_disk_quota(tmp_path: Path) -> None:
    settings = replace(EngineSettings(), environments=(TINY_DISK,))
    (tmp_path / "data.csv").write_bytes(b"x\n")
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(suite, [tmp_path / "data.csv"])
        job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], FILL_SCRATCH)).job_id)
        if job.status == JobStatus.DISK_QUOTA_EXCEEDED:
            return
        assert job.status == JobStatus.FINISHED, job.status_text
        _, data = await jobs.download(suite, job.job_id, "written.json", jobs.OUTPUT)
        written = jobs.report_from(data)
        assert written["/tmp"] <= TINY_DISK.disk_bytes, written
        assert written["/"] <= TINY_DISK.disk_bytes, written
        assert written["/tmp"] + written["/"] <= TINY_DISK.disk_bytes, written


NETWORKED = Environment(
    id="local-networked",
    description="Local sandbox whose algorithms may use the network",
    cpus=1.0,
    memory_bytes=GiB,
    disk_bytes=GiB,
    max_duration_seconds=120,
    network_allowed=True,
)

CONNECT_TO_SERVICES = r"""
import json, socket
with open("/data/inputs/algoCustomData.json") as handle:
    ports = json.load(handle)["ports"]
outcome = {"interfaces": [name for _, name in socket.if_nameindex()]}
# 127.0.0.1 is the sandbox's own loopback; 10.0.2.2 is slirp4netns' way to the host's loopback.
for host in ("127.0.0.1", "10.0.2.2"):
    for name, port in ports.items():
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect((host, int(port)))
            outcome[f"{name}@{host}"] = "connected"
        except OSError as exc:
            outcome[f"{name}@{host}"] = f"{type(exc).__name__}: {exc}"
        finally:
            sock.close()
with open("/data/outputs/connect.json", "w") as handle:
    json.dump(outcome, handle)
"""


async def test_algorithm_with_network_cannot_reach_the_internal_services(tmp_path: Path) -> None:
    settings = replace(EngineSettings(), environments=(NETWORKED,))
    (tmp_path / "data.csv").write_bytes(b"x\n")
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(
            suite, [tmp_path / "data.csv"], compute={"allowRawAlgorithm": True, "allowNetworkAccess": True}
        )
        ports = {"operator": suite.operator.port, "engine": suite.engine.port}
        started = await jobs.start_raw(suite, [did], CONNECT_TO_SERVICES, parameters={"ports": ports})
        job = await jobs.wait_terminal(suite, started.job_id)
        assert job.status == JobStatus.FINISHED, job.status_text
        _, data = await jobs.download(suite, job.job_id, "connect.json", jobs.OUTPUT)
        outcome = jobs.report_from(data)
        assert "tap0" in outcome["interfaces"], outcome  # it has a network of its own
        for name in ("operator", "engine"):
            for host in ("127.0.0.1", "10.0.2.2"):
                assert outcome[f"{name}@{host}"] != "connected", outcome
