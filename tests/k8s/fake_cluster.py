"""A stand-in cluster in a process of its own: the test API server and kubelet, a dataset served
over HTTP, and a kubeconfig for them. It lets the opt-in real-cluster tests (and anyone curious
about the backend) run on a machine without Kubernetes:

    .venv/bin/python -m tests.k8s.fake_cluster /tmp/fake-cluster &
    C2D_TEST_K8S_CLUSTER=1 KUBECONFIG=/tmp/fake-cluster/kubeconfig C2D_TEST_ALLOW_PRIVATE_INPUTS=1 \\
      C2D_TEST_DATASET_URL=$(cat /tmp/fake-cluster/dataset-url) C2D_TEST_OOM=1 C2D_TEST_NETWORK_POLICIES=1 \\
      .venv/bin/pytest -m k8s_cluster tests/k8s

It runs until SIGTERM or SIGINT. Without Pod Security or RBAC of its own: the tests' namespaces
label themselves, and the kubeconfig's user may do anything, as a cluster admin's may.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.k8s.cluster import running_cluster
from tests.k8s.jobs import serving


async def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "dataset.txt").write_text("1\n2\n3\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with serving(root / "data") as url:
        async with running_cluster(root / "cluster") as cluster:
            cluster.api.rbac = None  # a cluster admin's kubeconfig
            (root / "dataset-url").write_text(f"{url}/dataset.txt")
            (root / "kubeconfig").write_text(cluster.kubeconfig.read_text())
            print(f"fake cluster at {cluster.url}; KUBECONFIG={root / 'kubeconfig'}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "fake-cluster").absolute()))
