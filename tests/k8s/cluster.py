"""A test cluster: the emulated API server on a real port, a kubeconfig pointing at it, a jobs
namespace that enforces Pod Security "restricted", the shared result store's claim, and a
kubelet that runs the pods."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import yaml  # type: ignore[import-untyped]

from engine_svc.infra.kubernetes.settings import KubernetesSettings
from tests.k8s.apiserver import ApiServer
from tests.k8s.kubelet import PODTOOLS_IMAGE, PYTHON_IMAGE, Kubelet, Node

NAMESPACE = "c2d-jobs"
RESULTS_CLAIM = "c2d-results"
ENGINE_ROLE = Path(__file__).resolve().parents[2] / "deploy/kubernetes/base/engine-rbac.yaml"


def engine_role_rules() -> list[dict[str, Any]]:
    """The rules of the engine's Role as deploy/ installs it."""
    for document in yaml.safe_load_all(ENGINE_ROLE.read_text()):
        if document and document["kind"] == "Role":
            return list(document["rules"])
    raise AssertionError(f"no Role in {ENGINE_ROLE}")


@dataclass
class Cluster:
    api: ApiServer
    kubelet: Kubelet
    url: str
    kubeconfig: Path
    namespace: str
    results_dir: Path
    extra: dict[str, object] = field(default_factory=dict)

    def settings(self, **overrides: object) -> KubernetesSettings:
        """Backend settings for this cluster, with short limits so that hostile cases end fast."""
        values: dict[str, object] = {
            "namespace": self.namespace,
            "engine_id": "engine-test",
            "kubeconfig": str(self.kubeconfig),
            "podtools_image": PODTOOLS_IMAGE,
            "runtime_images": {"python3": PYTHON_IMAGE},
            "results_claim": RESULTS_CLAIM,
            "start_timeout_seconds": 20,
            "adopt_grace_seconds": 300,
            "watch_timeout_seconds": 30,
        }
        values.update(overrides)
        return KubernetesSettings(**values)  # type: ignore[arg-type]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        """Until condition() holds, tested again after every change the API server makes."""
        changes = self.api.subscribe()
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    await changes.get()
        finally:
            self.api.unsubscribe(changes)

    async def wait_for_pod_phase(self, name: str, phase: str, timeout: float = 20) -> None:
        def reached() -> bool:
            pod = self.api.read("pods", self.namespace, name)
            return pod is not None and (pod.get("status") or {}).get("phase") == phase

        await self.wait_until(reached, timeout)

    def labelled(self, job_id: str) -> list[tuple[str, str]]:
        """Every object left in the cluster that carries the job's id: (plural, name)."""
        found = []
        for plural in ("pods", "persistentvolumeclaims", "secrets", "configmaps", "networkpolicies"):
            for obj in self.api.select(plural, self.namespace, f"c2d.io/job-id={job_id}"):
                found.append((plural, obj["metadata"]["name"]))
        return found


def write_kubeconfig(path: Path, url: str, namespace: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
users:
- name: test
  user:
    token: test-token
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: {namespace}
current-context: test
"""
    )
    return path


@contextlib.asynccontextmanager
async def running_cluster(
    root: Path, results_dir: Path | None = None, node: Node | None = None, namespace: str = NAMESPACE
) -> AsyncIterator[Cluster]:
    results_dir = results_dir or root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    async with ApiServer() as api, kmock.Server(api) as server:
        url = str(server.url).rstrip("/")
        # The engine has exactly the rights deploy/ gives it, in the jobs' namespace only.
        api.rbac = (namespace, engine_role_rules())
        api.write(
            "namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {
                        "kubernetes.io/metadata.name": namespace,
                        "pod-security.kubernetes.io/enforce": "restricted",
                    },
                },
                "status": {"phase": "Active"},
            },
        )
        api.write(
            "persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": RESULTS_CLAIM, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "10Gi"}},
                    "storageClassName": "standard",
                },
                "status": {"phase": "Bound"},
            },
        )
        kubeconfig = write_kubeconfig(root / "kubeconfig", url, namespace)
        kubelet = Kubelet(
            api, root / "kubelet", node=node, claim_paths={(namespace, RESULTS_CLAIM): results_dir}
        )
        async with kubelet:
            yield Cluster(api, kubelet, url, kubeconfig, namespace, results_dir)
