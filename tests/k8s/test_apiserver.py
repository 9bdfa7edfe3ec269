"""The API server fixture answers the official client as a real API server would: the backend's
tests are only as good as this."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import kmock
import pytest
from kubernetes.aio import client, config, watch
from kubernetes.aio.client.exceptions import ApiException

from tests.k8s.apiserver import ApiServer
from tests.k8s.cluster import write_kubeconfig
from tests.k8s.schemas import KUBERNETES_VERSION

NS = "jobs"


@pytest.fixture
async def served() -> AsyncIterator[tuple[ApiServer, str]]:
    async with ApiServer() as api, kmock.Server(api) as server:
        api.write("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield api, str(server.url).rstrip("/")


@pytest.fixture
async def core(served: tuple[ApiServer, str], tmp_path: Path) -> AsyncIterator[client.CoreV1Api]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(write_kubeconfig(tmp_path / "kubeconfig", served[1], NS)),
        client_configuration=configuration,
    )
    async with client.ApiClient(configuration) as api:
        yield client.CoreV1Api(api)


async def list_version(core: client.CoreV1Api) -> str:
    listed = await core.list_namespaced_config_map(NS)
    assert listed.metadata is not None and listed.metadata.resource_version
    return listed.metadata.resource_version


def config_map(name: str, **labels: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels or None), data={"k": "v"})


async def test_create_answers_201_with_the_servers_metadata(core: client.CoreV1Api) -> None:
    response = await core.create_namespaced_config_map_with_http_info(NS, config_map("a"))
    assert response.status_code == 201
    meta = response.data.metadata
    assert meta is not None
    assert meta.namespace == NS and meta.uid and meta.resource_version and meta.creation_timestamp
    with pytest.raises(ApiException) as conflict:
        await core.create_namespaced_config_map(NS, config_map("a"))
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as missing:
        await core.create_namespaced_config_map("nowhere", config_map("a"))
    assert missing.value.status == 404
    with pytest.raises(ApiException) as unknown:
        await core.read_namespaced_config_map("b", NS)
    assert unknown.value.status == 404


async def test_version(served: tuple[ApiServer, str], core: client.CoreV1Api) -> None:
    info = await client.VersionApi(core.api_client).get_code()
    assert info.git_version.startswith(f"v{KUBERNETES_VERSION}")


async def test_label_selectors(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map(NS, config_map("a", job="1", phase="x"))
    await core.create_namespaced_config_map(NS, config_map("b", job="2"))
    await core.create_namespaced_config_map(NS, config_map("c"))

    async def names(selector: str) -> list[str]:
        listed = await core.list_namespaced_config_map(NS, label_selector=selector)
        return [str(item.metadata.name) for item in listed.items if item.metadata]

    assert await names("job=1") == ["a"]
    assert await names("job!=1") == ["b", "c"]
    assert await names("job") == ["a", "b"]
    assert await names("!job") == ["c"]
    assert await names("job in (1, 2),phase") == ["a"]
    assert await names("job notin (1)") == ["b", "c"]
    await core.delete_collection_namespaced_config_map(NS, label_selector="job")
    assert await names("") == ["c"]


async def test_a_watch_resumes_from_its_resource_version_and_expires_with_410(
    served: tuple[ApiServer, str], core: client.CoreV1Api
) -> None:
    api = served[0]
    await core.create_namespaced_config_map(NS, config_map("before"))
    version = await list_version(core)
    await core.create_namespaced_config_map(NS, config_map("after", job="1"))
    await core.delete_namespaced_config_map("before", NS)

    async def events(from_version: str) -> list[tuple[str, str]]:
        seen = []
        async with watch.Watch().stream(
            core.list_namespaced_config_map, NS, resource_version=from_version, timeout_seconds=1
        ) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].metadata.name))
        return seen

    # Only what happened after the listed version, in order; the initial state is not repeated.
    assert await events(version) == [("ADDED", "after"), ("DELETED", "before")]
    api.compact()
    with pytest.raises(ApiException) as gone:
        await events(version)
    assert gone.value.status == 410
    # A fresh list gives a version to watch from again.
    assert await events(await list_version(core)) == []


async def test_a_live_watch_sees_changes_and_ends_when_compacted(
    served: tuple[ApiServer, str], core: client.CoreV1Api
) -> None:
    api = served[0]
    version = await list_version(core)
    seen: list[str] = []

    async def follow() -> None:
        async with watch.Watch().stream(
            core.list_namespaced_config_map,
            NS,
            label_selector="job=1",
            resource_version=version,
            timeout_seconds=30,
        ) as stream:
            async for event in stream:
                seen.append(event["object"].metadata.name)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    await core.create_namespaced_config_map(NS, config_map("other"))
    await core.create_namespaced_config_map(NS, config_map("mine", job="1"))
    await asyncio.sleep(0.1)
    api.compact()
    await asyncio.wait_for(task, 5)
    assert seen == ["mine"]


async def test_pod_security_admission_refuses_a_privileged_pod(
    served: tuple[ApiServer, str], core: client.CoreV1Api
) -> None:
    api = served[0]
    namespace = api.read("namespaces", "", NS)
    assert namespace is not None
    namespace["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "restricted"}
    api.write("namespaces", namespace)
    pod = client.V1Pod.from_dict(
        {
            "metadata": {"name": "rooty"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]
            },
        }
    )
    assert pod is not None
    with pytest.raises(ApiException) as refused:
        await core.create_namespaced_pod(NS, pod)
    assert refused.value.status == 403
    assert "privileged" in str(refused.value.body) and "runAsNonRoot" in str(refused.value.body)


async def test_an_object_the_schema_rejects_is_422(served: tuple[ApiServer, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "typo"},
        "dataa": {"k": "v"},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{served[1]}/api/v1/namespaces/{NS}/configmaps", json=body) as response,
    ):
        assert response.status == 422
        status = await response.json()
    assert status["kind"] == "Status" and "dataa" in status["message"]


async def test_the_log_of_a_container_not_started_is_400(
    served: tuple[ApiServer, str], core: client.CoreV1Api
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    served[0].write("pods", pod)
    with pytest.raises(ApiException) as waiting:
        await core.read_namespaced_pod_log("p", NS)
    assert waiting.value.status == 400 and "waiting to start" in str(waiting.value.body)
