"""The Kubernetes backend's whole life cycle against the emulated API server (real HTTP, the
official client's REST and watch calls) and the test kubelet (each pod's commands really run in
the local sandbox): inputs really fetched, the algorithm really run, results really published."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from c2d_common.ids import new_job_id
from c2d_common.status import JobStatus
from engine_svc.infra.cgroups import CgroupManager
from engine_svc.infra.kubernetes import KubernetesBackend
from tests.k8s.apiserver import ApiError, Route
from tests.k8s.cluster import Cluster
from tests.k8s.conftest import needs_bwrap
from tests.k8s.jobs import SMALL, MiB, follow, job_spec, make_runner, run_job, start

pytestmark = [pytest.mark.sandbox, needs_bwrap]

SUMMARIZE = """\
import json, os
rows = open('/data/inputs/' + json.loads(os.environ['DIDS'])[0] + '/0').read().split()
print('rows:', len(rows))
os.makedirs('/data/outputs/nested', exist_ok=True)
open('/data/outputs/nested/count.txt', 'w').write(str(len(rows)))
open('/data/logs/algo.log', 'w').write('done\\n')
"""


def backend_for(cluster: Cluster, **overrides: object) -> KubernetesBackend:
    return KubernetesBackend(
        cluster.settings(**overrides), results_dir=cluster.results_dir, allow_private_input_hosts=True
    )


async def test_a_job_runs_its_three_pods_and_publishes_its_results(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    data = b"1\n2\n3\n"
    (folder / "data.txt").write_bytes(data)
    backend = backend_for(cluster)
    try:
        runner = make_runner(backend)
        job_id, seen = await run_job(runner, job_spec(f"{url}/data.txt", SUMMARIZE, data=data))
    finally:
        await backend.close()
    assert seen.status is JobStatus.FINISHED, seen.statuses
    assert seen.history == [
        JobStatus.STARTED,
        JobStatus.CONFIGURING,
        JobStatus.PROVISIONING_SUCCEEDED,
        JobStatus.RUNNING,
        JobStatus.PUBLISHING,
        JobStatus.FINISHED,
    ]
    assert seen.final.exit_code == 0
    assert b"rows: 3" in seen.output
    results = {r.name: r for r in seen.final.results}
    assert set(results) == {
        "nested/count.txt",
        "algorithm.stdout.log",
        "algorithm.stderr.log",
        "algorithm-logs/algo.log",
    }
    count = results["nested/count.txt"]
    assert count.location == (cluster.results_dir / job_id / "outputs/nested/count.txt").as_uri()
    assert (cluster.results_dir / job_id / "outputs/nested/count.txt").read_text() == "3"
    assert (cluster.results_dir / job_id / "logs/algorithm.stdout.log").read_text() == "rows: 3\n"
    # Nothing of the job is left in the cluster.
    assert cluster.labelled(job_id) == []
    # The three pods ran; the algorithm without network.
    assert cluster.kubelet.networks[(cluster.namespace, f"c2d-{job_id}-algorithm")] == "none"


MEMORY_HOG = """\
print("allocating", flush=True)
hoard = []
while True:
    hoard.append(bytearray(16 << 20))
"""


@pytest.mark.skipif(
    CgroupManager.detect() is None, reason="this machine gives the kubelet no writable cgroups"
)
async def test_an_oom_killed_container_ends_the_job_out_of_memory(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    try:
        job_id, seen = await run_job(make_runner(backend), job_spec(f"{url}/data.txt", MEMORY_HOG))
    finally:
        await backend.close()
    assert seen.status is JobStatus.OUT_OF_MEMORY, seen.statuses
    assert seen.final.out_of_memory
    assert seen.final.exit_code == 137
    # The logs are published all the same.
    assert "algorithm.stdout.log" in {r.name for r in seen.final.results}
    assert cluster.labelled(job_id) == []


async def test_a_failing_algorithm_keeps_its_exit_code_and_its_logs(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    algorithm = "import sys\nprint('about to fail')\nprint('bad input', file=sys.stderr)\nsys.exit(3)\n"
    try:
        job_id, seen = await run_job(make_runner(backend), job_spec(f"{url}/data.txt", algorithm))
    finally:
        await backend.close()
    assert seen.status is JobStatus.ALGORITHM_FAILED, seen.statuses
    assert seen.final.exit_code == 3
    assert (cluster.results_dir / job_id / "logs/algorithm.stderr.log").read_text() == "bad input\n"
    assert b"about to fail" in seen.output and b"bad input" in seen.output
    assert cluster.labelled(job_id) == []


async def test_an_algorithm_past_its_deadline_is_ended_by_active_deadline_seconds(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    quick = replace(SMALL, max_duration_seconds=2)
    algorithm = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n"
    started = time.monotonic()
    try:
        job_id, seen = await run_job(make_runner(backend, [quick]), job_spec(f"{url}/data.txt", algorithm))
    finally:
        await backend.close()
    assert seen.status is JobStatus.ALGORITHM_TIMED_OUT, seen.statuses
    assert time.monotonic() - started < 20
    assert b"sleeping" in seen.output
    assert cluster.labelled(job_id) == []


async def test_output_over_the_disk_quota_publishes_only_the_logs(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    tiny = replace(SMALL, disk_bytes=1 * MiB)
    algorithm = "open('/data/outputs/big.bin', 'wb').write(b'0' * (3 << 20))\nprint('wrote')\n"
    try:
        job_id, seen = await run_job(make_runner(backend, [tiny]), job_spec(f"{url}/data.txt", algorithm))
    finally:
        await backend.close()
    assert seen.status is JobStatus.DISK_QUOTA_EXCEEDED, seen.statuses
    names = {r.name for r in seen.final.results}
    assert "big.bin" not in names and "algorithm.stdout.log" in names
    assert not (cluster.results_dir / job_id / "outputs").exists()
    assert cluster.labelled(job_id) == []


async def test_an_input_that_cannot_be_fetched_fails_provisioning_and_its_secret_goes(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    _, url = inputs
    backend = backend_for(cluster)
    try:
        job_id, seen = await run_job(make_runner(backend), job_spec(f"{url}/missing.txt", "print(1)"))
    finally:
        await backend.close()
    assert seen.status is JobStatus.DATA_PROVISIONING_FAILED, seen.statuses
    assert "dataset" in seen.final.status_text and url not in seen.final.status_text
    assert cluster.labelled(job_id) == []
    deleted_secrets = [
        path
        for method, path, _ in cluster.api.calls
        if method == "DELETE" and path.endswith(f"{job_id}-configure")
    ]
    assert deleted_secrets, "the configure Secret is deleted as soon as the configuration pod has ended"


async def test_a_file_url_is_refused_before_anything_is_created(cluster: Cluster) -> None:
    backend = backend_for(cluster)
    try:
        _, seen = await run_job(make_runner(backend), job_spec("file:///etc/passwd", "print(1)"))
    finally:
        await backend.close()
    assert seen.status is JobStatus.DATA_PROVISIONING_FAILED
    assert "file://" in seen.final.status_text and "/etc/passwd" not in seen.final.status_text
    assert not [c for c in cluster.api.calls if c[0] == "POST"]


async def test_an_unschedulable_pod_ends_the_job_with_the_schedulers_reason(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    """A GPU environment on a cluster without GPUs: the algorithm's pod never schedules."""
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster, start_timeout_seconds=2)
    gpu = replace(SMALL, gpus=1)
    try:
        job_id, seen = await run_job(make_runner(backend, [gpu]), job_spec(f"{url}/data.txt", "print(1)"))
    finally:
        await backend.close()
    assert seen.status is JobStatus.SYSTEM_ERROR, seen.statuses
    assert "could not be scheduled" in seen.final.status_text
    assert "Insufficient nvidia.com/gpu" in seen.final.status_text
    assert cluster.labelled(job_id) == []


async def test_an_image_that_never_pulls_ends_the_job_without_leaking_the_registry(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(
        cluster, start_timeout_seconds=2, runtime_images={"python3": "registry.example.org/private/python:3"}
    )
    try:
        job_id, seen = await run_job(make_runner(backend), job_spec(f"{url}/data.txt", "print(1)"))
    finally:
        await backend.close()
    assert seen.status is JobStatus.SYSTEM_ERROR, seen.statuses
    assert "ImagePullBackOff" in seen.final.status_text or "ErrImagePull" in seen.final.status_text
    assert "registry.example.org" not in seen.final.status_text
    assert cluster.labelled(job_id) == []


async def test_a_runtime_the_engine_lacks_fails_the_algorithm(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    try:
        job_id, seen = await run_job(make_runner(backend), job_spec(f"{url}/data.txt", "1", runtime="node"))
    finally:
        await backend.close()
    assert seen.status is JobStatus.ALGORITHM_FAILED
    assert seen.final.exit_code == 127
    assert b"no runtime 'node'" in seen.output
    assert cluster.labelled(job_id) == []


NETWORK_PROBE = """\
import json, urllib.request
url = json.load(open('/data/inputs/algoCustomData.json'))['probe']
try:
    urllib.request.urlopen(url, timeout=3)
    print('reached')
except OSError as exc:
    print('blocked', type(exc).__name__)
"""


async def test_the_algorithm_has_no_network_without_the_environments_leave(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    spec = job_spec(f"{url}/data.txt", NETWORK_PROBE)
    spec.algorithm_parameters.update({"probe": f"{url}/data.txt"})
    try:
        job_id, seen = await run_job(make_runner(backend), spec)
    finally:
        await backend.close()
    assert seen.status is JobStatus.FINISHED, seen.statuses
    assert b"blocked" in seen.output and b"reached" not in seen.output
    policies = [c for c in cluster.api.calls if c[0] == "POST" and c[1].endswith("/networkpolicies")]
    assert len(policies) == 3  # one per pod, each created before its pod
    networks = cluster.kubelet.networks
    assert networks[(cluster.namespace, f"c2d-{job_id}-configure")] == "host"
    assert networks[(cluster.namespace, f"c2d-{job_id}-algorithm")] == "none"
    assert networks[(cluster.namespace, f"c2d-{job_id}-publish")] == "none"
    assert cluster.labelled(job_id) == []


async def test_stopping_a_running_job_deletes_its_pods_and_everything_else(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    runner = make_runner(backend)
    algorithm = "import time\nprint('working', flush=True)\ntime.sleep(60)\n"
    try:
        job_id = new_job_id()
        following = asyncio.create_task(follow(start(runner, job_spec(f"{url}/data.txt", algorithm), job_id)))
        await cluster.wait_for_pod_phase(f"c2d-{job_id}-algorithm", "Running")
        started = time.monotonic()
        await runner.stop(job_id)
        seen = await following
        assert time.monotonic() - started < 10
    finally:
        await backend.close()
    assert seen.status is JobStatus.STOPPED, seen.statuses
    assert cluster.labelled(job_id) == []
    assert not (cluster.results_dir / job_id).exists()


async def test_a_410_gone_makes_the_watcher_list_again_and_the_job_carries_on(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    runner = make_runner(backend)
    algorithm = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')\n"
    try:
        job_id = new_job_id()
        following = asyncio.create_task(follow(start(runner, job_spec(f"{url}/data.txt", algorithm), job_id)))
        await cluster.wait_for_pod_phase(f"c2d-{job_id}-algorithm", "Running")
        assert backend.watcher is not None
        lists_before = backend.watcher.lists
        cluster.api.compact()  # the history the watch would resume from is gone
        seen = await following
        assert backend.watcher.lists > lists_before
    finally:
        await backend.close()
    assert seen.status is JobStatus.FINISHED, seen.statuses
    assert b"first" in seen.output and b"second" in seen.output
    assert cluster.api.gone_at, "a watch was answered 410 Gone"
    after_gone = cluster.api.calls[cluster.api.gone_at[0] :]
    lists = [p for m, p, q in after_gone if m == "GET" and p.endswith("/pods") and q.get("watch") != "true"]
    assert lists, "after 410 Gone the watcher listed the pods again"
    assert cluster.labelled(job_id) == []


async def test_pod_states_come_from_the_watch_not_from_polling(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    """Three pods run through their phases; the pods are listed only when the watcher (re)starts
    its list-then-watch, never read one by one to see how they are doing."""
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    backend = backend_for(cluster)
    start_calls = len(cluster.api.calls)
    try:
        algorithm = "import time\ntime.sleep(1)\nprint('done')\n"
        seen = await follow(start(make_runner(backend), job_spec(f"{url}/data.txt", algorithm), new_job_id()))
        assert backend.watcher is not None
        lists = backend.watcher.lists
    finally:
        await backend.close()
    assert seen.status is JobStatus.FINISHED, seen.statuses
    reads = [(m, p, q) for m, p, q in cluster.api.calls[start_calls:] if m == "GET" and "/pods" in p]
    pod_lists = [c for c in reads if c[1].endswith("/pods") and c[2].get("watch") != "true"]
    single_pod_reads = [c for c in reads if not c[1].endswith("/pods") and not c[1].endswith("/log")]
    assert len(pod_lists) == lists, "every list of the pods is the watcher's"
    assert single_pod_reads == [], "no pod is read one by one (that would be polling)"


async def test_a_pod_the_cluster_refuses_ends_the_job_as_a_system_error(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    """A ResourceQuota (or an admission webhook) refuses the algorithm's pod."""
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")

    def quota(route: Route, obj: dict[str, Any]) -> None:
        if route.kind == "Pod" and obj["metadata"]["name"].endswith("-algorithm"):
            raise ApiError(
                403, "Forbidden", f'pods "{obj["metadata"]["name"]}" is forbidden: exceeded quota: compute'
            )

    cluster.api.admission.append(quota)
    backend = backend_for(cluster)
    try:
        job_id, seen = await run_job(make_runner(backend), job_spec(f"{url}/data.txt", "print(1)"))
    finally:
        await backend.close()
    assert seen.status is JobStatus.SYSTEM_ERROR, seen.statuses
    assert seen.final.status_text == "the cluster refused creating the job's Pod (HTTP 403 Forbidden)"
    assert cluster.labelled(job_id) == []


async def test_a_clean_up_that_fails_half_way_keeps_the_anchor_until_the_sweep_finishes_it(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    """The API server fails the deletion of the job's volume: the anchor stays (it is what the
    sweep finds jobs by), and once the server is well again the same engine's sweep deletes the
    rest, leaving the job's published results alone."""
    folder, url = inputs
    data = b"1\n2\n"
    (folder / "data.txt").write_bytes(data)
    failing = True
    refused: list[str] = []

    def etcd_timeout(verb: str, route: Route) -> None:
        if failing and verb == "deletecollection" and route.plural == "persistentvolumeclaims":
            refused.append(verb)
            raise ApiError(500, "InternalError", "etcdserver: request timed out")

    cluster.api.faults.append(etcd_timeout)
    backend = backend_for(cluster, adopt_grace_seconds=1)
    try:
        job_id, seen = await run_job(make_runner(backend), job_spec(f"{url}/data.txt", SUMMARIZE, data=data))
        assert seen.status is JobStatus.FINISHED, seen.statuses
        assert refused
        # What could be deleted is gone; the volume and the anchor are left, and found.
        assert sorted(cluster.labelled(job_id)) == [
            ("configmaps", f"c2d-{job_id}"),
            ("persistentvolumeclaims", f"c2d-{job_id}-data"),
        ]
        assert await backend.orphans() == [job_id]
        failing = False
        await cluster.wait_until(lambda: not cluster.labelled(job_id), 15)
    finally:
        await backend.close()
    assert (cluster.results_dir / job_id / "outputs/nested/count.txt").read_text() == "2"
