"""The engine's Role (deploy/kubernetes/base/engine-rbac.yaml) grants exactly what the backend
uses: the test API server enforces the Role in every test (a right missing fails them, see
conftest.py) and records every right a request used; here the backend goes through each path
that needs a right of its own, and what it used must be all the Role grants."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from c2d_common.ids import new_job_id
from c2d_common.status import JobStatus
from tests.k8s.apiserver import ApiError, Route
from tests.k8s.cluster import Cluster, engine_role_rules
from tests.k8s.conftest import needs_bwrap
from tests.k8s.jobs import follow, job_spec, make_runner, start
from tests.k8s.kubelet import PYTHON_IMAGE
from tests.k8s.test_backend_lifecycle import backend_for
from tests.k8s.test_engine_restart import SLOW_ONCE, interrupt

pytestmark = [pytest.mark.sandbox, needs_bwrap]

SLEEPER = "import time\nprint('working', flush=True)\ntime.sleep(30)\n"


def granted() -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in engine_role_rules()
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def test_the_engines_role_grants_exactly_what_the_backend_uses(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    dataset = f"{url}/data.txt"
    carried_on, unpullable, pulled_away = new_job_id(), new_job_id(), new_job_id()

    # A job the engine leaves mid-run (SIGTERM) ...
    first = backend_for(cluster)
    run = start(make_runner(first), job_spec(dataset, SLOW_ONCE), carried_on)
    await cluster.wait_for_pod_phase(f"c2d-{carried_on}-algorithm", "Running")
    assert run.task is not None
    await interrupt(first, run.task)
    await first.close()

    # ... and the engine that comes back (it reads the job's anchor back for its uid) carries it
    # on, while a job's image never pulls (its pod is deleted by name) and someone deletes a
    # third job's pod (the engine reads it to be sure). The first clean-up fails half-way, and
    # the sweep (which lists anchors) finishes it.
    failed_once: list[str] = []

    def fail_once(verb: str, route: Route) -> None:
        if not failed_once and verb == "deletecollection" and route.plural == "networkpolicies":
            failed_once.append(verb)
            raise ApiError(500, "InternalError", "etcdserver: request timed out")

    cluster.api.faults.append(fail_once)
    second = backend_for(
        cluster,
        adopt_grace_seconds=1,
        start_timeout_seconds=3,
        runtime_images={"python3": PYTHON_IMAGE, "private": "registry.example.org/python:3"},
    )
    try:
        runner = make_runner(second)
        followed = [
            asyncio.create_task(follow(start(runner, job_spec(dataset, SLOW_ONCE), carried_on))),
            asyncio.create_task(follow(start(runner, job_spec(dataset, "1", runtime="private"), unpullable))),
            asyncio.create_task(follow(start(runner, job_spec(dataset, SLEEPER), pulled_away))),
        ]
        await cluster.wait_for_pod_phase(f"c2d-{pulled_away}-algorithm", "Running", 30)
        cluster.api.remove("pods", cluster.namespace, f"c2d-{pulled_away}-algorithm")
        seen = await asyncio.gather(*followed)
        await cluster.wait_until(lambda: not any(map(cluster.labelled, (carried_on, unpullable))), 15)
    finally:
        await second.close()

    assert [s.status for s in seen] == [
        JobStatus.FINISHED,
        JobStatus.SYSTEM_ERROR,
        JobStatus.SYSTEM_ERROR,
    ], [s.final for s in seen]
    assert "ImagePull" in seen[1].final.status_text
    assert "deleted by someone else" in seen[2].final.status_text
    assert failed_once
    assert cluster.labelled(pulled_away) == []
    assert cluster.api.rbac_denied == []
    # Neither more nor less: a right the backend stops using goes from the Role too.
    assert cluster.api.rbac_used == granted()
    # A Secret's data never reaches the engine: no get, list or watch, and no deletecollection
    # (a real API server answers it with the deleted objects).
    assert {verb for (_, resource, verb) in granted() if resource == "secrets"} == {"create", "delete"}
