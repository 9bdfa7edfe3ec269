"""The Kubernetes backend: each phase of a job runs as a pod (see backend.py, specs.py)."""

from engine_svc.infra.kubernetes.backend import KubernetesBackend
from engine_svc.infra.kubernetes.settings import KubernetesSettings

__all__ = ["KubernetesBackend", "KubernetesSettings"]
