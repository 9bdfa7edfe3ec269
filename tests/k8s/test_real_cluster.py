"""The Kubernetes backend on a real cluster (kind, k3s, minikube or a cloud cluster). Opt-in, and
explicitly so: a KUBECONFIG alone is not enough (a developer's may point at a cluster that
matters, and `make test` must never create objects there). They run only with
C2D_TEST_K8S_CLUSTER=1, on the cluster of $KUBECONFIG (else ~/.kube/config):

    kind create cluster                                   # or any cluster; its kubeconfig
    docker build -f deploy/podtools.Dockerfile -t c2d-podtools:test .
    kind load docker-image c2d-podtools:test              # k3s: k3s ctr images import; or push it
    C2D_TEST_K8S_CLUSTER=1 KUBECONFIG=$HOME/.kube/config .venv/bin/pytest -m k8s_cluster tests/k8s -v

Each test works in a namespace of its own (created and deleted; the kubeconfig's user needs the
right to), enforcing Pod Security "restricted". Inputs come from the internet
(C2D_TEST_DATASET_URL, default https://example.com/), so the cluster needs egress for the
configuration pods; the algorithm image is python:3.11-slim unless C2D_TEST_RUNTIME_IMAGE says
otherwise. Set C2D_TEST_NETWORK_POLICIES=1 where the network plugin enforces NetworkPolicy
(Calico, Cilium, k3s) to check the algorithm's lack of network too; and C2D_TEST_OOM=1 where the
kubelet reports OOMKilled (cgroup v2 nodes do).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes.aio import client

from c2d_common.ids import new_job_id
from c2d_common.status import JobStatus
from engine_svc.infra.kubernetes import KubernetesBackend, KubernetesSettings
from engine_svc.infra.kubernetes.backend import connect
from tests.k8s.jobs import SMALL, follow, job_spec, make_runner, run_job, start

pytestmark = [
    pytest.mark.k8s_cluster,
    pytest.mark.skipif(
        os.environ.get("C2D_TEST_K8S_CLUSTER") != "1",
        reason="opt-in: set C2D_TEST_K8S_CLUSTER=1 to create objects on the cluster of $KUBECONFIG",
    ),
]

DATASET_URL = os.environ.get("C2D_TEST_DATASET_URL", "https://example.com/")
# Only for a dataset served on the cluster's own network (as tests/k8s/fake_cluster.py's is).
PRIVATE_INPUTS = bool(os.environ.get("C2D_TEST_ALLOW_PRIVATE_INPUTS"))
PODTOOLS_IMAGE = os.environ.get("C2D_TEST_PODTOOLS_IMAGE", "c2d-podtools:test")
RUNTIME_IMAGE = os.environ.get("C2D_TEST_RUNTIME_IMAGE", "python:3.11-slim")
ENVIRONMENT = replace(SMALL, max_duration_seconds=120)
KINDS = ("pods", "persistentvolumeclaims", "secrets", "configmaps", "networkpolicies")

ANSWER = """\
import json, os
data = open('/data/inputs/' + json.loads(os.environ['DIDS'])[0] + '/0', 'rb').read()
print('bytes:', len(data))
open('/data/outputs/answer.txt', 'w').write('42')
"""


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    name = f"c2d-test-{uuid.uuid4().hex[:8]}"
    settings = KubernetesSettings(namespace=name)
    async with await connect(settings) as api:
        core = client.CoreV1Api(api)
        await core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(
                    name=name, labels={"pod-security.kubernetes.io/enforce": "restricted"}
                )
            )
        )
        await core.create_namespaced_persistent_volume_claim(
            name,
            client.V1PersistentVolumeClaim(
                metadata=client.V1ObjectMeta(name="c2d-results"),
                spec=client.V1PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
                ),
            ),
        )
        try:
            yield name
        finally:
            with contextlib.suppress(Exception):
                await core.delete_namespace(name)


def backend(namespace: str, tmp_path: Path, **overrides: object) -> KubernetesBackend:
    values: dict[str, object] = {
        "namespace": namespace,
        "engine_id": "engine-test",
        "podtools_image": PODTOOLS_IMAGE,
        "runtime_images": {"python3": RUNTIME_IMAGE},
        "results_claim": "c2d-results",
        "start_timeout_seconds": 180,
    }
    values.update(overrides)
    return KubernetesBackend(
        KubernetesSettings(**values),  # type: ignore[arg-type]
        results_dir=tmp_path / "results",
        allow_private_input_hosts=PRIVATE_INPUTS,
    )


async def left_in(namespace: str, job_id: str) -> list[str]:
    async with await connect(KubernetesSettings(namespace=namespace)) as api:
        core, networking = client.CoreV1Api(api), client.NetworkingV1Api(api)
        selector = f"c2d.io/job-id={job_id}"
        found = []
        for listed in (
            await core.list_namespaced_pod(namespace, label_selector=selector),
            await core.list_namespaced_persistent_volume_claim(namespace, label_selector=selector),
            await core.list_namespaced_secret(namespace, label_selector=selector),
            await core.list_namespaced_config_map(namespace, label_selector=selector),
            await networking.list_namespaced_network_policy(namespace, label_selector=selector),
        ):
            found += [
                str(item.metadata.name)
                for item in listed.items
                if item.metadata is not None and not item.metadata.deletion_timestamp
            ]
        return found


async def test_a_job_runs_and_publishes_on_a_real_cluster(namespace: str, tmp_path: Path) -> None:
    engine = backend(namespace, tmp_path)
    try:
        job_id, seen = await run_job(
            make_runner(engine, [ENVIRONMENT], configure_timeout_seconds=300, publish_timeout_seconds=300),
            job_spec(DATASET_URL, ANSWER),
            timeout=900,
        )
    finally:
        await engine.close()
    assert seen.status is JobStatus.FINISHED, seen.statuses
    assert b"bytes:" in seen.output
    answer = next(r for r in seen.final.results if r.name == "answer.txt")
    assert answer.sha256 == hashlib.sha256(b"42").hexdigest() and answer.size == 2
    assert await left_in(namespace, job_id) == []


async def test_a_real_deadline_ends_the_algorithm(namespace: str, tmp_path: Path) -> None:
    engine = backend(namespace, tmp_path)
    quick = replace(ENVIRONMENT, max_duration_seconds=10)
    try:
        job_id, seen = await run_job(
            make_runner(engine, [quick], configure_timeout_seconds=300),
            job_spec(DATASET_URL, "import time\ntime.sleep(600)\n"),
            timeout=900,
        )
    finally:
        await engine.close()
    assert seen.status is JobStatus.ALGORITHM_TIMED_OUT, seen.statuses
    assert await left_in(namespace, job_id) == []


@pytest.mark.skipif(
    not os.environ.get("C2D_TEST_OOM"), reason="set C2D_TEST_OOM=1 where OOMKilled is reported"
)
async def test_a_real_oom_kill(namespace: str, tmp_path: Path) -> None:
    engine = backend(namespace, tmp_path)
    tight = replace(ENVIRONMENT, memory_bytes=64 * 1024 * 1024)
    hog = "hoard = []\nwhile True:\n    hoard.append(bytearray(16 << 20))\n"
    try:
        _, seen = await run_job(
            make_runner(engine, [tight], configure_timeout_seconds=300),
            job_spec(DATASET_URL, hog),
            timeout=900,
        )
    finally:
        await engine.close()
    assert seen.status is JobStatus.OUT_OF_MEMORY and seen.final.out_of_memory


@pytest.mark.skipif(
    not os.environ.get("C2D_TEST_NETWORK_POLICIES"),
    reason="set C2D_TEST_NETWORK_POLICIES=1 where they are enforced",
)
async def test_the_algorithm_has_no_network_on_a_real_cluster(namespace: str, tmp_path: Path) -> None:
    engine = backend(namespace, tmp_path)
    probe = (
        "import urllib.request\n"
        "try:\n"
        f"    urllib.request.urlopen({DATASET_URL!r}, timeout=10)\n"
        "    print('reached')\n"
        "except OSError as exc:\n"
        "    print('blocked', type(exc).__name__)\n"
    )
    try:
        _, seen = await run_job(
            make_runner(engine, [ENVIRONMENT], configure_timeout_seconds=300),
            job_spec(DATASET_URL, probe),
            timeout=900,
        )
    finally:
        await engine.close()
    assert seen.status is JobStatus.FINISHED
    assert b"blocked" in seen.output and b"reached" not in seen.output


async def test_a_restarted_engine_carries_the_job_on_on_a_real_cluster(
    namespace: str, tmp_path: Path
) -> None:
    slow = "import time\nprint('working', flush=True)\ntime.sleep(20)\n"
    slow += "open('/data/outputs/done', 'w').write('1')\n"
    spec = job_spec(DATASET_URL, slow)
    job_id = new_job_id()
    first = backend(namespace, tmp_path)
    run = start(make_runner(first, [ENVIRONMENT], configure_timeout_seconds=300), spec, job_id)
    # Wait until the algorithm's pod runs, then let the engine go as SIGTERM does.
    async with asyncio.timeout(600):
        while True:
            await asyncio.sleep(1)
            pod = first.watcher.get(f"c2d-{job_id}-algorithm") if first.watcher else None
            if pod is not None and pod.status is not None and pod.status.phase == "Running":
                break
    first.detach()
    assert run.task is not None
    run.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run.task
    await first.close()

    second = backend(namespace, tmp_path)
    try:
        seen = await follow(
            start(make_runner(second, [ENVIRONMENT], configure_timeout_seconds=300), spec, job_id),
            timeout=900,
        )
    finally:
        await second.close()
    assert seen.status is JobStatus.FINISHED, seen.statuses
    assert "done" in {r.name for r in seen.final.results}
    assert await left_in(namespace, job_id) == []
