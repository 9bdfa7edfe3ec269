"""deploy/: every manifest validates against the Kubernetes OpenAPI schemas, as written and as
kustomize renders each overlay; the suite's own pods are as locked down as the jobs'; probes use
the gRPC health service; the engine's Role holds in the jobs' namespace only and reads no Secret;
the images' build context leaves out the bulk but nothing the Dockerfiles copy."""

from __future__ import annotations

import re
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

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
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
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}
    # The engine is ready once it can use the cluster (its service's health), alive as a process.
    ready = (
        {"port": port, "service": "c2d.engine.v1.EngineService"} if name == "c2d-engine" else {"port": port}
    )
    assert container["readinessProbe"]["grpc"] == ready


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


def test_the_engines_role_is_namespaced_and_reads_no_secret() -> None:
    objects = rendered(OVERLAYS[0])
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = next(o for o in objects if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "c2d-jobs"
    assert role["rules"] == engine_role_rules()
    # That it grants exactly what the backend uses, no more and no less, is measured by running
    # the backend under it: test_engine_rights.py. Whatever that finds, no right to read a
    # Secret: deletecollection answers the deleted objects, data included.
    secret_verbs = {
        verb for rule in role["rules"] if "secrets" in rule["resources"] for verb in rule["verbs"]
    }
    assert secret_verbs == {"create", "delete"}


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """The root's .dockerignore as (excludes, pattern) rules, in order; the last that matches a
    path (or one of its parents) decides, as Docker's builder does."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().lstrip("/").removeprefix("./").rstrip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part.startswith("**"):
                regex += "(.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        rules.append((excludes, re.compile(regex)))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return excluded


def copied_sources(dockerfile: Path) -> list[str]:
    """What a Dockerfile COPYs from the build context."""
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        arguments = words[1:]
        if any(a.startswith("--from") for a in arguments):
            continue
        sources += [a.rstrip("/") for a in arguments if not a.startswith("--")][:-1]
    return sources


def test_the_docker_context_leaves_out_the_bulk_and_keeps_what_the_dockerfiles_copy() -> None:
    rules = dockerignore_patterns()
    for bulk in (
        ".git",
        ".venv",
        "node_modules",
        "c2d-state",
        "c2d_suite.egg-info",
        "engine_svc/__pycache__",
    ):
        assert dockerignored(bulk, rules), bulk
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for dockerfile in (DEPLOY / "Dockerfile", DEPLOY / "podtools.Dockerfile"):
        sources = copied_sources(dockerfile)
        assert sources, dockerfile
        for source in sources:
            files = [f for f in tracked if f == source or f.startswith(source + "/")]
            assert files, f"{dockerfile.name} copies {source}, which the repository lacks"
            excluded = [f for f in files if dockerignored(f, rules)]
            assert not excluded, f"{dockerfile.name} copies {source}, but .dockerignore leaves out {excluded}"


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
