from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.k8s.cluster import Cluster, running_cluster
from tests.k8s.jobs import serving

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path / "cluster") as running:
        yield running
    # Whatever the test, the engine never needed a right that deploy/'s Role does not give it.
    assert running.api.rbac_denied == [], "requests the engine's Role refuses"


@pytest.fixture
def inputs(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its URL."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    with serving(folder) as url:
        yield folder, url
