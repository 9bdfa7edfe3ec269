"""deploy/: every manifest validates against the Kubernetes OpenAPI schemas, as written and as
kustomize renders each overlay; the suite's own pods are as locked down as the jobs'; probes use
the gRPC health service; the engine's rights stay those its Role lists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.k8s.apiserver import restricted_violations
from tests.k8s.cluster import engine_role_rules
from tests.k8s.schemas import KUBERNETES_VERSION, LATEST_VERSION

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
MANIFESTS = sorted(p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def rendered(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (kustomize is built into it)")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return documents(result.stdout)


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "StatefulSet")}


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, LATEST_VERSION])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_every_manifest_validates(path: Path, version: str) -> None:
    found = documents(path.read_text())
    assert found, f"{path} holds no object"
    for document in found:
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_to_valid_objects(overlay: str) -> None:
    objects = rendered(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "StatefulSet", "Service", "ConfigMap", "Role", "RoleBinding"} <= kinds
    assert {"PersistentVolume", "PersistentVolumeClaim", "NetworkPolicy", "ServiceAccount", "Secret"} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_suites_pods_meet_pod_security_restricted_with_a_read_only_root() -> None:
    objects = rendered(OVERLAYS[0])
    found = workloads(objects)
    assert set(found) == {"c2d-provider", "c2d-operator", "c2d-engine", "c2d-postgres"}
    for name, workload in found.items():
        pod = {"metadata": {"name": name}, "spec": workload["spec"]["template"]["spec"]}
        assert restricted_violations(pod) == [], name
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert "memory" in container["resources"]["limits"]
        # Only the engine talks to the Kubernetes API.
        assert pod["spec"]["automountServiceAccountToken"] is (name == "c2d-engine")


@pytest.mark.parametrize(
    ("name", "port"), [("c2d-provider", 50051), ("c2d-operator", 50052), ("c2d-engine", 50053)]
)
def test_probes_ask_the_grpc_health_service(name: str, port: int) -> None:
    container = workloads(rendered(OVERLAYS[0]))[name]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}


def test_the_engine_runs_the_kubernetes_backend_under_a_stable_name() -> None:
    objects = rendered(OVERLAYS[0])
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "c2d-engine")
    assert config["data"]["C2D_BACKEND"] == "kubernetes"
    assert config["data"]["C2D_K8S_NAMESPACE"] == "c2d-jobs"
    engine = workloads(objects)["c2d-engine"]
    assert engine["kind"] == "StatefulSet"
    env = {e["name"]: e for e in engine["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["C2D_K8S_ENGINE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    operator = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "c2d-operator"
    )
    assert operator["data"]["C2D_ENGINE_ADDRESS"].startswith("c2d-engine-0.c2d-engine.")
    # The engine and the provider see the result store at the same path.
    provider = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "c2d-provider"
    )
    assert provider["data"]["C2D_RESULTS_DIR"] == config["data"]["C2D_RESULTS_DIR"]


def test_the_engines_role_is_namespaced_and_grants_only_what_the_backend_uses() -> None:
    objects = rendered(OVERLAYS[0])
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = next(o for o in objects if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "c2d-jobs"
    granted = {
        (group, resource, verb)
        for rule in engine_role_rules()
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # The lifecycle tests run under exactly this Role (tests/k8s/cluster.py); a right added here
    # must be one the backend needs, and this list says so.
    assert granted == {
        ("", "pods", "create"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "delete"),
        ("", "pods", "deletecollection"),
        ("", "pods/log", "get"),
        ("", "configmaps", "create"),
        ("", "configmaps", "get"),
        ("", "configmaps", "list"),
        ("", "configmaps", "deletecollection"),
        ("", "persistentvolumeclaims", "create"),
        ("", "persistentvolumeclaims", "get"),
        ("", "persistentvolumeclaims", "deletecollection"),
        ("", "secrets", "create"),
        ("", "secrets", "delete"),
        ("", "secrets", "deletecollection"),
        ("networking.k8s.io", "networkpolicies", "create"),
        ("networking.k8s.io", "networkpolicies", "get"),
        ("networking.k8s.io", "networkpolicies", "deletecollection"),
    }
    assert not [
        verb for (_, resource, verb) in granted if resource == "secrets" and verb in ("get", "list", "watch")
    ]


def test_the_dockerfiles_build_what_the_manifests_run() -> None:
    services = (DEPLOY / "Dockerfile").read_text()
    for target, module in [
        ("provider", "provider_svc"),
        ("operator", "operator_svc"),
        ("engine", "engine_svc"),
    ]:
        assert f"AS {target}" in services
        assert f'"-m", "{module}"' in services
    assert "USER 65534:65534" in services
    podtools = (DEPLOY / "podtools.Dockerfile").read_text()
    assert "COPY podtools /opt/c2d/podtools" in podtools and "USER 65534:65534" in podtools
