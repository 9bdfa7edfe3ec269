"""GetResult's reads from the local result store when the file is not what it should be: each
failure answers a documented status with a message (docs/storage.md, "To the consumer"), never
INTERNAL, and never names the path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from c2d_common.errors import FailedPrecondition, Unavailable
from c2d_common.storage import StorageSettings
from provider_svc.infra.result_store import ResultStore

ROOT = Path(__file__).resolve().parents[2]


async def _read_all(store: ResultStore, location: str) -> bytes:
    return b"".join([data async for _, data in store.read(location, 0)])


async def test_a_folder_where_a_result_file_should_be_is_failed_precondition(tmp_path: Path) -> None:
    (tmp_path / "job" / "outputs" / "x").mkdir(parents=True)
    store = ResultStore(tmp_path, StorageSettings())
    with pytest.raises(FailedPrecondition, match="is not a file") as raised:
        await _read_all(store, (tmp_path / "job" / "outputs" / "x").as_uri())
    assert str(tmp_path) not in str(raised.value)


async def test_a_disk_that_fails_mid_read_is_unavailable() -> None:
    """/proc/<pid>/mem opens and then answers EIO at address 0: a real read error, as a failing disk
    or a stale network mount gives."""
    store = ResultStore(Path(f"/proc/{os.getpid()}"), StorageSettings())
    with pytest.raises(Unavailable, match=r"the result store cannot be read \(EIO\); try again"):
        await _read_all(store, f"file:///proc/{os.getpid()}/mem")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare is not installed")
def test_a_file_the_provider_may_not_read_is_failed_precondition(tmp_path: Path) -> None:
    """Read by a process without the capabilities to bypass permissions (a user namespace of its
    own: even a provider running as root here is then held to the file's mode)."""
    folder = tmp_path / "results"
    (folder / "job" / "outputs").mkdir(parents=True)
    locked = folder / "job" / "outputs" / "locked.txt"
    locked.write_text("unreadable")
    locked.chmod(0)
    for path in (tmp_path, folder, folder / "job", folder / "job" / "outputs"):
        path.chmod(0o755)
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from c2d_common.storage import StorageSettings
        from provider_svc.infra.result_store import ResultStore

        async def main():
            store = ResultStore(Path({str(folder)!r}), StorageSettings())
            try:
                async for _ in store.read({locked.as_uri()!r}, 0):
                    pass
            except Exception as exc:
                print(type(exc).__name__, getattr(exc, "code", ""), exc)

        asyncio.run(main())
        """
    )
    completed = subprocess.run(
        ["unshare", "--user", sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0 and "unshare" in completed.stderr:
        pytest.skip(f"user namespaces are not available: {completed.stderr.strip()}")
    assert completed.stdout.strip() == (
        "FailedPrecondition StatusCode.FAILED_PRECONDITION this provider may not read the result file "
        "(permission denied in its result store)"
    ), completed.stderr
