"""The Kubernetes backend's whole life cycle against the emulated API server (real HTTP, the
official client's REST and watch calls) and the test kubelet (each pod's commands really run in
the local sandbox): inputs really fetched, the algorithm really run, results really published."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2d_common.status import JobStatus
from engine_svc.infra.kubernetes import KubernetesBackend
from tests.k8s.cluster import Cluster
from tests.k8s.conftest import needs_bwrap
from tests.k8s.jobs import job_spec, make_runner, run_job

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
